"""``--vectors``: the class polygons of a run, seamless, as a GeoPackage or a GeoJSON file.

The polygons come from the label array strip by strip (:mod:`segpipe.pipeline.polygons`:
4-connectivity, holes kept, merged across every tile and block border) and are streamed to the
file in batches as they are finished, so memory holds one strip's polygons, the pieces of the
regions still touching its open border and one batch (the worst case, one region spanning the
whole image, is held to the last strip). The file is written beside its final name and moved
into place when complete.

Coordinates (:func:`frame_of`):

* georeferenced inputs (a CRS and a transform): the input's CRS, same WKT, through the
  transform of the level the run read; a ``.geojson`` is RFC 7946 (WGS 84 longitude/latitude);
* anything else (microscopy): pixel coordinates of level 0 (x = column, y = row, y down, origin
  at the top-left corner), scaled up when the run read a coarser pyramid level. A ``.geojson``
  is then what QuPath imports: annotations with ``classification`` {name, color}.

Attributes: ``class_id``, ``class_name`` and ``area`` in the layer's area unit (also in the
GeoPackage's layer metadata ``area_unit``): m² for a projected CRS (from its linear unit), m² on
the ellipsoid for a geographic CRS (:meth:`pyproj.Geod.geometry_area_perimeter`, edges as
geodesics: for 1° cells within 1e-4 of the cell area between parallels), µm² for microscopy
with a physical pixel size, else level-0 pixels. ``--vectors-min-area`` is in the same unit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import pyproj
import shapely

from segpipe.pipeline import storage
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.gpkglayer import append_layer
from segpipe.pipeline.io.pyramid import level_scale, open_stored
from segpipe.pipeline.io.units import unit_in_meters
from segpipe.pipeline.polygons import MergeStats, SeamlessPolygons

if TYPE_CHECKING:
    from segpipe.pipeline.io.writers import ExportJob

__all__ = ["LAYER", "AreaKind", "Frame", "frame_of", "write_vectors"]

log = logging.getLogger("segpipe")

#: The GeoPackage layer the polygons go in.
LAYER = "polygons"
#: A GeoPackage append holds at most about this many features or vertices.
BATCH_FEATURES = 65536
BATCH_VERTICES = 4_000_000
FIELDS = ["class_id", "class_name", "area"]


class AreaKind(StrEnum):
    """What the ``area`` attribute measures."""

    PROJECTED = "projected"  # m², from the projected CRS's linear unit
    GEODESIC = "geodesic"  # m² on the geographic CRS's ellipsoid
    MICROSCOPY = "microscopy"  # µm², from the physical pixel size
    PIXELS = "pixels"  # level-0 pixels

    @property
    def unit(self) -> str:
        """The unit of ``area``: ``m2``, ``um2`` or ``pixels``."""
        return {"projected": "m2", "geodesic": "m2", "microscopy": "um2"}.get(self, "pixels")


@dataclass(frozen=True)
class Frame:
    """How polygons in pixels of the label array become output geometry and areas.

    ``matrix``: shapely's affine ``[a, b, d, e, xoff, yoff]`` from label pixels to output
    coordinates; ``pixel_area``: ``area`` units per label pixel (not used for geodesic areas).
    """

    matrix: tuple[float, float, float, float, float, float]
    crs_wkt: str | None
    kind: AreaKind
    pixel_area: float = 1.0
    geod: pyproj.Geod | None = field(default=None, compare=False)

    def place(self, polygons: np.ndarray) -> np.ndarray:
        """``polygons`` (label pixels) in output coordinates."""
        a, b, d, e, xoff, yoff = self.matrix
        linear = np.array([[a, d], [b, e]])
        placed: np.ndarray = shapely.transform(polygons, lambda xy: xy @ linear + (xoff, yoff))
        return placed

    def areas(self, polygons: np.ndarray, placed: np.ndarray) -> np.ndarray:
        """Areas of ``polygons`` (label pixels; ``placed``: the same in output coordinates)."""
        if self.geod is not None:
            geod = self.geod
            ccw = shapely.orient_polygons(placed, exterior_cw=False)
            return np.abs([geod.geometry_area_perimeter(p)[0] for p in ccw], dtype=np.float64)
        return np.asarray(shapely.area(polygons), np.float64) * self.pixel_area


def _scale_to_level0(info: RasterInfo) -> tuple[float, float]:
    """(y, x) factors from the label array's pixels to level-0 pixels."""
    if info.level == 0 or not info.levels:
        return 1.0, 1.0
    return level_scale(info.levels[0], (info.height, info.width))


