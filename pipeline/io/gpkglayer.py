"""Appending a batch of features to one GeoPackage layer (GDAL/OGR through pyogrio).

The one way segpipe writes GeoPackages in pieces: ``--vectors`` (class polygons) and
``--detections-format gpkg`` (instances). The first batch creates the layer with its metadata;
later ones append, so memory holds one batch. Pixel coordinates have no CRS, on purpose: the
warning pyogrio gives for that is silenced.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import shapely

__all__ = ["append_layer"]


def append_layer(
    path: str | os.PathLike[str], geometries: np.ndarray, fields: Sequence[str],
    columns: Sequence[np.ndarray], *, layer: str, geometry_type: str, first: bool,
    metadata: Mapping[str, str] | None = None, crs_wkt: str | None = None,
) -> None:
    """Write ``geometries`` (shapely, object array) with one column per field to ``layer``.

    ``first``: create the layer (with ``metadata``), else append to it. Polygons go into a
    ``MultiPolygon`` layer as one-part multipolygons.
    """
    import pyogrio.raw

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        pyogrio.raw.write(
            path, geometry=shapely.to_wkb(np.asarray(geometries, dtype=object)),
            field_data=list(columns), fields=list(fields), layer=layer, driver="GPKG",
            geometry_type=geometry_type, promote_to_multi=geometry_type.startswith("Multi"),
            crs=crs_wkt, append=not first, layer_metadata=dict(metadata or {}) if first else None,
        )
