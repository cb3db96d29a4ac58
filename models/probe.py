"""Probe a model's tiling geometry by running it: margin, stride and the valid input sizes.

A valid-padding network returns ``H − 2·margin`` pixels for an ``H``-pixel input, but only for
some ``H`` (a U-Net of depth d needs every pooling to see an even size: one residue modulo
``2**d``). A same-padding network returns ``H`` pixels, often only for multiples of its stride.
:func:`probe_geometry` finds both by running the model on one square size after another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .foundation import ModelError

__all__ = ["Geometry", "probe_geometry"]

_UNKNOWN_STRIDE_WINDOW = 32


@dataclass(frozen=True)
class Geometry:
    """Where a model's input sizes are valid and how much it crops.

    ``margin``: pixels lost on each side (output = input − 2·margin). ``period``: validity
    repeats with this period; a side ``n`` is valid when ``n % period`` is in
    ``valid_residues``. ``stride``: the alignment step for tile origins (the model's total
    down-sampling when known, else ``period``). ``out_channels``: K, the size of dim 1 of the
    model's N×K×h×w output (1 for a single-logit binary model).
    """

    margin: int
    stride: int
    period: int
    valid_residues: frozenset[int]
    out_channels: int

    def __post_init__(self) -> None:
        """Check that the numbers describe a usable geometry."""
        if self.margin < 0 or self.stride < 1 or self.period < 1 or self.out_channels < 1:
            raise ModelError(
                f"geometry margin={self.margin}, stride={self.stride}, period={self.period}, "
                f"out_channels={self.out_channels} is invalid; need margin >= 0, stride >= 1, "
                "period >= 1, out_channels >= 1"
            )
        residues = frozenset(self.valid_residues)
        if not residues or not all(0 <= r < self.period for r in residues):
            raise ModelError(
                f"geometry valid_residues={sorted(residues)} is invalid; need a non-empty set "
                f"of residues in 0..{self.period - 1}"
            )
        object.__setattr__(self, "valid_residues", residues)

    @property
    def num_classes(self) -> int:
        """Classes the labels can take: K, or 2 for a single-logit model (``logit > 0``)."""
        return max(self.out_channels, 2)

    def is_valid(self, n: int) -> bool:
        """Whether an input side of ``n`` pixels is valid (and leaves at least 1 output pixel)."""
        return n > 2 * self.margin and n % self.period in self.valid_residues

    def fit(self, n: int) -> int:
        """Smallest valid input side that is at least ``n``."""
        size = max(int(n), 2 * self.margin + 1)
        for candidate in range(size, size + self.period):
            if self.is_valid(candidate):
                return candidate
        raise AssertionError("unreachable: every period contains a valid residue")

    def output_size(self, n: int) -> int:
        """Output side for a valid input side ``n``."""
        if not self.is_valid(n):
            raise ModelError(
                f"input size {n} is not valid for this model; use {self.fit(n)} "
                f"(valid sizes are ≡ {sorted(self.valid_residues)} mod {self.period})"
            )
        return n - 2 * self.margin


def _forward_size(
    model: Callable[[Tensor], Tensor], channels: int, n: int
) -> tuple[tuple[int, ...] | None, str]:
    """Run ``model`` on a seeded 1×C×n×n input; return (output shape, "") or (None, error)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((1, channels, n, n), generator=gen, dtype=torch.float32)
    try:
        with torch.inference_mode():
            out = model(x)
    except Exception as exc:  # a failing size is data for the probe
        first = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {first[0] if first else ''}"
    if not isinstance(out, Tensor):
        raise ModelError(
            f"model returned {type(out).__name__} for a 1×{channels}×{n}×{n} input; "
            "it must return one N×K×h×w logits tensor"
        )
    return tuple(out.shape), ""


