"""Class areas that hold on every grid: planar, geodesic, microscopic, or pixel counts only.

:func:`area_basis` reads a :class:`~segpipe.pipeline.io.base.RasterInfo` once and says how pixel
counts become areas:

- a **projected** CRS: every pixel has the transform's area, ``|a·e − b·d|``, in the CRS's
  linear unit squared, converted to m² with the unit's size in metres (feet, US survey feet, …);
- a **geographic** CRS: a cell between two parallels has the area of that band of the CRS's
  ellipsoid (closed form through the authalic latitude, :func:`zone_area`), which depends only
  on its row; areas are per-row cell areas times per-class pixel counts per row, never degrees²;
- **GCPs** without a transform: as the projected or geographic grid of the affine transform
  they define exactly (GDAL's fit, every GCP within a quarter pixel:
  :func:`~segpipe.pipeline.io.georef.exact_gcp_transform`) in their CRS; GCPs that bend define
  no grid, and RPCs (a sensor model) none either: pixel counts only;
- **microscopy** (a physical pixel size in a length unit): µm², whatever unit the input uses;
- otherwise **pixel counts only**, and the basis's ``note`` says why.

Blocks of a geographic grid return per-class counts per row (:func:`row_counts`), so no pass over
the labels is ever made for areas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.georef import GCP_TOLERANCE_PX, exact_gcp_transform
from segpipe.pipeline.io.units import normalize_unit, unit_in_meters

__all__ = [
    "AreaBasis",
    "AreaKind",
    "GeodesicAreas",
    "area_basis",
    "class_areas",
    "needs_row_counts",
    "row_counts",
    "zone_area",
]

UM_PER_M = 1e6


class AreaKind(StrEnum):
    """How areas are measured."""

    PROJECTED = "projected"
    GEODESIC = "geodesic"
    MICROSCOPY = "microscopy"
    PIXELS = "pixels"


@dataclass(frozen=True)
class AreaBasis:
    """How pixel counts become areas for one grid.

    ``pixel_area`` (in ``unit``) is set for projected and microscopy grids. Geodesic grids
    keep what per-row cell areas need: the row → latitude map (``lat0 + lat_step · row``, in
    radians), the cell width in radians and the ellipsoid (semi-major axis ``a`` in metres,
    flattening ``f``).
    """

    kind: AreaKind
    note: str
    unit: str | None = None
    pixel_size: tuple[float, float] | None = None  # x, y in pixel_unit
    pixel_unit: str | None = None
    pixel_area: float | None = None
    lat0: float = 0.0
    lat_step: float = 0.0
    lon_step: float = 0.0
    ellipsoid: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """``summary["areas"]``."""
        return {
            "kind": str(self.kind), "unit": self.unit, "note": self.note,
            "pixel_size": list(self.pixel_size) if self.pixel_size else None,
            "pixel_unit": self.pixel_unit,
        }

    def row_areas(self, start: int, stop: int) -> np.ndarray:
        """Area in m² of one cell of each row in ``[start, stop)`` (geodesic grids only)."""
        if self.kind is not AreaKind.GEODESIC:
            raise ValueError(f"per-row areas are for geodesic grids, not {self.kind}")
        edges = self.lat0 + self.lat_step * np.arange(start, stop + 1, dtype=np.float64)
        zones = zone_area(np.clip(edges, -math.pi / 2, math.pi / 2), *self.ellipsoid)
        return np.abs(np.diff(zones)) * self.lon_step


def zone_area(lat: np.ndarray, a: float, f: float) -> np.ndarray:
    """Area (m²) between the equator and latitude ``lat`` (radians) per radian of longitude.

    On an ellipsoid of revolution with semi-major axis ``a`` and flattening ``f``:
    ``b²/2 · (sinφ / (1 − e² sin²φ) + atanh(e sinφ) / e)``; ``a² sinφ`` on a sphere.
    """
    s = np.sin(lat)
    e2 = f * (2 - f)
    if e2 <= 0:
        return a * a * s
    e = math.sqrt(e2)
    b2 = (a * (1 - f)) ** 2
    return b2 / 2 * (s / (1 - e2 * s * s) + np.arctanh(e * s) / e)


def needs_row_counts(info: RasterInfo) -> bool:
    """Whether blocks must return per-class counts per row (a geodesic grid)."""
    return area_basis(info).kind is AreaKind.GEODESIC


def area_basis(info: RasterInfo) -> AreaBasis:
    """How the pixel counts of ``info``'s grid become areas (see the module text)."""
    if info.crs_wkt and (info.transform is not None or not info.gcps):
        return _crs_basis(info.crs_wkt, info.transform)
    if info.gcps:
        return _gcp_basis(info)
    if info.rpcs is not None:
        return AreaBasis(
            AreaKind.PIXELS, "pixel counts only: the input is georeferenced by RPCs (a sensor "
            "model, not a grid), so its cells have no known area",
        )
    if info.pixel_size and info.pixel_unit:
        return _microscopy_basis(info.pixel_size, info.pixel_unit)
    return AreaBasis(AreaKind.PIXELS, "pixel counts only: the input states no pixel size")


