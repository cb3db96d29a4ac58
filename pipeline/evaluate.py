"""``segpipe evaluate PRED REF``: a label map against a reference, window by window.

Both rasters must share the grid (same size, and the same transform when both have one). They
are read in windows of :data:`WINDOW` pixels (bounded memory); a pixel counts when neither is
nodata (each raster's declared nodata). Results: the confusion matrix (rows: reference,
columns: map), per-class IoU and overall accuracy, and for maps in a projected CRS the
area-adjusted accuracy and class areas with 95 % confidence intervals of Olofsson et al. (2014)
(:mod:`segpipe.pipeline.olofsson`). The strata are the map classes, weighted by their share of
all valid map pixels (reference nodata included); the reference pixels are the "sample". When
the reference covers the whole map this is a census: the estimated areas equal the reference's
own class areas, and the intervals treat the pixels as a stratified random sample (pixels are
spatially correlated, so they are narrower than those of a true probability sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.models.foundation import InputError
from segpipe.pipeline.confusion import accuracy, confusion_matrix, iou
from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.normalize import invalid_values
from segpipe.pipeline.olofsson import Z95, AreaEstimate, olofsson
from segpipe.pipeline.tiling import Window

__all__ = ["WINDOW", "Evaluation", "evaluate"]

WINDOW = 1024


@dataclass(frozen=True)
class Evaluation:
    """Counts and scores of one comparison."""

    confusion: np.ndarray  # rows: reference, columns: map
    map_counts: np.ndarray  # valid map pixels per class (reference nodata included)
    names: tuple[str, ...]
    area: AreaEstimate | None
    area_unit: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able results (NaN as null)."""
        out: dict[str, Any] = {
            "classes": list(self.names), "confusion": self.confusion.tolist(),
            "pixels": int(self.confusion.sum()), "iou": _list(iou(self.confusion)),
            "overall_accuracy": _num(accuracy(self.confusion)),
        }
        a = self.area
        if a is not None:
            out["area_adjusted"] = {
                "unit": self.area_unit, "overall_accuracy": _num(a.overall),
                "overall_accuracy_ci95": _num(Z95 * a.overall_se),
                "users_accuracy": _list(a.users), "users_accuracy_ci95": _list(Z95 * a.users_se),
                "producers_accuracy": _list(a.producers),
                "producers_accuracy_ci95": _list(Z95 * a.producers_se),
                "map_area": _list(a.map_area), "area": _list(a.area),
                "area_ci95": _list(Z95 * a.area_se),
            }
        return out

    def table(self) -> str:
        """A readable report."""
        width = max(8, *(len(n) for n in self.names))
        lines = [f"pixels compared: {int(self.confusion.sum())}",
                 f"overall accuracy: {_fmt(accuracy(self.confusion))}", "",
                 "confusion matrix (rows: reference, columns: map)",
                 " " * width + "".join(f"{n:>{width + 2}}" for n in self.names)]
        lines += [f"{n:>{width}}" + "".join(f"{v:>{width + 2}}" for v in row)
                  for n, row in zip(self.names, self.confusion.tolist())]
        lines += ["", f"{'class':>{width}}  {'IoU':>6}"]
        lines += [f"{n:>{width}}  {_fmt(v):>6}" for n, v in zip(self.names, iou(self.confusion))]
        if self.area is not None:
            lines += ["", *_area_lines(self.area, self.names, width, self.area_unit)]
        return "\n".join(lines)


def _area_lines(a: AreaEstimate, names: tuple[str, ...], width: int, unit: str | None) -> list:
    head = (f"{'class':>{width}}  {'map area':>14}  {'estimated area ± 95% CI':>28}  "
            f"{'user ± CI':>15}  {'producer ± CI':>15}")
    lines = [f"area-adjusted (Olofsson et al. 2014), areas in {unit}", head]
    for i, n in enumerate(names):
        lines.append(
            f"{n:>{width}}  {a.map_area[i]:>14.1f}  "
            f"{_fmt(a.area[i], 1) + ' ± ' + _fmt(Z95 * a.area_se[i], 1):>28}  "
            f"{_fmt(a.users[i]) + ' ± ' + _fmt(Z95 * a.users_se[i]):>15}  "
            f"{_fmt(a.producers[i]) + ' ± ' + _fmt(Z95 * a.producers_se[i]):>15}")
    lines.append(f"overall accuracy: {_fmt(a.overall)} ± {_fmt(Z95 * a.overall_se)}")
    return lines


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _list(values: np.ndarray) -> list[float | None]:
    return [_num(float(v)) for v in values]