def frame_of(info: RasterInfo) -> Frame:
    """The output coordinates and area unit for labels of the level ``info`` describes."""
    sy, sx = _scale_to_level0(info)
    if info.crs_wkt and info.transform:
        a, b, c, d, e, f = info.transform
        matrix = (a, b, d, e, c, f)
        crs = pyproj.CRS.from_wkt(info.crs_wkt)
        if crs.is_projected:
            metres = crs.axis_info[0].unit_conversion_factor
            return Frame(matrix, info.crs_wkt, AreaKind.PROJECTED, abs(a * e - b * d) * metres**2)
        if crs.is_geographic:
            return Frame(matrix, info.crs_wkt, AreaKind.GEODESIC, geod=crs.get_geod())
        return Frame(matrix, info.crs_wkt, AreaKind.PIXELS, sx * sy)
    matrix = (sx, 0.0, 0.0, sy, 0.0, 0.0)
    metres = unit_in_meters(info.pixel_unit)
    if info.pixel_size is not None and metres is not None:
        py, px = info.pixel_size
        return Frame(matrix, None, AreaKind.MICROSCOPY, py * px * (metres / 1e-6) ** 2)
    return Frame(matrix, None, AreaKind.PIXELS, sx * sy)


# ------------------------------------------------------------------------------- the files


class _GeoPackage:
    """Features appended to one GeoPackage layer in batches (GDAL/OGR through pyogrio)."""

    def __init__(self, path: Path, frame: Frame, metadata: dict[str, str]) -> None:
        self.path, self.frame, self.metadata = path, frame, metadata
        self.batches: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.features = self.vertices = 0
        self.started = False

    def add(self, placed: np.ndarray, labels: np.ndarray, names: np.ndarray,
            areas: np.ndarray) -> None:
        self.batches.append((placed, labels, names, areas))
        self.features += len(placed)
        self.vertices += int(shapely.get_num_coordinates(placed).sum())
        if self.features >= BATCH_FEATURES or self.vertices >= BATCH_VERTICES:
            self.flush()

    def flush(self) -> None:
        geoms, labels, names, areas = (
            np.concatenate([b[i] for b in self.batches]) if self.batches else np.empty(0)
            for i in range(4)
        )
        append_layer(
            self.path, geoms, FIELDS,
            [labels.astype(np.int32), names.astype(object), areas.astype(np.float64)],
            layer=LAYER, geometry_type="Polygon", first=not self.started,
            metadata=self.metadata, crs_wkt=self.frame.crs_wkt,
        )
        self.started, self.batches, self.features, self.vertices = True, [], 0, 0

    def close(self) -> None:
        if self.batches or not self.started:
            self.flush()