def _gcp_basis(info: RasterInfo) -> AreaBasis:
    """Areas on the grid that the GCPs define exactly, in their CRS; else pixel counts only."""
    n = len(info.gcps)
    wkt = info.gcp_crs_wkt or info.crs_wkt
    if not wkt:
        return AreaBasis(AreaKind.PIXELS, f"pixel counts only: the input's {n} GCPs have no CRS")
    transform, residual = exact_gcp_transform(info.gcps)
    if transform is None:
        why = "fewer than 3 of them, or all on one line" if not math.isfinite(residual) else (
            f"one lies {residual:.3g} px off the best affine fit; at most {GCP_TOLERANCE_PX} px "
            "counts as exact"
        )
        return AreaBasis(
            AreaKind.PIXELS,
            f"pixel counts only: the input's {n} GCPs define no affine grid ({why}), so its "
            "cells have no known area",
        )
    basis = _crs_basis(wkt, transform)
    if basis.kind is AreaKind.PIXELS:
        return basis
    return replace(basis, note=f"{basis.note}, on the grid of the input's {n} GCPs (an exact "
                               f"affine fit, within {residual:.2g} px)")


def _horizontal(wkt: str) -> Any:
    from pyproj import CRS

    crs = CRS.from_wkt(wkt)
    if crs.is_compound and crs.sub_crs_list:
        crs = crs.sub_crs_list[0]
    return crs


def _crs_name(crs: Any) -> str:
    code = crs.to_epsg()
    return f"{crs.name} (EPSG:{code})" if code else crs.name


def _crs_basis(wkt: str, transform: tuple[float, ...] | None) -> AreaBasis:
    crs = _horizontal(wkt)
    if transform is None:
        return AreaBasis(
            AreaKind.PIXELS, f"pixel counts only: the input has a CRS ({crs.name}) but no "
            "geotransform",
        )
    if crs.is_projected:
        return _projected_basis(crs, transform)
    if crs.is_geographic:
        return _geodesic_basis(crs, transform)
    return AreaBasis(
        AreaKind.PIXELS,
        f"pixel counts only: the CRS {crs.name} is neither projected nor geographic",
    )


def _projected_basis(crs: Any, transform: tuple[float, ...]) -> AreaBasis:
    a, b, _, d, e, _ = transform[:6]
    fx, fy = (axis.unit_conversion_factor for axis in crs.axis_info[:2])
    size = (math.hypot(a, d) * fx, math.hypot(b, e) * fy)
    area = abs(a * e - b * d) * fx * fy
    unit = crs.axis_info[0].unit_name
    return AreaBasis(
        AreaKind.PROJECTED,
        f"planar areas in {_crs_name(crs)}: {_num(area)} m² per pixel"
        + ("" if fx == 1 and fy == 1 else f" (from {unit}s)"),
        unit="m2", pixel_size=size, pixel_unit="m", pixel_area=area,
    )


