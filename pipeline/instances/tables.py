"""``--measurements`` and ``--detections``: per-instance rows and QuPath features, block by block.

Both read the finished instance array (:mod:`segpipe.pipeline.instances.stage`), the labels
and the work directory's image, one block row at a time. A block measures the objects it owns:
those whose anchor (first pixel over the image, recorded by the instance pass) lies in its
core, seen in the core plus a halo of ``max_diameter`` pixels, so every object is measured once
and whole when it fits in the halo (the watershed's exactness contract; a plain component
larger than that is measured on the part inside its owner's window). Canonical ids are ranked
by anchor, so the ids owned by one block row are a contiguous run: rows are written sorted by id,
one block row at a time, and memory holds one block row's objects (their measurement arrays,
and for the GeoJSON their features as JSON text: a dict with its outline as Python floats is
~10 KB an object, 37 MiB for a 3072-px-wide row of 256-px blocks of dense nuclei).

Measurements (:func:`~segpipe.pipeline.instances.measure.measure_objects`): regionprops'
definitions, ``area`` in the output's area unit, centroids also in map coordinates (the input's
CRS) or in µm (microscopy with a pixel size) or level-0 pixels. Written as CSV, or as Parquet
(``--measurements-format parquet``, :mod:`~segpipe.pipeline.instances.parquet`: one row group a
block row). Detections (:mod:`~segpipe.pipeline.instances.detections`): GeoJSON in level-0
pixel coordinates, as QuPath imports them, or a GeoPackage layer (``--detections-format gpkg``,
:mod:`~segpipe.pipeline.instances.gpkg`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine

from segpipe.pipeline import storage
from segpipe.pipeline.instances.block import BlockWindow
from segpipe.pipeline.instances.detections import (
    detection_features,
    encode_feature,
    write_detections,
)
from segpipe.pipeline.instances.gpkg import write_detections_gpkg
from segpipe.pipeline.instances.measure import Scale, columns, measure_objects
from segpipe.pipeline.instances.parquet import INTEGER_COLUMNS, write_measurements_parquet
from segpipe.pipeline.instances.request import DetectionsFormat, MeasurementsFormat
from segpipe.pipeline.instances.stage import (
    anchors_and_classes,
    instances_path,
    pixel_area,
)
from segpipe.pipeline.io.writers.common import companion_target
from segpipe.pipeline.io.zarrstore import open_array

if TYPE_CHECKING:
    from segpipe.pipeline.io.base import RasterInfo
    from segpipe.pipeline.plan import RunPlan

__all__ = ["detections_target", "measurements_target", "scale_of", "write_instance_tables"]


def measurements_target(output: str, fmt: str = MeasurementsFormat.CSV) -> str:
    """``scene.tif`` → ``scene.measurements.csv`` (or ``.parquet``)."""
    return companion_target(output, "measurements", f".{MeasurementsFormat(fmt)}")


def detections_target(output: str, fmt: str = DetectionsFormat.GEOJSON) -> str:
    """``scene.tif`` → ``scene.detections.geojson`` (or ``.gpkg``)."""
    return companion_target(output, "detections", f".{DetectionsFormat(fmt)}")


def scale_of(info: RasterInfo) -> Scale:
    """Pixel area (output area unit) and the affine to map, µm or level-0 pixel coordinates."""
    from segpipe.pipeline.io.units import unit_in_meters
    from segpipe.pipeline.vectors import frame_of

    area = pixel_area(info)
    if info.crs_wkt and info.transform:
        return Scale(area, Affine(*info.transform[:6]))
    metres = unit_in_meters(info.pixel_unit)
    if info.pixel_size is not None and metres is not None:
        py, px = info.pixel_size
        return Scale(area, Affine.scale(px * metres / 1e-6, py * metres / 1e-6))
    a, b, d, e, xoff, yoff = frame_of(info).matrix
    return Scale(area, Affine(a, b, xoff, d, e, yoff))


def write_instance_tables(plan: RunPlan) -> list[str]:
    """Write the measurements and/or detections the run asks for; their paths."""
    request = plan.options.instances
    written = []
    names = columns(_channels(plan))
    if request.measurements:
        path = measurements_target(plan.options.output, request.measurements_format)
        if request.measurements_format is MeasurementsFormat.PARQUET:
            tables = (t for t, _ in _blocks(plan, features=False))
            write_measurements_parquet(path, tables, names, _metadata(plan.info))
        else:
            _write_csv(path, _blocks(plan, features=False), names)
        written.append(path)
    if request.detections:
        path = detections_target(plan.options.output, request.detections_format)
        if request.detections_format is DetectionsFormat.GPKG:
            features = (f for _, f in _blocks(plan, features=True))
            write_detections_gpkg(path, features, names, _metadata(plan.info))
        else:  # a block row's features held as their text until written
            texts = (f for _, f in _blocks(plan, features=True, encode=encode_feature))
            write_detections(path, texts)
        written.append(path)
    return written


def _metadata(info: RasterInfo) -> dict[str, str]:
    """What the measurements' units and coordinates are (as :func:`scale_of` chose them)."""
    from segpipe.pipeline.io.units import unit_in_meters
    from segpipe.pipeline.vectors import frame_of

    if info.crs_wkt and info.transform:
        xy = {"centroid_xy": "map coordinates (crs_wkt)", "crs_wkt": info.crs_wkt}
    elif info.pixel_size is not None and unit_in_meters(info.pixel_unit) is not None:
        xy = {"centroid_xy": "micrometres from the top-left image corner"}
    else:
        xy = {"centroid_xy": "level-0 pixels"}
    return {"area_unit": frame_of(info).kind.unit, **xy,
            "geometry": "level-0 pixels (x = column, y = row, y down)"}


