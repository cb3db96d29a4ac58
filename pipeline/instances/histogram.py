"""The areas of a run's instances and their histogram on log-spaced bins, for the report.

The instance pass counts each id's pixels as it writes the canonical ids
(:func:`~segpipe.pipeline.instances.stage.instance_pixels`: one integer per instance), so the
report reads no raster for the areas.

Object areas span orders of magnitude (a debris fragment, a nucleus, a gland), so the bins are
log-spaced between the smallest and the largest area (:func:`log_bins`): on linear bins every
small object would fall into the first bar. The bin count follows Sturges' rule, capped so a
bar stays wide enough to read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from segpipe.pipeline.instances.stage import instance_pixels, pixel_area

if TYPE_CHECKING:
    from segpipe.pipeline.io.base import RasterInfo
    from segpipe.pipeline.workdir import WorkDir

__all__ = ["MAX_BINS", "AreaHistogram", "area_histogram", "area_unit", "log_bins"]

MAX_BINS = 24


@dataclass(frozen=True)
class AreaHistogram:
    """Instances per bin of area: ``counts[i]`` areas in ``[edges[i], edges[i + 1])``.

    The last bin is closed on the right (as :func:`numpy.histogram`), so every area between
    the first and last edge counts once. ``unit``: ``m2``, ``um2`` or ``px``.
    """

    unit: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """``summary["instances"]["histogram"]``."""
        return {"unit": self.unit, "edges": list(self.edges), "counts": list(self.counts)}


def log_bins(areas: np.ndarray, max_bins: int = MAX_BINS) -> np.ndarray:
    """Log-spaced bin edges from the smallest to the largest of ``areas`` (all > 0).

    ``ceil(log2 n) + 1`` bins (Sturges) for ``n`` areas, at most ``max_bins``; one bin from
    ``a / √2`` to ``a · √2`` when every area is ``a``.
    """
    low, high = float(areas.min()), float(areas.max())
    if high <= low:
        return np.array([low / math.sqrt(2), low * math.sqrt(2)])
    bins = min(max_bins, math.ceil(math.log2(len(areas))) + 1)
    edges = np.geomspace(low, high, bins + 1)
    edges[0], edges[-1] = low, high  # exactly: geomspace's ends may round
    return edges


def area_unit(info: RasterInfo) -> str:
    """The unit of :func:`~segpipe.pipeline.instances.stage.pixel_area` for ``info``."""
    from segpipe.pipeline.vectors import AreaKind, frame_of

    kind = frame_of(info).kind
    if kind in (AreaKind.PROJECTED, AreaKind.GEODESIC):
        return "m2"
    return "um2" if kind is AreaKind.MICROSCOPY else "px"


def area_histogram(workdir: WorkDir, info: RasterInfo, count: int) -> AreaHistogram | None:
    """The histogram of the instance areas in the output's area unit; None without instances."""
    if count <= 0:
        return None
    pixels = instance_pixels(workdir)[1:]
    areas = pixels[pixels > 0] * pixel_area(info)
    areas = areas[areas > 0]  # a zero pixel area (a degenerate grid) has no log scale
    if not len(areas):
        return None
    edges = log_bins(areas)
    counts, _ = np.histogram(areas, bins=edges)
    return AreaHistogram(area_unit(info), tuple(float(e) for e in edges),
                         tuple(int(n) for n in counts))
