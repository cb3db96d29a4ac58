"""Georeferencing besides a geotransform: ground control points (GCPs) and RPCs.

A GDAL raster may be georeferenced by GCPs only (a GeoTIFF with several tie points, a
Sentinel-1 GRD) or carry RPCs (the rational polynomial sensor model of a satellite image). Both
travel in :class:`~segpipe.pipeline.io.base.RasterInfo` as plain values: GCPs as
``(row, col, x, y, z)`` tuples with the CRS of their ``x, y`` as WKT, RPCs as rasterio's
:meth:`RPC.to_dict` (floats and coefficient lists). Here:

- :func:`read_gcps` and :func:`read_rpcs`: from an open rasterio dataset;
- :func:`scale_gcps` and :func:`scale_rpcs`: for a pyramid level ``scale`` times coarser, the way
  GDAL rescales them for an overview (GCP pixel and line coordinates divided by the ratio; RPC
  offsets, which count pixel centres, rescaled about the centre of the first pixel);
- :func:`rasterio_georef`: the creation options that write them back (a GeoTIFF holds GCPs or
  a geotransform, not both: GCPs are written only when there is no transform);
- :func:`exact_gcp_transform`: the affine transform GCPs define exactly, if they do. GDAL's own
  least-squares fit (:func:`rasterio.transform.from_gcps`, ``GDALGCPsToGeoTransform``) is
  accepted when every GCP lies within :data:`GCP_TOLERANCE_PX` of it, the tolerance GDAL
  applies when it is asked for an exact fit; areas are then measured on that grid. GCPs that
  bend (a warped or terrain-following set) give no grid and areas are pixel counts only: a warp
  approximation would give areas whose error nothing bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import rasterio

__all__ = [
    "GCP_TOLERANCE_PX",
    "Gcp",
    "exact_gcp_transform",
    "rasterio_georef",
    "read_gcps",
    "read_rpcs",
    "scale_gcps",
    "scale_rpcs",
]

#: (row, col, x, y, z) of one ground control point.
Gcp = tuple[float, float, float, float, float]

#: How far (in pixels) a GCP may lie from the fitted affine transform for it to count as exact:
#: GDAL's threshold in ``GDALGCPsToGeoTransform`` when approximation is not allowed.
GCP_TOLERANCE_PX = 0.25

_RPC_OFFSETS = ("line_off", "samp_off")
_RPC_SCALES = ("line_scale", "samp_scale")


def read_gcps(ds: rasterio.DatasetReader) -> tuple[tuple[Gcp, ...], str | None]:
    """The dataset's GCPs and the WKT of their CRS (``((), None)`` when it has none)."""
    points, crs = ds.gcps
    if not points:
        return (), None
    gcps = tuple(
        (float(p.row), float(p.col), float(p.x), float(p.y), float(p.z or 0.0)) for p in points
    )
    return gcps, crs.to_wkt() if crs else None


def read_rpcs(ds: rasterio.DatasetReader) -> dict[str, Any] | None:
    """The dataset's RPCs as rasterio's ``RPC.to_dict()``, or None."""
    rpcs = ds.rpcs
    return rpcs.to_dict() if rpcs is not None else None


def scale_gcps(gcps: Sequence[Gcp], scale: float) -> tuple[Gcp, ...]:
    """GCPs of a level ``scale`` times coarser: pixel and line coordinates divided by it."""
    return tuple((row / scale, col / scale, x, y, z) for row, col, x, y, z in gcps)


def scale_rpcs(rpcs: dict[str, Any] | None, scale: float) -> dict[str, Any] | None:
    """RPCs of a level ``scale`` times coarser, as GDAL gives them for an overview.

    RPC line and sample coordinates count pixel centres: offsets become
    ``(off + 0.5) / scale - 0.5``, scales ``scale_ / scale``.
    """
    if rpcs is None:
        return None
    out = dict(rpcs)
    for key in _RPC_OFFSETS:
        out[key] = (rpcs[key] + 0.5) / scale - 0.5
    for key in _RPC_SCALES:
        out[key] = rpcs[key] / scale
    return out


def rasterio_georef(
    crs_wkt: str | None, transform: tuple[float, ...] | None, gcps: Sequence[Gcp],
    gcp_crs_wkt: str | None, rpcs: dict[str, Any] | None,
) -> dict[str, Any]:
    """``rasterio.open(..., "w")`` keywords that write this georeferencing (empty for none)."""
    from affine import Affine
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS
    from rasterio.rpc import RPC

    out: dict[str, Any] = {}
    if transform is not None:
        out["transform"] = Affine(*transform)
        if crs_wkt:
            out["crs"] = CRS.from_wkt(crs_wkt)
    elif gcps:
        out["gcps"] = [
            GroundControlPoint(row, col, x, y, z, id=str(i + 1), info="")
            for i, (row, col, x, y, z) in enumerate(gcps)
        ]
        if gcp_crs_wkt or crs_wkt:
            out["crs"] = CRS.from_wkt(gcp_crs_wkt or crs_wkt or "")
    elif crs_wkt:
        out["crs"] = CRS.from_wkt(crs_wkt)
    if rpcs is not None:
        out["rpcs"] = RPC(**rpcs)
    return out


def exact_gcp_transform(gcps: Sequence[Gcp]) -> tuple[tuple[float, ...] | None, float]:
    """The affine transform the GCPs define exactly, or None; and their largest residual (px).

    GDAL fits the transform (least squares); it is exact when every GCP maps back within
    :data:`GCP_TOLERANCE_PX` pixels of its row and column. Fewer than three GCPs, or GCPs on one
    line, define no transform (residual ``inf``).
    """
    if len(gcps) < 3:
        return None, math.inf
    from rasterio.control import GroundControlPoint
    from rasterio.transform import from_gcps

    try:
        fitted = from_gcps([GroundControlPoint(r, c, x, y, z) for r, c, x, y, z in gcps])
        inverse = ~fitted
    except Exception:  # degenerate (collinear) GCPs: GDAL cannot fit or invert them
        return None, math.inf
    worst = 0.0
    for row, col, x, y, _ in gcps:
        c, r = inverse @ (x, y)
        worst = max(worst, math.hypot(r - row, c - col))
    if not math.isfinite(worst) or worst > GCP_TOLERANCE_PX:
        return None, worst
    return tuple(fitted)[:6], worst
