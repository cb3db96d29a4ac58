"""``--detections-format gpkg``: the detections as one GeoPackage layer, the measurements columns.

The same features as the GeoJSON (:mod:`segpipe.pipeline.instances.detections`): one geometry
per instance (a MultiPolygon, so that an object in two pieces fits the layer's one type), in
level-0 pixel coordinates (x = column, y = row, y down; no CRS, as QuPath's), holes kept, so
its area is its object's pixel count. GIS tools and SQL read a flat table better than
GeoJSON's nested ``properties``, so the attributes are columns: ``objectType``
(``detection``), ``classification`` (the class name), ``color`` (``#rrggbb``) and every
measurement column (:func:`~segpipe.pipeline.instances.measure.columns`; null where not
finite). The layer's metadata says the coordinates and the area unit.

Written through GDAL/OGR (pyogrio, a dependency), one append per block row, so memory holds one
block row's features; the file appears complete under its name or not at all
(:func:`segpipe.pipeline.storage.publish`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import shapely

from segpipe.pipeline import storage
from segpipe.pipeline.instances.parquet import INTEGER_COLUMNS
from segpipe.pipeline.io.gpkglayer import append_layer

__all__ = ["LAYER", "write_detections_gpkg"]

#: The layer's name.
LAYER = "detections"

_LABELS = ["objectType", "classification", "color"]


def write_detections_gpkg(path: str, blocks: Iterable[Sequence[dict]], names: Sequence[str],
                          metadata: Mapping[str, str]) -> int:
    """Write the GeoJSON-like features of every block row into one layer; how many.

    ``names``: the measurement columns, in order (each feature's ``properties.measurements``
    has them). ``metadata``: the layer's metadata (coordinates, area unit).
    """
    written = 0
    with storage.publish(path) as tmp:
        for features in blocks:
            if features:
                _append(tmp, features, names, metadata, first=written == 0)
                written += len(features)
        if written == 0:
            _append(tmp, [], names, metadata, first=True)  # the layer, empty
    return written


def _append(path: Path, features: Sequence[dict], names: Sequence[str],
            metadata: Mapping[str, str], *, first: bool) -> None:
    geometry = [shapely.from_geojson(json.dumps(f["geometry"])) for f in features]
    properties = [f["properties"] for f in features]
    labels = [
        np.array(["detection"] * len(properties), dtype=object),
        np.array([p["classification"]["name"] for p in properties], dtype=object),
        np.array(["#{:02x}{:02x}{:02x}".format(*p["classification"]["color"])
                  for p in properties], dtype=object),
    ]
    values = [_column([p["measurements"].get(n) for p in properties], n) for n in names]
    append_layer(path, np.array(geometry, dtype=object), [*_LABELS, *names], [*labels, *values],
                 layer=LAYER, geometry_type="MultiPolygon", first=first, metadata=metadata)


def _column(values: list[float | None], name: str) -> np.ndarray:
    """A measurement column: int64 for whole numbers, float64 (NaN for null) otherwise."""
    if name in INTEGER_COLUMNS:
        return np.array([int(v) if v is not None else 0 for v in values], np.int64)
    return np.array([np.nan if v is None else float(v) for v in values], np.float64)
