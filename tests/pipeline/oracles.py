"""Whole-image oracles that use no segpipe code: an eager network, numpy padding, argmax.

The caller gives the network's margin and a valid input side it measured with a direct forward
pass; the oracle pads the whole image with numpy's ``symmetric`` mode (the margin on the
top/left, enough on the bottom/right for a size the network accepts), runs the network once and
crops back to the image.

It also holds the suite's one exactness contract (README, "Exactness"): float32 logits computed
by different kernels (another batch size, layout, tiling, instruction set, thread count or
library version) agree within ``LOGIT_ULPS`` float32 ulp of the largest logit magnitude compared
(:func:`assert_logits_close`), and labels agree except where the top two logits are within
that tolerance of a tie (:func:`assert_labels_match`). Bit-for-bit equality is asserted only
where both sides are computed by the same code on the same inputs.
"""

from __future__ import annotations

import numpy as np
import torch


def forward_side(net, channels: int, n: int) -> int | None:
    """The output side of ``net`` for an n×n input of zeros, None when it fails."""
    try:
        with torch.inference_mode():
            return int(net(torch.zeros(1, channels, n, n)).shape[-1])
    except RuntimeError:
        return None


def valid_side(net, channels: int, n: int, margin: int, period: int) -> int:
    """The smallest side >= n that ``net`` takes and crops by ``margin`` on every side.

    ``period`` bounds the search: one of every ``period`` consecutive sides is valid.
    """
    for k in range(n, n + period):
        if forward_side(net, channels, k) == k - 2 * margin:
            return k
    raise AssertionError(f"no side in {n}..{n + period - 1} crops {margin} px per side")


def whole_image_logits(
    net, image: np.ndarray, margin: int, period: int, *, halo: int | None = None
) -> np.ndarray:
    """Logits K×H×W of one forward pass over the whole mirror-extended float32 ``image``.

    ``halo`` (default: the margin) is the padding on the top/left; the network's margin is
    cropped, so the logits start at the image's first pixel.
    """
    halo = margin if halo is None else halo
    c, h, w = image.shape
    bottom = valid_side(net, c, h + 2 * halo, margin, period) - h - halo
    right = valid_side(net, c, w + 2 * halo, margin, period) - w - halo
    ext = np.pad(image, ((0, 0), (halo, bottom), (halo, right)), mode="symmetric")
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(ext[None], np.float32)))[0]
    top = halo - margin
    return logits[:, top : top + h, top : top + w].numpy()


def whole_image_labels(
    net, image: np.ndarray, margin: int, period: int, *, halo: int | None = None
) -> np.ndarray:
    """Labels (argmax) of :func:`whole_image_logits`."""
    return labels_of(whole_image_logits(net, image, margin, period, halo=halo))


# ------------------------------------------------------------------ the exactness contract

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23: one float32 ulp at 1.0
# Measured (tests' U-Nets, AMD EPYC): 9 ulp of the largest logit between a batch of 8 and 8
# batches of 1 (channels-last); 4 between layouts; 19 (depth 3) to 34 (depth 4) between the AVX2
# and the SSE4.1 / default kernels. The error grows with depth; 64 bounds every net of the suite.
LOGIT_ULPS = 64
# Probabilities are stored as float16 in the work directory (then float32 in a TIFF): compare
# them within float16 ulps, i.e. this many float32 ulps each.
FLOAT16_ULPS = float(np.finfo(np.float16).eps) / EPS32  # 8192
# On CUDA, cuDNN may run float32 convolutions in TF32 (a 10-bit mantissa, like float16): two
# TF32 ulp of the largest logit (not measured here: no GPU on the CI machine).
TF32_ULPS = 2 * FLOAT16_ULPS
# A tie-aware label comparison must still compare: at most this share of pixels may be ties.
# Measured: 0 to 2.3 % on the suite's nets (2.3 %: a region where every ReLU is zero, so the
# logits are the biases, 0.013 apart, within 64 ulp of a largest logit of 2300).
MAX_TIE_FRACTION = 0.05


