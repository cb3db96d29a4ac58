"""The areas of a run's instances and their histogram on log-spaced bins, for the report.

The instance pass keeps each id's anchor and class, not its area, so :func:`instance_pixels`
counts the pixels of every id from ``instances.zarr`` itself, one stored chunk at a time:
memory of one chunk plus one integer per instance, never the raster. (Reading the whole array
once costs a pass at report time; the pass could record the counts while it rewrites the ids,
and this reader would then read them.)

Object areas span orders of magnitude (a debris fragment, a nucleus, a gland), so the bins are
log-spaced between the smallest and the largest area (:func:`log_bins`): on linear bins every
small object would fall into the first bar. The bin count follows Sturges' rule, capped so a
bar stays wide enough to read.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from segpipe.pipeline.instances.stage import instances_path, pixel_area
from segpipe.pipeline.io.zarrstore import open_array

if TYPE_CHECKING:
    from segpipe.pipeline.io.base import RasterInfo
    from segpipe.pipeline.workdir import WorkDir

__all__ = ["MAX_BINS", "AreaHistogram", "area_histogram", "area_unit", "instance_pixels",
           "log_bins"]

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


def instance_pixels(path: str, count: int) -> np.ndarray:
    """Pixels of each id ``1 … count`` (index ``i - 1``) of the id array at ``path``.

    Counted one stored chunk at a time; ids above ``count`` are an error (IndexError).
    """
    ids = open_array(path, mode="r")
    total = np.zeros(count + 1, np.int64)
    step_r, step_c = ids.chunks
    height, width = ids.shape
    for r, c in itertools.product(range(0, height, step_r), range(0, width, step_c)):
        values, n = np.unique(np.asarray(ids[r:r + step_r, c:c + step_c]), return_counts=True)
        total[values] += n  # values are distinct: no two updates of one id
    return total[1:]


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
    pixels = instance_pixels(instances_path(workdir), count)
    areas = pixels[pixels > 0] * pixel_area(info)
    areas = areas[areas > 0]  # a zero pixel area (a degenerate grid) has no log scale
    if not len(areas):
        return None
    edges = log_bins(areas)
    counts, _ = np.histogram(areas, bins=edges)
    return AreaHistogram(area_unit(info), tuple(float(e) for e in edges),
                         tuple(int(n) for n in counts))
