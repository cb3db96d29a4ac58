"""Probe a model's tiling geometry by running it: margin, stride and the valid input sizes.

A valid-padding network returns ``H − 2·margin`` pixels for an ``H``-pixel input, but only for
some ``H`` (a U-Net of depth d needs every pooling to see an even size: one residue modulo
``2**d``). A same-padding network returns ``H`` pixels, often only for multiples of its stride.
:func:`probe_geometry` finds both by running the model on one square size after another.

Some networks crop differently depending on the input size: a valid network with
``MaxPool2d(2, ceil_mode=True)`` loses 9 pixels on odd sizes and 10 on even ones. Only sizes
where ``input − output`` is even can crop the same on every side, and among several even
differences only sizes whose output does not depend on padding added at the bottom/right
(ceil-mode pooling pads there) are kept. A model whose input size is fixed (an ONNX graph
exported with static shapes) is run at that size only (``fixed_size``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

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
    model's N×K×h×w output (1 for a single-logit binary model). ``fixed_size``: the one input
    side a fixed-size model takes (then no other side is valid), else None.
    """

    margin: int
    stride: int
    period: int
    valid_residues: frozenset[int]
    out_channels: int
    fixed_size: int | None = None

    def __post_init__(self) -> None:
        """Check that the numbers describe a usable geometry."""
        if self.margin < 0 or self.stride < 1 or self.period < 1 or self.out_channels < 1:
            raise ModelError(
                f"geometry margin={self.margin}, stride={self.stride}, period={self.period}, "
                f"out_channels={self.out_channels} is invalid; need margin >= 0, stride >= 1, "
                "period >= 1, out_channels >= 1"
            )
        residues = frozenset(self.valid_residues)
        if self.fixed_size is not None and self.fixed_size <= 2 * self.margin:
            raise ModelError(
                f"geometry fixed_size={self.fixed_size} is invalid; it must exceed 2·margin "
                f"({2 * self.margin})"
            )
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
        if self.fixed_size is not None:
            return n == self.fixed_size
        return n > 2 * self.margin and n % self.period in self.valid_residues

    def fit(self, n: int) -> int:
        """Smallest valid input side that is at least ``n``."""
        if self.fixed_size is not None:
            if n > self.fixed_size:
                raise ModelError(
                    f"input size {n} does not fit: the model takes only "
                    f"{self.fixed_size}×{self.fixed_size} inputs"
                )
            return self.fixed_size
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
    except ModelError:  # the model's contract (output rank, channels): no size can fix it
        raise
    except Exception as exc:  # a failing size is data for the probe
        first = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {first[0] if first else ''}"
    if not isinstance(out, Tensor):
        raise ModelError(
            f"model returned {type(out).__name__} for a 1×{channels}×{n}×{n} input; "
            "it must return one N×K×h×w logits tensor"
        )
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        raise ModelError(
            f"model returned NaN or infinite logits for a finite 1×{channels}×{n}×{n} input "
            "(uniform random values in [0, 1)); labels are never made from non-finite logits: "
            "check the model's weights and its export"
        )
    return tuple(out.shape), ""


def probe_geometry(
    model: Callable[[Tensor], Tensor],
    channels: int,
    *,
    stride: int | None = None,
    base: int | None = None,
    fixed_size: int | None = None,
) -> Geometry:
    """Find a model's margin, valid input sizes and output channels by running it.

    The model runs on seeded random 1×C×n×n float32 inputs for ``s`` consecutive sizes
    ``n = base .. base + s − 1`` (``s`` = ``stride``, or 32 when unknown). Sizes are grouped by
    ``n − out``; only even differences can crop the same on every side. With one even
    difference its sizes are valid; with several, the smallest whose outputs do not depend on
    padding at the bottom/right (see :func:`_pads_bottom_right`). The margin is half the
    difference. The period is the smallest divisor ``p`` of ``s`` for which validity repeats
    every ``p`` sizes. When only one size in the window is valid, the model runs once more one
    period later to confirm the margin. ``base`` defaults to ``max(16·s, 256)`` rounded up to a
    multiple of ``s``. ``out_channels`` is the K of the N×K×h×w outputs. ``fixed_size``: the
    model takes only that side; it is run once, at that size.

    Raises :class:`ModelError` when no size works, when no size crops symmetrically (saying
    why), when outputs are not N×K×h×h with the same K, when an output is larger than its
    input, or when the confirmation run disagrees.
    """
    if fixed_size is not None:
        return _probe_fixed(model, channels, fixed_size, stride)
    s, base = _check_args(channels, stride, base)
    diffs, out_channels = _scan(model, channels, base, s)
    diff = _symmetric_difference(model, channels, diffs, s)
    valid = {n for n in range(base, base + s) if diffs.get(n) == diff}
    period = next(
        p
        for p in range(1, s + 1)
        if s % p == 0 and all((n in valid) == (n + p in valid) for n in range(base, base + s - p))
    )
    geometry = Geometry(
        margin=diff // 2,
        stride=stride or period,
        period=period,
        valid_residues=frozenset(n % period for n in valid),
        out_channels=out_channels,
    )
    if len(valid) == 1:
        # One valid size in the window: make sure the margin is not just growing with n.
        _confirm(model, channels, min(valid) + period, diff, out_channels)
    return geometry