class _GeoJson:
    """A FeatureCollection written feature by feature: QuPath annotations or RFC 7946."""

    def __init__(self, handle: TextIO, frame: Frame, colors: Sequence[tuple[int, int, int]]):
        self.handle, self.colors, self.first = handle, colors, True
        self.to_wgs84 = None
        if frame.crs_wkt:
            self.to_wgs84 = pyproj.Transformer.from_crs(
                pyproj.CRS.from_wkt(frame.crs_wkt), pyproj.CRS.from_epsg(4326), always_xy=True
            )
        handle.write('{"type": "FeatureCollection", "features": [\n')

    def _lonlat(self, xy: np.ndarray) -> np.ndarray:
        assert self.to_wgs84 is not None
        return np.column_stack(self.to_wgs84.transform(xy[:, 0], xy[:, 1]))

    def add(self, placed: np.ndarray, labels: np.ndarray, names: np.ndarray,
            areas: np.ndarray) -> None:
        geometry = placed if self.to_wgs84 is None else shapely.transform(placed, self._lonlat)
        texts = shapely.to_geojson(shapely.orient_polygons(geometry, exterior_cw=False))
        for text, label, name, area in zip(texts, labels.tolist(), names, areas.tolist(),
                                           strict=True):
            color = list(self.colors[label]) if label < len(self.colors) else [128, 128, 128]
            properties = {
                "objectType": "annotation", "classification": {"name": name, "color": color},
                "class_id": label, "class_name": name, "area": area,
            }
            self.handle.write(
                ("" if self.first else ",\n") + '{"type": "Feature", "geometry": ' + text
                + ', "properties": ' + json.dumps(properties, ensure_ascii=False) + "}"
            )
            self.first = False

    def close(self) -> None:
        self.handle.write("\n]}\n")


# ---------------------------------------------------------------------------------- writing


def write_vectors(job: ExportJob) -> str:
    """Write the polygons of ``job``'s labels to ``job.options.vectors``; returns the path."""
    path = job.options.vectors
    if not path:
        raise ValueError("write_vectors needs job.options.vectors")
    frame = frame_of(job.info)
    labels = open_stored(job.labels_path, job.info, "labels", 2)
    polygons = SeamlessPolygons(labels, job.nodata)
    with storage.publish(path) as tmp:  # renamed into place, or uploaded when complete
        if tmp.suffix.lower() == ".geojson":
            with open(tmp, "w", encoding="utf-8") as handle:
                kept = _stream(polygons, _GeoJson(handle, frame, job.colors), frame, job)
        else:
            kept = _stream(polygons, _GeoPackage(tmp, frame, _metadata(frame, job)), frame, job)
    _log(path, kept, polygons.stats, frame)
    return str(path)


def _stream(polygons: SeamlessPolygons, sink: Any, frame: Frame, job: ExportJob) -> int:
    """Every finished polygon at least the minimum area into ``sink``; how many were kept."""
    minimum = job.options.vectors_min_area
    names = _class_names(job.class_names, polygons.array)
    kept = 0
    for labels, found in polygons.strips():
        placed = frame.place(found)
        areas = frame.areas(found, placed)
        keep = areas >= minimum
        if keep.any():
            sink.add(placed[keep], labels[keep], names[labels[keep]], areas[keep])
            kept += int(keep.sum())
    sink.close()
    return kept


def _class_names(names: Sequence[str], labels: Any) -> np.ndarray:
    """Name of every label value the array's type holds (``class_<i>`` past the card's)."""
    count = int(np.iinfo(labels.dtype).max) + 1
    return np.array([*names, *(f"class_{i}" for i in range(len(names), count))], dtype=object)


def _metadata(frame: Frame, job: ExportJob) -> dict[str, str]:
    coordinates = "CRS" if frame.crs_wkt else "level-0 pixels (x = column, y = row, y down)"
    return {
        "area_unit": frame.kind.unit, "area_kind": str(frame.kind), "coordinates": coordinates,
        "connectivity": "4", "min_area": str(job.options.vectors_min_area),
        "class_names": json.dumps(list(job.class_names)), **dict(job.tags),
    }


def _log(path: str, kept: int, stats: MergeStats, frame: Frame) -> None:
    dropped = stats.polygons - kept
    log.info(
        "%s: %d polygons (%s), %d below the minimum area left out; at most %d open at once",
        path, kept, frame.kind.unit, dropped, stats.max_open,
    )
