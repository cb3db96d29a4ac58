"""Normalization: one per-band affine map for the whole image, never per tile.

Every method reduces to ``(x - offset) * scale`` per band (``percentile`` also clips to [0, 1]).
The statistics are computed once per image from a fixed sample of windows (independent of the
tile size, so the same image always gets the same numbers), nodata and non-finite values
excluded, and stored in the run manifest. Per-tile statistics make seams and are never computed.

Nodata: a band value equal to the declared nodata, or not finite (NaN, +inf, -inf), and every
band of a pixel that the input's mask band marks invalid (``valid`` False: GDAL's per-dataset
mask or alpha band), is fed to the model as 0.0 *after* normalization (the band mean under
``meanstd``) and left out of the statistics; a pixel whose selected bands are all nodata is
written as the nodata label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from segpipe.models.card import Normalization, NormMethod
from segpipe.models.foundation import InputError
from segpipe.pipeline.tiling import Window

# Images up to this many pixels are read whole (in strips) for statistics; larger ones sampled.
FULL_STATS_PIXELS = 4096 * 4096
SAMPLE_WINDOW = 256
SAMPLE_GRID = 16


@dataclass(frozen=True)
class Normalizer:
    """The per-band affine map ``(x - offset) * scale`` (clipped to [0, 1] when ``clip``)."""

    method: NormMethod
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    clip: bool = False

    def apply(
        self, x: np.ndarray, nodata: float | None, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalize (bands, h, w) pixels; return float32 values and the all-nodata pixel mask.

        ``valid``: (h, w), False where the input's mask band says there is no image.
        """
        if x.shape[0] != len(self.offset):
            raise InputError(f"normalizer has {len(self.offset)} bands, pixels have {x.shape[0]}")
        invalid = invalid_values(x, nodata, valid)
        out = x.astype(np.float32, copy=True)
        offset = np.asarray(self.offset, np.float32)[:, None, None]
        scale = np.asarray(self.scale, np.float32)[:, None, None]
        out -= offset
        out *= scale
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        if invalid is None:
            return out, np.zeros(x.shape[1:], bool)
        out[invalid] = 0.0
        return out, np.asarray(invalid.all(axis=0))

    def to_dict(self) -> dict:
        """JSON-able form, for the manifest."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        """Inverse of :meth:`to_dict`."""
        return cls(NormMethod(d["method"]), tuple(d["offset"]), tuple(d["scale"]), d["clip"])


def invalid_values(
    x: np.ndarray, nodata: float | None, valid: np.ndarray | None = None
) -> np.ndarray | None:
    """Boolean (bands, h, w) of nodata or non-finite (NaN, ±inf) values; None if none can be.

    ``valid`` (h, w): pixels where it is False are invalid in every band (a mask band).
    """
    floating = np.issubdtype(x.dtype, np.floating)
    if nodata is None and not floating and valid is None:
        return None
    invalid = ~np.isfinite(x) if floating else np.zeros(x.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        invalid |= x == np.asarray(nodata).astype(x.dtype)
    if valid is not None:
        invalid |= ~np.asarray(valid, bool)[None]
    return invalid


def sample_windows(height: int, width: int) -> Iterator[Window]:
    """The windows statistics are computed from: all pixels of small images, else a fixed grid."""
    if height * width <= FULL_STATS_PIXELS:
        step = max(1, FULL_STATS_PIXELS // (16 * width))
        for r in range(0, height, step):
            yield Window(r, 0, min(step, height - r), width)
        return
    size_r, size_c = min(SAMPLE_WINDOW, height), min(SAMPLE_WINDOW, width)
    rows = np.linspace(0, height - size_r, SAMPLE_GRID).round().astype(int)
    cols = np.linspace(0, width - size_c, SAMPLE_GRID).round().astype(int)
    for r in dict.fromkeys(rows.tolist()):
        for c in dict.fromkeys(cols.tolist()):
            yield Window(r, c, size_r, size_c)


def compute_normalizer(
    norm: Normalization,
    *,
    dtype: str,
    bands: int,
    nodata: float | None,
    read: Callable[[Window], np.ndarray] | None = None,
    shape: tuple[int, int] | None = None,
    valid: Callable[[Window], np.ndarray | None] | None = None,
) -> Normalizer:
    """The normalizer for ``norm`` on an image; ``read`` and ``shape`` are needed for statistics.

    ``valid(window)``: where the input's mask band says the window is image (None: no mask).
    """
    method = NormMethod(norm.method)
    if method is NormMethod.SENSOR:
        raise InputError("normalization 'sensor' needs the input's sensor family first "
                         "(segpipe.pipeline.sensor.resolve_normalization)")
    if method is NormMethod.NONE:
        return Normalizer(method, (0.0,) * bands, (1.0,) * bands)
    if method is NormMethod.SCALE:
        kind = np.dtype(dtype)
        if np.issubdtype(kind, np.integer):
            lo, hi = float(np.iinfo(kind).min), float(np.iinfo(kind).max)
            return Normalizer(method, (lo,) * bands, (1.0 / (hi - lo),) * bands)
        return Normalizer(method, (0.0,) * bands, (1.0,) * bands)
    if method is NormMethod.MEANSTD and norm.mean is not None and norm.std is not None:
        _check_len("mean", norm.mean, bands)
        _check_len("std", norm.std, bands)
        return Normalizer(method, tuple(norm.mean), tuple(1.0 / _nonzero(s) for s in norm.std))
    if read is None or shape is None:
        raise InputError(f"normalization {method} needs image statistics")
    samples = _collect(read, shape, nodata, valid)
    if method is NormMethod.MEANSTD:
        mean = tuple(float(s.mean()) if s.size else 0.0 for s in samples)
        std = tuple(_nonzero(float(s.std())) if s.size else 1.0 for s in samples)
        return Normalizer(method, mean, tuple(1.0 / s for s in std))
    lows, scales = [], []
    for s in samples:
        lo, hi = (np.percentile(s, [norm.low, norm.high]) if s.size else (0.0, 1.0))
        lows.append(float(lo))
        scales.append(1.0 / _nonzero(float(hi) - float(lo)))
    return Normalizer(method, tuple(lows), tuple(scales), clip=True)


def _collect(
    read: Callable[[Window], np.ndarray], shape: tuple[int, int], nodata: float | None,
    valid: Callable[[Window], np.ndarray | None] | None,
) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = []
    for window in sample_windows(*shape):
        x = read(window)
        invalid = invalid_values(x, nodata, valid(window) if valid is not None else None)
        if not parts:
            parts = [[] for _ in range(x.shape[0])]
        for b in range(x.shape[0]):
            values = x[b] if invalid is None else x[b][~invalid[b]]
            parts[b].append(values.astype(np.float64).ravel())
    return [np.concatenate(p) for p in parts]


def _nonzero(v: float) -> float:
    return v if v > 0 else 1.0


def _check_len(name: str, values: Sequence[float], bands: int) -> None:
    if len(values) != bands:
        raise InputError(
            f"model card normalization {name} has {len(values)} values for {bands} bands"
        )