def probe_geometry(
    model: Callable[[Tensor], Tensor],
    channels: int,
    *,
    stride: int | None = None,
    base: int | None = None,
) -> Geometry:
    """Find a model's margin, valid input sizes and output channels by running it.

    The model runs on seeded random 1×C×n×n float32 inputs for ``s`` consecutive sizes
    ``n = base .. base + s − 1`` (``s`` = ``stride``, or 32 when unknown); when only one size in
    that window is valid, once more one period later to confirm the margin. A size is valid when
    the forward succeeds and ``n − out`` equals the smallest ``n − out`` seen, which must be
    even: the margin is half of it. The period is the smallest divisor ``p`` of ``s`` for which
    validity repeats every ``p`` sizes. ``base`` defaults to ``max(16·s, 256)`` rounded up to
    a multiple of ``s``. ``out_channels`` is the K of the N×K×h×w outputs.

    Raises :class:`ModelError` when no size works, when outputs are not N×K×h×h with the same
    K, when an output is larger than its input, or when the confirmation run disagrees.
    """
    s, base = _check_args(channels, stride, base)
    diffs, out_channels = _scan(model, channels, base, s)
    least = min(diffs.values())
    if least % 2:
        raise ModelError(
            f"model output is {least} pixels smaller than its input, an odd number: the margin "
            "would not be symmetric; use a model that crops equally on every side"
        )
    valid = {n for n in range(base, base + s) if diffs.get(n) == least}
    period = next(
        p
        for p in range(1, s + 1)
        if s % p == 0 and all((n in valid) == (n + p in valid) for n in range(base, base + s - p))
    )
    geometry = Geometry(
        margin=least // 2,
        stride=stride or period,
        period=period,
        valid_residues=frozenset(n % period for n in valid),
        out_channels=out_channels,
    )
    if len(valid) == 1:
        # One valid size in the window: make sure the margin is not just growing with n.
        _confirm(model, channels, min(valid) + period, least, out_channels)
    return geometry


def _check_args(channels: int, stride: int | None, base: int | None) -> tuple[int, int]:
    """Check the probe's arguments; return the window length and its first size."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ModelError(f"probe channels={channels!r} is invalid; use an integer >= 1")
    if stride is not None and (
        isinstance(stride, bool) or not isinstance(stride, int) or stride < 1
    ):
        raise ModelError(f"probe stride={stride!r} is invalid; use an integer >= 1 or None")
    s = stride or _UNKNOWN_STRIDE_WINDOW
    if base is None:
        return s, -(-max(16 * s, 256) // s) * s
    if isinstance(base, bool) or not isinstance(base, int) or base < 1:
        raise ModelError(f"probe base={base!r} is invalid; use an integer >= 1 or None")
    return s, base


def _scan(
    model: Callable[[Tensor], Tensor], channels: int, base: int, s: int
) -> tuple[dict[int, int], int]:
    """Run sizes ``base .. base + s − 1``; return ``n − h`` per working size and the one K."""
    diffs: dict[int, int] = {}
    classes: set[int] = set()
    errors: dict[int, str] = {}
    for n in range(base, base + s):
        shape, error = _forward_size(model, channels, n)
        if shape is None:
            errors[n] = error
            continue
        diffs[n] = _check_shape(shape, channels, n)
        classes.add(shape[1])
    if not diffs:
        first = next(iter(errors.items()))
        raise ModelError(
            f"model failed on every probed input size {base}..{base + s - 1} with {channels} "
            f"channels (e.g. {first[0]}: {first[1]}); check the channels or pass stride/base"
        )
    if len(classes) > 1:
        raise ModelError(
            f"model returned different class counts {sorted(classes)} for different input "
            "sizes; it must return N×K×h×w logits with a fixed K"
        )
    return diffs, classes.pop()


def _check_shape(shape: tuple[int, ...], channels: int, n: int) -> int:
    """Check one output shape for an n×n input; return ``n − h``."""
    if len(shape) != 4 or shape[0] != 1:
        raise ModelError(
            f"model returned shape {list(shape)} for input [1, {channels}, {n}, {n}]; "
            "it must return N×K×h×w logits"
        )
    h, w = shape[2], shape[3]
    if h != w:
        raise ModelError(
            f"model returned a non-square {h}×{w} output for a square {n}×{n} input; "
            "segpipe needs the same margin on every side"
        )
    if h > n:
        raise ModelError(
            f"model output {h}×{w} is larger than its {n}×{n} input; segpipe needs "
            "h = H (same padding) or h = H − 2·margin (valid padding)"
        )
    return n - h


def _confirm(
    model: Callable[[Tensor], Tensor], channels: int, n: int, least: int, out_channels: int
) -> None:
    """Check that the margin and K hold one period past the probed window too."""
    shape, error = _forward_size(model, channels, n)
    if shape is None or _check_shape(shape, channels, n) != least:
        got = error or f"output side {shape[2] if shape else '?'}"
        raise ModelError(
            f"model geometry is inconsistent: input side {n} should give {n - least} pixels but "
            f"gave {got}; the model may down-sample its output or have a stride larger than "
            "the probed window: pass stride= (e.g. 2**depth) to probe_geometry"
        )
    if shape[1] != out_channels:
        raise ModelError(
            f"model returned different class counts {sorted({out_channels, shape[1]})} for "
            "different input sizes; it must return N×K×h×w logits with a fixed K"
        )