def _geodesic_basis(crs: Any, transform: tuple[float, ...]) -> AreaBasis:
    a, b, _, d, e, f = transform[:6]
    rad = crs.axis_info[0].unit_conversion_factor  # radians per angular unit
    deg = rad / math.radians(1)
    size = (math.hypot(a, d) * deg, math.hypot(b, e) * deg)
    if d != 0:
        return AreaBasis(
            AreaKind.PIXELS,
            "pixel counts only: the geographic grid is rotated (latitude changes along a row), "
            "so its cells have no per-row area",
            pixel_size=size, pixel_unit="degree",
        )
    geod = crs.get_geod()
    return AreaBasis(
        AreaKind.GEODESIC,
        f"geodesic areas on the {crs.ellipsoid.name} ellipsoid of {_crs_name(crs)}: per-row "
        f"cell areas of {_num(size[0])}° × {_num(size[1])}° cells",
        unit="m2", pixel_size=size, pixel_unit="degree",
        lat0=f * rad, lat_step=e * rad, lon_step=abs(a) * rad, ellipsoid=(geod.a, geod.f),
    )


def _microscopy_basis(pixel_size: tuple[float, float], unit: str) -> AreaBasis:
    meters = unit_in_meters(unit)
    if meters is None:
        return AreaBasis(
            AreaKind.PIXELS,
            f"pixel counts only: the pixel-size unit {normalize_unit(unit)!r} is not a length",
        )
    um = meters * UM_PER_M
    size = (pixel_size[1] * um, pixel_size[0] * um)  # RasterInfo holds (y, x)
    return AreaBasis(
        AreaKind.MICROSCOPY,
        f"areas from the physical pixel size {_num(size[0])} × {_num(size[1])} µm",
        unit="um2", pixel_size=size, pixel_unit="um", pixel_area=size[0] * size[1],
    )


def _num(x: float) -> str:
    return f"{x:.6g}"


# ------------------------------------------------------------------------ from counts to areas


def row_counts(labels: np.ndarray, nodata: int) -> tuple[tuple[int, ...], np.ndarray]:
    """Per-class pixel counts per row of a block's labels: (classes, counts[class, row]).

    Only the classes present are listed (nodata never); counts are uint32.
    """
    h = labels.shape[0]
    span = int(labels.max()) + 1 if labels.size else 0
    if span * h <= 1 << 22:  # one bincount per row into a small table
        table = np.zeros((span, h), np.uint32)
        for r in range(h):
            table[:, r] = np.bincount(labels[r], minlength=span)
        rows = [int(k) for k in np.flatnonzero(table.any(axis=1)) if k != nodata]
        return tuple(rows), table[rows]
    present = [int(k) for k in np.unique(labels) if k != nodata]
    counts = [(labels == k).sum(axis=1) for k in present]
    return tuple(present), np.stack(counts).astype(np.uint32) if counts else np.zeros(
        (0, h), np.uint32
    )


def class_areas(
    basis: AreaBasis,
    counts: Mapping[int, int],
    rows: Iterable[tuple[int, tuple[int, ...], np.ndarray]] = (),
) -> dict[int, float] | None:
    """Area of each class in ``basis.unit``; None for pixel counts only.

    ``counts`` are the pixels per class; ``rows`` are, for a geodesic grid, each block's first
    row with its per-class counts per row (:func:`row_counts`).
    """
    if basis.kind is AreaKind.PIXELS:
        return None
    if basis.kind is not AreaKind.GEODESIC:
        area = basis.pixel_area or 0.0
        return {k: n * area for k, n in counts.items()}
    total = GeodesicAreas(basis)
    for row0, classes, table in rows:
        total.add(row0, classes, table)
    return total.areas


@dataclass
class GeodesicAreas:
    """Class areas of a geodesic grid summed block by block, as the blocks stream past.

    ``add`` takes one block's first row and its per-class counts per row (:func:`row_counts`);
    only the per-class totals are kept, so a report that reads the blocks one at a time holds
    none of their tables.
    """

    basis: AreaBasis
    areas: dict[int, float] = field(default_factory=dict)

    def add(self, row0: int, classes: tuple[int, ...], table: np.ndarray) -> None:
        """Add one block's areas: per-class counts per row times the rows' cell areas."""
        if not classes:
            return
        cell = self.basis.row_areas(row0, row0 + table.shape[1])
        for k, per_class in zip(classes, table @ cell, strict=True):
            self.areas[k] = self.areas.get(k, 0.0) + float(per_class)
