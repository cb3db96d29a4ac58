"""QuPath detections: one GeoJSON Feature per instance, its outline, class and measurements.

QuPath imports a FeatureCollection whose features carry ``properties.objectType: "detection"``
as detection objects (lighter than annotations: the cells of a slide), their
``classification`` {name, color} as the class and ``measurements`` as the measurement table.
Coordinates are image pixels of the labels the instances were found in (x = column, y = row,
y down, origin at the top-left corner of the top-left pixel); for slides the caller scales them
to level 0 (a pyramid level's ``level_scale``) before writing.

Outlines come from GDAL's polygonizer (:func:`rasterio.features.shapes`, 4-connectivity, as the
instances are 4-connected), holes kept, so a polygon's area is its object's pixel count. A block
polygonizes the objects it owns in its read window (:mod:`segpipe.pipeline.instances.block`),
and :func:`write_detections` streams the features of block after block into the file, which
appears complete under its name or not at all (:func:`segpipe.pipeline.storage.publish`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from shapely.geometry import shape

from segpipe.pipeline import storage

__all__ = ["detection_features", "encode_feature", "object_outlines", "write_detections"]

_GREY = (128, 128, 128)


def object_outlines(ids: np.ndarray, origin: tuple[int, int]) -> dict[int, Any]:
    """The outline of each object ``1 … n`` of ``ids`` (a window at image pixel ``origin``).

    Returns local id → shapely polygon (a multipolygon for an object not 4-connected) in image
    pixel coordinates.
    """
    if ids.max(initial=0) >= 2**31:
        raise ValueError("object_outlines: more than 2**31 objects in one window")
    transform = Affine.translation(origin[1], origin[0])
    parts: dict[int, list[Any]] = {}
    for geometry, value in shapes(ids.astype(np.int32), mask=ids > 0, connectivity=4,
                                  transform=transform):
        parts.setdefault(int(value), []).append(shape(geometry))
    return {i: p[0] if len(p) == 1 else shapely.union_all(p) for i, p in parts.items()}


def detection_features(ids: np.ndarray, origin: tuple[int, int], *, global_ids: np.ndarray,
                       classes: np.ndarray, names: Sequence[str],
                       colors: Sequence[tuple[int, int, int]],
                       measurements: Mapping[str, np.ndarray] | None = None) -> list[dict]:
    """One GeoJSON Feature (a dict) per object of a window, in order of global id.

    ``ids``/``origin``/``global_ids``/``classes`` as for
    :func:`~segpipe.pipeline.instances.measure.measure_objects`; ``names[k]``/``colors[k]``
    name and colour class ``k`` (``class k`` and grey when absent). ``measurements`` (columns
    with an ``id`` column, as ``measure_objects`` returns them) fill ``properties.measurements``;
    non-finite values become null (GeoJSON has no NaN).
    """
    outlines = object_outlines(ids, origin)
    rows: dict[int, dict[str, float | None]] = {}
    if measurements is not None:
        names_ = list(measurements)
        for r, gid in enumerate(np.asarray(measurements["id"]).tolist()):
            rows[int(gid)] = {n: _number(measurements[n][r]) for n in names_}
    features = []
    for local in np.argsort(global_ids, kind="stable").tolist():
        gid, k = int(global_ids[local]), int(classes[local])
        geometry = shapely.orient_polygons(outlines[local + 1], exterior_cw=False)
        name = names[k] if k < len(names) else f"class {k}"
        color = list(colors[k] if k < len(colors) else _GREY)
        features.append({
            "type": "Feature",
            "geometry": json.loads(shapely.to_geojson(geometry)),
            "properties": {
                "objectType": "detection",
                "classification": {"name": name, "color": color},
                "measurements": rows.get(gid, {"id": gid}),
            },
        })
    return features


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def encode_feature(feature: Mapping[str, Any]) -> str:
    """A feature as the JSON text :func:`write_detections` writes for it.

    A caller holding many features until their turn (a block row's, to write them in id order)
    holds this text: a few hundred bytes an object instead of the ~10 KB of the dict, whose
    outline is a list of Python floats.
    """
    return json.dumps(feature, ensure_ascii=False, allow_nan=False)


def write_detections(path: str, blocks: Iterable[Iterable[Mapping[str, Any] | str]]) -> int:
    """Write the features of every block, in order, as one FeatureCollection; how many.

    A feature is a dict or its :func:`encode_feature` text. Memory holds one block's features:
    they are streamed into the file as they come.
    """
    written = 0
    with storage.publish(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write('{"type": "FeatureCollection", "features": [\n')
        for features in blocks:
            written = _write(handle, features, written)
        handle.write("\n]}\n")
    return written


def _write(handle: TextIO, features: Iterable[Mapping[str, Any] | str], written: int) -> int:
    for feature in features:
        text = feature if isinstance(feature, str) else encode_feature(feature)
        handle.write(("" if written == 0 else ",\n") + text)
        written += 1
    return written
