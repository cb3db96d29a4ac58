"""What an input is, as ``segpipe inspect`` reports it: CRS, pixel size with its unit, levels.

Also its georeferencing besides a transform (GCPs with their CRS, RPCs) and the mask GDAL
reports (a per-dataset mask band, an alpha band, a nodata value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.pyramid import info_at_level, level_scale
from segpipe.pipeline.io.units import normalize_unit

__all__ = ["CrsSummary", "GcpSummary", "LevelSummary", "MaskSummary", "PixelSize",
           "RasterSummary", "describe_crs", "describe_raster", "pixel_size_of"]

@dataclass(frozen=True)
class PixelSize:
    """The size of a pixel along x and y, in ``unit`` (None: the unit is not known)."""

    x: float
    y: float
    unit: str | None

    def to_dict(self) -> dict[str, Any]:
        """``{"x", "y", "unit"}``."""
        return {"x": self.x, "y": self.y, "unit": self.unit}


@dataclass(frozen=True)
class CrsSummary:
    """A coordinate reference system: its name, EPSG code (None when it has none) and kind."""

    name: str
    epsg: int | None
    kind: str  # projected | geographic | other

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "epsg", "kind"}``."""
        return {"name": self.name, "epsg": self.epsg, "kind": self.kind}


@dataclass(frozen=True)
class GcpSummary:
    """Ground control points: how many, and the CRS of their coordinates (None: not given)."""

    count: int
    crs: CrsSummary | None

    def to_dict(self) -> dict[str, Any]:
        """``{"count", "crs"}``."""
        return {"count": self.count, "crs": self.crs.to_dict() if self.crs else None}


@dataclass(frozen=True)
class MaskSummary:
    """The mask GDAL reports: ``per_dataset``, ``alpha`` (with its 1-based band) or ``nodata``."""

    kind: str
    band: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"kind", "band"}``."""
        return {"kind": self.kind, "band": self.band}


@dataclass(frozen=True)
class LevelSummary:
    """One pyramid level: its size, how much coarser than level 0, and its pixel size."""

    level: int
    width: int
    height: int
    downsample: float
    pixel_size: PixelSize | None

    def to_dict(self) -> dict[str, Any]:
        """``{"level", "width", "height", "downsample", "pixel_size"}``."""
        return {
            "level": self.level, "width": self.width, "height": self.height,
            "downsample": self.downsample,
            "pixel_size": self.pixel_size.to_dict() if self.pixel_size else None,
        }


@dataclass(frozen=True)
class RasterSummary:
    """What segpipe reads from the input's metadata (level 0)."""

    path: str
    format: str
    reader: str
    driver: str | None
    width: int
    height: int
    dtype: str
    nodata: float | None
    band_names: tuple[str, ...]
    crs: CrsSummary | None
    pixel_size: PixelSize | None
    levels: tuple[LevelSummary, ...]
    gcps: GcpSummary | None = None
    rpcs: bool = False
    mask: MaskSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        """The input part of the ``--json`` object."""
        nan = self.nodata is not None and math.isnan(self.nodata)
        nodata: float | str | None = "nan" if nan else self.nodata
        return {
            "path": self.path, "format": self.format, "reader": self.reader,
            "driver": self.driver, "width": self.width, "height": self.height,
            "dtype": self.dtype, "nodata": nodata,
            "bands": [{"number": i + 1, "name": n} for i, n in enumerate(self.band_names)],
            "crs": self.crs.to_dict() if self.crs else None,
            "pixel_size": self.pixel_size.to_dict() if self.pixel_size else None,
            "levels": [level.to_dict() for level in self.levels],
            "gcps": self.gcps.to_dict() if self.gcps else None,
            "rpcs": self.rpcs,
            "mask": self.mask.to_dict() if self.mask else None,
        }



def describe_crs(wkt: str | None) -> tuple[CrsSummary | None, str | None]:
    """The CRS of ``wkt`` and the unit of its first axis (``m``, ``degree``, ...)."""
    if not wkt:
        return None, None
    from pyproj import CRS

    crs = CRS.from_wkt(wkt)
    kind = "projected" if crs.is_projected else "geographic" if crs.is_geographic else "other"
    unit = normalize_unit(crs.axis_info[0].unit_name) if crs.axis_info else None
    return CrsSummary(crs.name, crs.to_epsg(), kind), unit


def pixel_size_of(info: RasterInfo, crs_unit: str | None) -> PixelSize | None:
    """The pixel size of ``info``'s level: physical (microscopy) or from the transform (geo)."""
    if info.pixel_size is not None:
        return PixelSize(info.pixel_size[1], info.pixel_size[0], info.pixel_unit)
    if info.transform is None:
        return None
    a, b, _, d, e, _ = info.transform
    return PixelSize(math.hypot(a, d), math.hypot(b, e), crs_unit)


def describe_raster(base: RasterInfo, reader: str) -> RasterSummary:
    """The summary of a level-0 :class:`RasterInfo`; levels derived as the readers derive them."""
    crs, unit = describe_crs(base.crs_wkt)
    shapes = base.levels or ((base.height, base.width),)
    levels = tuple(
        LevelSummary(
            i, w, h, level_scale(shapes[0], (h, w))[1],
            pixel_size_of(info_at_level(base, i), unit),
        )
        for i, (h, w) in enumerate(shapes)
    )
    names = base.channel_names or tuple(f"band_{i + 1}" for i in range(base.bands))
    driver = base.extra.get("driver") or base.extra.get("vendor")
    gcps = GcpSummary(len(base.gcps), describe_crs(base.gcp_crs_wkt)[0]) if base.gcps else None
    mask = None
    if base.mask is not None:
        alpha = base.alpha_band + 1 if base.alpha_band is not None else None
        mask = MaskSummary(str(base.mask), alpha if base.mask == "alpha" else None)
    return RasterSummary(
        path=base.path, format=base.format, reader=reader, driver=driver, width=base.width,
        height=base.height, dtype=base.dtype, nodata=base.nodata, band_names=tuple(names),
        crs=crs, pixel_size=pixel_size_of(base, unit), levels=levels, gcps=gcps,
        rpcs=base.rpcs is not None, mask=mask,
    )


# ------------------------------------------------------------------------------ inspect