def _channels(plan: RunPlan) -> int:
    shape = open_array(plan.image_path, mode="r").shape
    return int(shape[0]) if len(shape) == 3 else 1


def _write_csv(path: str, rows: Iterator[tuple[dict[str, np.ndarray], list]],
               names: list[str]) -> None:
    with storage.publish(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(names)
        for table, _ in rows:
            values = [table[n].astype(np.int64) if n in INTEGER_COLUMNS else table[n]
                      for n in names]
            for r in range(len(table["id"])):
                writer.writerow([_cell(v[r]) for v in values])


def _cell(value: Any) -> Any:
    number = value.item() if hasattr(value, "item") else value
    if isinstance(number, float) and not math.isfinite(number):
        return ""
    return number


def _blocks(plan: RunPlan, *, features: bool, encode: Callable[[dict], Any] = lambda f: f,
            ) -> Iterator[tuple[dict[str, np.ndarray], list]]:
    """Per block row: its objects' measurements (sorted by id) and, if asked, features.

    ``encode`` turns each feature (in level-0 coordinates) into what the row holds until it is
    written (:func:`~segpipe.pipeline.instances.detections.encode_feature`: its JSON text).
    """
    anchors, classes = anchors_and_classes(plan.workdir)
    names = [c.name for c in plan.card.classes]
    colors = [c.color for c in plan.card.classes]
    ids = open_array(instances_path(plan.workdir), mode="r")
    image = open_array(plan.image_path, mode="r")
    scale = scale_of(plan.info)
    halo = plan.options.instances.max_diameter
    shape = (plan.tiles.height, plan.tiles.width)
    to_level0 = _level0(plan.info)
    for _, row in groupby(plan.tiles.block_indices(), key=lambda index: index[0]):
        tables: list[dict[str, np.ndarray]] = []
        found: list[tuple[float, Any]] = []  # (id, encoded feature)
        for index in row:
            window = BlockWindow.around(plan.tiles.block_core(*index), halo, shape)
            local, gids = _owned(np.asarray(ids[window.read.slices]), window, anchors,
                                 plan.tiles.width)
            intensity = _intensity(image, window.read.slices)
            origin = (window.read.row, window.read.col)
            if not len(gids):
                continue
            table = measure_objects(local, origin, global_ids=gids, classes=classes[gids],
                                    intensity=intensity, scale=scale)
            tables.append(table)
            if features:
                found += [(f["properties"]["measurements"]["id"], encode(to_level0(f)))
                          for f in detection_features(local, origin, global_ids=gids,
                                                      classes=classes[gids], names=names,
                                                      colors=colors, measurements=table)]
        if not tables:
            continue
        merged = {n: np.concatenate([t[n] for t in tables]) for n in tables[0]}
        order = np.argsort(merged["id"], kind="stable")
        found.sort(key=lambda pair: pair[0])
        yield {n: v[order] for n, v in merged.items()}, [f for _, f in found]


def _intensity(image: Any, read: tuple[slice, slice]) -> np.ndarray:
    """The input over a window, (h, w, C) (or (h, w) for a one-band array)."""
    if image.ndim == 2:
        return np.asarray(image[read])
    return np.moveaxis(np.asarray(image[(slice(None), *read)]), 0, -1)


def _owned(window_ids: np.ndarray, window: BlockWindow, anchors: np.ndarray,
           width: int) -> tuple[np.ndarray, np.ndarray]:
    """Objects anchored in the block's core: the window as local ids 1 … n, and their ids.

    Canonical ids ascending; local id ``i`` is canonical id ``ids[i - 1]``.
    """
    values = np.unique(window_ids)
    values = values[values > 0]
    rows, cols = np.divmod(anchors[values], width)
    core = window.core
    own = values[(rows >= core.row) & (rows < core.row_stop)
                 & (cols >= core.col) & (cols < core.col_stop)]
    local = np.zeros(window_ids.shape, np.uint32)
    if len(own):
        at = np.searchsorted(own, window_ids)
        hit = (at < len(own)) & (own[np.minimum(at, len(own) - 1)] == window_ids)
        local[hit] = at[hit].astype(np.uint32) + 1
    return local, own.astype(np.int64)


def _level0(info: RasterInfo) -> Any:
    """A function scaling a feature's geometry from the label array's pixels to level 0."""
    from segpipe.pipeline.vectors import frame_of

    a, b, d, e, xoff, yoff = frame_of(info).matrix
    if (info.crs_wkt and info.transform) or (a, b, d, e, xoff, yoff) == (1, 0, 0, 1, 0, 0):
        return lambda feature: feature  # georeferenced, or already level 0: pixels as they are
    import json

    def scale(feature: dict) -> dict:
        geometry = shapely.from_geojson(json.dumps(feature["geometry"]))
        scaled = shapely.transform(geometry, lambda xy: xy * (a, e))
        return {**feature, "geometry": json.loads(shapely.to_geojson(scaled))}

    return scale