def _check_grid(pred: RasterInfo, ref: RasterInfo) -> None:
    if (pred.height, pred.width) != (ref.height, ref.width):
        raise InputError(f"PRED {pred.path} is {pred.height}×{pred.width} but REF {ref.path} is "
                         f"{ref.height}×{ref.width}: give rasters on the same grid")
    if pred.transform and ref.transform and not np.allclose(pred.transform, ref.transform):
        raise InputError(f"PRED {pred.path} and REF {ref.path} have different transforms: "
                         "resample the reference onto the map's grid first")
    for info, name in ((pred, "PRED"), (ref, "REF")):
        if np.issubdtype(np.dtype(info.dtype), np.floating) or info.bands != 1:
            raise InputError(f"{name} {info.path} must be one band of integer class labels "
                             f"(it has {info.bands} band(s) of {info.dtype})")


def _grow(m: np.ndarray, k: int) -> np.ndarray:
    if m.shape[0] >= k:
        return m
    pad = k - m.shape[0]
    return np.pad(m, ((0, pad),) * m.ndim)


def _windows(height: int, width: int):
    for r in range(0, height, WINDOW):
        for c in range(0, width, WINDOW):
            yield Window(r, c, min(WINDOW, height - r), min(WINDOW, width - c))


def _count(pred_reader, ref_reader) -> tuple[np.ndarray, np.ndarray]:
    cm = np.zeros((0, 0), np.int64)
    counts = np.zeros(0, np.int64)
    pi, ri = pred_reader.info, ref_reader.info
    for w in _windows(pi.height, pi.width):
        p, r = pred_reader.read(w)[0], ref_reader.read(w)[0]
        bad_p = invalid_values(p[None], pi.nodata)
        bad_r = invalid_values(r[None], ri.nodata)
        valid_p = np.ones(p.shape, bool) if bad_p is None else ~bad_p[0]
        valid_r = np.ones(r.shape, bool) if bad_r is None else ~bad_r[0]
        p, r = p.astype(np.int64), r.astype(np.int64)
        if (p[valid_p] < 0).any() or (r[valid_r] < 0).any():
            raise InputError("class labels must be 0 or more; declare negative values as nodata")
        both = valid_p & valid_r
        k = int(max(p[valid_p].max(initial=-1), r[valid_r].max(initial=-1))) + 1
        cm, counts = _grow(cm, k), _grow(counts, k)
        size = cm.shape[0]
        cm += confusion_matrix(r[both], p[both], size)
        counts += np.bincount(p[valid_p].astype(np.int64).ravel(), minlength=size)
    return cm, counts


def _names(path: str, k: int) -> tuple[str, ...]:
    import rasterio

    try:
        with rasterio.open(path) as ds:
            tags = ds.tags(1)
    except rasterio.errors.RasterioIOError:
        tags = {}
    return tuple(tags.get(f"CLASS_{i}") or f"class_{i}" for i in range(k))


def _pixel_area(info: RasterInfo) -> tuple[float, str] | None:
    if info.transform is None or info.crs_wkt is None:
        return None
    from rasterio.crs import CRS

    crs = CRS.from_wkt(info.crs_wkt)
    if not crs.is_projected:
        return None
    a, b, _, d, e, _ = info.transform
    return abs(a * e - b * d), f"{crs.linear_units}²"


def evaluate(pred: str, ref: str) -> Evaluation:
    """Compare the label map ``pred`` with the reference ``ref``; see the module."""
    with open_raster(pred) as pred_reader, open_raster(ref) as ref_reader:
        _check_grid(pred_reader.info, ref_reader.info)
        cm, counts = _count(pred_reader, ref_reader)
        area = _pixel_area(pred_reader.info)
    if not cm.sum():
        raise InputError(f"PRED {pred} and REF {ref} have no pixel that is valid in both")
    names = _names(pred, cm.shape[0])
    if area is None:
        return Evaluation(cm, counts, names, None, None)
    estimate = olofsson(cm.T, counts, area[0])
    return Evaluation(cm, counts, names, estimate, area[1])