def _array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def logit_tolerance(logits, ulps: float = LOGIT_ULPS) -> float:
    """The contract's absolute tolerance for ``logits``: ``ulps`` ulp of their largest magnitude.

    Relative to the largest magnitude, not to each value: a conv layer's rounding error scales
    with the size of the terms it sums, and a logit near 0 is often a cancellation of large ones.
    """
    values = _array(logits)
    return ulps * EPS32 * float(np.abs(values).max(initial=0.0))


def assert_logits_close(
    actual, expected, *, ulps: float = LOGIT_ULPS, scale: float | None = None
) -> None:
    """Float32 logits (NumPy or torch) equal within ``ulps`` ulp of max|expected|.

    For logits of the same model computed by different kernels (batch size, layout, tiling,
    instruction set). Shapes must match; non-finite values must be identical. ``scale``: the
    magnitude the tolerance is relative to, when ``expected`` is a slice of a larger output
    (default: max|expected|).
    """
    a, e = _array(actual).astype(np.float64), _array(expected).astype(np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    finite = np.isfinite(e)
    np.testing.assert_array_equal(a[~finite], e[~finite])
    if scale is None:
        scale = float(np.abs(e[finite]).max(initial=0.0))
    tol = logit_tolerance(np.array([scale]), ulps)
    diff = np.abs(a[finite] - e[finite])
    worst = float(diff.max(initial=0.0))
    assert worst <= tol, (
        f"logits differ by up to {worst:.3g} (> {tol:.3g} = {ulps} ulp of the magnitude "
        f"{scale:.4g}); {int((diff > tol).sum())} of {diff.size} values"
    )


def labels_of(logits) -> np.ndarray:
    """The labels the pipeline derives from K×H×W logits: argmax, or logit > 0 when K = 1."""
    values = _array(logits)
    if values.shape[0] == 1:
        return (values[0] > 0).astype(np.int64)
    return values.argmax(0)


def tie_pixels(logits, *, ulps: float = LOGIT_ULPS) -> np.ndarray:
    """Pixels whose label another kernel may flip: the top two logits within the tolerance.

    Each of two logits may move by the tolerance, so a label can flip only where their margin
    is at most twice it (for K = 1, where the logit is within it of 0).
    """
    values = _array(logits).astype(np.float64)
    tol = logit_tolerance(values, ulps)
    if values.shape[0] == 1:
        return np.abs(values[0]) <= tol
    top2 = np.sort(values, axis=0)[-2:]
    return (top2[1] - top2[0]) <= 2 * tol


def assert_labels_match(
    actual,
    logits,
    *,
    where: np.ndarray | None = None,
    ulps: float = LOGIT_ULPS,
    max_tie_fraction: float = MAX_TIE_FRACTION,
) -> None:
    """Labels equal the oracle ``logits``' labels (K×H×W) except at ties, which are bounded.

    ``where`` (a boolean H×W mask) limits the comparison, e.g. to pixels that are not nodata.
    Every mismatch must be a tie pixel (:func:`tie_pixels`), and ties may be at most
    ``max_tie_fraction`` of the compared pixels, so the comparison cannot pass vacuously.
    """
    got = _array(actual)
    expected = labels_of(logits)
    assert got.shape == expected.shape, f"labels {got.shape} != logits' {expected.shape}"
    mask = np.ones(got.shape, bool) if where is None else np.asarray(where, bool)
    ties = tie_pixels(logits, ulps=ulps) & mask
    compared = int(mask.sum())
    assert ties.sum() <= max_tie_fraction * compared, (
        f"{int(ties.sum())} of {compared} pixels are ties within {ulps} ulp: too many to compare"
    )
    wrong = (got != expected) & mask & ~ties
    assert not wrong.any(), (
        f"{int(wrong.sum())} of {compared} labels differ from the oracle away from ties "
        f"(first at {tuple(int(i) for i in np.argwhere(wrong)[0])}; "
        f"{int(ties.sum())} tie pixels allowed)"
    )
