"""xarray DataArrays in and out: band names, CRS and transform in; coords, CRS and attrs out.

A DataArray is recognised without importing xarray (so ``segpipe.segment`` on NumPy needs
neither xarray nor rioxarray). Its spatial dims are ``y`` and ``x``; a third dim, whatever it
is called (rioxarray's ``band``), holds the bands, named by a ``common_name`` coordinate along
it (stackstac's), else by its own coordinate when that holds strings, else by a ``long_name``
list (as rioxarray reads a GeoTIFF's band descriptions).

The grid comes from rioxarray's ``.rio`` accessor when the array has a CRS (rioxarray is
imported here when it is installed, so a user need not import it for ``.rio`` to exist), else
from ``crs_wkt``/``transform`` attributes, else from the ``y``/``x`` coordinates themselves
when they are regularly spaced (pixel centres, as xarray users hold them): a transform and no
CRS. A ``units`` attribute on the ``x`` coordinate (``"µm"``) gives the pixel size a unit, as
an OME-Zarr's axes do, so the choice of a bundled model can check the scale.

The labels keep the input's ``y``/``x`` coords (and the coords defined on them, such as
rioxarray's ``spatial_ref``) and its grid attributes, plus the class names and colours; with a
CRS they carry it through rioxarray (``.rio.crs``, ``.rio.transform()``, ``.rio.nodata``), so
``labels.rio.to_raster(path)`` writes a georeferenced GeoTIFF.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from segpipe.arrayplan import ArrayInput, ArrayPlan
from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo

__all__ = ["band_first", "grid_info", "is_dataarray", "labels_like", "spatial_input"]

SPATIAL = ("y", "x")
# Attributes that describe the input's bands or values, not the grid: not carried to labels.
_VALUE_ATTRS = {"long_name", "scale_factor", "add_offset", "_FillValue", "nodata", "units",
                "valid_range", "band_names"}
# Coordinates spaced within this fraction of their step count as regular (float rounding).
_SPACING_TOLERANCE = 1e-6


def is_dataarray(data: Any) -> bool:
    """Whether ``data`` is an xarray DataArray (checked without importing xarray)."""
    return type(data).__name__ == "DataArray" and type(data).__module__.startswith("xarray")


def band_first(data: Any) -> Any:
    """``data`` with dims (band, y, x), a band dim added to a 2-D one."""
    dims = tuple(data.dims)
    if not set(SPATIAL) <= set(dims) or len(dims) not in (2, 3):
        raise InputError(f"a DataArray needs dims ('band', 'y', 'x') or ('y', 'x'); got {dims}")
    if len(dims) == 2:
        data = data.expand_dims("band")
    band = next(d for d in data.dims if d not in SPATIAL)
    return data.transpose(band, *SPATIAL)


def spatial_input(data: Any) -> ArrayInput:
    """What planning needs of a band-first DataArray: shape, dtype, band names, CRS, nodata."""
    bands, height, width = (int(n) for n in data.shape)
    crs, transform, nodata = _georeference(data)
    return ArrayInput(bands, height, width, str(data.dtype), _band_names(data), nodata, crs,
                      transform)


def grid_info(data: Any, described: ArrayInput) -> RasterInfo:
    """The array as the raster metadata a run's choice of a bundled model reads.

    ``described`` (from :func:`spatial_input`) plus the unit of the coordinates, which
    :class:`ArrayInput` does not hold: the pixel size of an array without a CRS is known in
    metres only through it.
    """
    unit = data["x"].attrs.get("units") if "x" in data.coords else None
    return replace(described.info(), pixel_unit=str(unit) if unit else None)


def _band_names(data: Any) -> tuple[str, ...] | None:
    """Band names: stackstac's ``common_name`` coordinate, the band coordinate, ``long_name``.

    ``common_name`` first: a STAC scene's band coordinate holds asset keys (``B04``) and the
    cards name bands by their common names (``red``).
    """
    band = data.dims[0]
    for name in ("common_name", band):
        coord = data.coords.get(name)
        values = coord.values.tolist() if coord is not None and coord.dims == (band,) else None
        if values and all(isinstance(v, str) for v in values):
            return tuple(values)
    names = data.attrs.get("long_name")
    if isinstance(names, list | tuple) and len(names) == data.shape[0]:
        return tuple(str(n) for n in names)
    return None


def _rio(data: Any) -> Any:
    """The ``.rio`` accessor of ``data`` (importing rioxarray registers it), or None."""
    try:
        import rioxarray  # noqa: F401
    except ImportError:
        return None
    return data.rio


def _georeference(data: Any) -> tuple[str | None, tuple[float, ...] | None, float | None]:
    """(CRS as WKT, transform, nodata): rioxarray's, else the attributes', else the coords'."""
    rio = _rio(data)
    attrs = data.attrs
    if rio is not None and rio.crs is not None:
        t = rio.transform()
        return rio.crs.to_wkt(), (t.a, t.b, t.c, t.d, t.e, t.f), _nodata(rio.nodata)
    crs = attrs.get("crs_wkt", attrs.get("crs"))
    transform = attrs.get("transform")
    transform = tuple(transform)[:6] if transform is not None else _coords_transform(data)
    return _wkt(crs), transform, _nodata(attrs.get("nodata", attrs.get("_FillValue")))


def _wkt(crs: Any) -> str | None:
    """A CRS attribute (WKT, ``"EPSG:32621"``, a PROJ string, a rasterio CRS) as WKT."""
    if crs is None or crs == "":
        return None
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return str(CRS.from_user_input(crs).to_wkt())
    except CRSError as exc:
        raise InputError(f"the DataArray's CRS attribute {crs!r} is not a CRS: {exc}") from None


def _nodata(value: Any) -> float | None:
    return float(value) if value is not None else None


def _coords_transform(data: Any) -> tuple[float, ...] | None:
    """The affine transform of regularly spaced ``y``/``x`` pixel-centre coordinates, or None."""
    rows, cols = (_step(data, dim) for dim in SPATIAL)
    if rows is None or cols is None:
        return None
    (y0, dy), (x0, dx) = rows, cols
    return (dx, 0.0, x0 - dx / 2, 0.0, dy, y0 - dy / 2)


def _step(data: Any, dim: str) -> tuple[float, float] | None:
    """(first centre, step) of coordinate ``dim`` when it is numeric and regular, else None."""
    if dim not in data.coords or data.sizes[dim] < 2:
        return None
    values = np.asarray(data[dim].values)
    if not np.issubdtype(values.dtype, np.number):
        return None
    values = values.astype(np.float64)
    diffs = np.diff(values)
    step = float(values[-1] - values[0]) / (len(values) - 1)
    if step == 0 or not np.allclose(diffs, step, rtol=_SPACING_TOLERANCE, atol=0):
        return None
    return float(values[0]), step


def labels_like(data: Any, labels: Any, plan: ArrayPlan) -> Any:
    """``labels`` (NumPy or Dask, H × W) as a DataArray on ``data``'s grid, CRS and attributes."""
    import xarray as xr

    coords = {name: c for name, c in data.coords.items() if set(c.dims) <= set(SPATIAL)}
    attrs = {k: v for k, v in data.attrs.items() if k not in _VALUE_ATTRS}
    out = xr.DataArray(labels, dims=SPATIAL, coords=coords, attrs={**attrs, **plan.attrs()},
                       name="labels")
    rio = _rio(data)
    if rio is not None and rio.crs is not None:
        out = out.rio.write_crs(rio.crs).rio.write_transform(rio.transform())
        out = out.rio.write_nodata(plan.nodata_label)
    return out