def _symmetric_difference(
    model: Callable[[Tensor], Tensor], channels: int, diffs: dict[int, int], s: int
) -> int:
    """The ``n − out`` of the sizes that crop the same on every side; refuse when none does."""
    even = sorted({d for d in diffs.values() if d % 2 == 0})
    if not even:
        odd = sorted(set(diffs.values()))
        raise ModelError(
            f"model output is {', '.join(map(str, odd))} pixels smaller than its input on every "
            "probed size, an odd number: the margin would not be symmetric; use a model that "
            "crops equally on every side"
        )
    if len(even) == 1 or even[0] == 0:
        return even[0]
    for diff in even:
        first = min(n for n, d in diffs.items() if d == diff)
        if not _pads_bottom_right(model, channels, first, first + s, diff):
            return diff
    sizes = {d: min(n for n, v in diffs.items() if v == d) for d in even}
    shown = ", ".join(f"{n} px → {n - d}" for d, n in sizes.items())
    raise ModelError(
        f"no probed input size crops the model's output symmetrically: the even differences "
        f"({shown}) all depend on padding at the bottom/right (e.g. ceil-mode pooling) and the "
        "others are odd; use a model whose valid sizes crop equally on every side"
    )


def _pads_bottom_right(
    model: Callable[[Tensor], Tensor], channels: int, n: int, larger: int, diff: int
) -> bool:
    """Whether the output for side ``n`` differs from the top-left of the output for ``larger``.

    Both sides lose ``diff`` pixels. A symmetric crop computes each output pixel from the same
    input pixels at either side, so the smaller output equals the top-left of the larger one;
    padding added at the bottom/right of the smaller input (ceil-mode pooling) changes it.
    """
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((1, channels, larger, larger), generator=gen, dtype=torch.float32)
    shape, error = _forward_size(model, channels, larger)
    if shape is None or _check_shape(shape, channels, larger) != diff:
        _inconsistent(larger, diff, error or f"output side {shape[2] if shape else '?'}")
    with torch.inference_mode():
        big = model(x)
        small = model(x[:, :, :n, :n].contiguous())
    part = big[:, :, : n - diff, : n - diff]
    tolerance = 1e-4 * (1.0 + float(part.abs().max()))
    return not torch.allclose(small, part, rtol=1e-4, atol=tolerance)


def _probe_fixed(
    model: Callable[[Tensor], Tensor], channels: int, size: int, stride: int | None
) -> Geometry:
    """The geometry of a model that takes only ``size`` × ``size`` inputs."""
    _check_args(channels, stride, None)
    shape, error = _forward_size(model, channels, size)
    if shape is None:
        raise ModelError(
            f"model takes only {size}×{size} inputs but failed on one with {channels} channels "
            f"({error}); check the channels (--bands)"
        )
    diff = _check_shape(shape, channels, size)
    if diff % 2:
        raise ModelError(
            f"model output is {diff} pixels smaller than its {size}×{size} input, an odd "
            "number: the margin would not be symmetric; use a model that crops equally on "
            "every side"
        )
    return Geometry(
        margin=diff // 2, stride=stride or 1, period=1, valid_residues=frozenset({0}),
        out_channels=shape[1], fixed_size=size,
    )


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
        _inconsistent(n, least, error or f"output side {shape[2] if shape else '?'}")
    if shape[1] != out_channels:
        raise ModelError(
            f"model returned different class counts {sorted({out_channels, shape[1]})} for "
            "different input sizes; it must return N×K×h×w logits with a fixed K"
        )


def _inconsistent(n: int, diff: int, got: str) -> NoReturn:
    raise ModelError(
        f"model geometry is inconsistent: input side {n} should give {n - diff} pixels but "
        f"gave {got}; the model may down-sample its output or have a stride larger than "
        "the probed window: pass stride= (e.g. 2**depth) to probe_geometry"
    )
