"""xarray DataArrays in and out: band names, CRS and transform in; coords, CRS and attrs out.

A DataArray is recognised without importing xarray (so ``segpipe.segment`` on NumPy needs
neither xarray nor rioxarray). Its spatial dims are ``y`` and ``x``; a third dim, whatever it
is called (rioxarray's ``band``), holds the bands. The CRS and transform come from rioxarray's
``.rio`` accessor when rioxarray is imported, else from ``crs_wkt``/``transform`` attributes.
The labels keep the input's ``y``/``x`` coords (and the coords defined on them, such as
rioxarray's ``spatial_ref``) and attributes, plus the class names and colours.
"""

from __future__ import annotations

from typing import Any

from segpipe.arrayplan import ArrayInput, ArrayPlan

__all__ = ["is_dataarray", "labels_like", "spatial_input"]

SPATIAL = ("y", "x")
# Attributes that describe the input's bands or values, not the grid: not carried to labels.
_VALUE_ATTRS = {"long_name", "scale_factor", "add_offset", "_FillValue", "nodata", "units",
                "valid_range", "band_names"}


def is_dataarray(data: Any) -> bool:
    """Whether ``data`` is an xarray DataArray (checked without importing xarray)."""
    return type(data).__name__ == "DataArray" and type(data).__module__.startswith("xarray")


def band_first(data: Any) -> Any:
    """``data`` with dims (band, y, x), a band dim added to a 2-D one."""
    from segpipe.models.foundation import InputError

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


def _band_names(data: Any) -> tuple[str, ...] | None:
    values = data[data.dims[0]].values.tolist() if data.dims[0] in data.coords else None
    if values and all(isinstance(v, str) for v in values):
        return tuple(values)
    names = data.attrs.get("long_name")
    if isinstance(names, list | tuple) and len(names) == data.shape[0]:
        return tuple(str(n) for n in names)
    return None


def _georeference(data: Any) -> tuple[str | None, tuple[float, ...] | None, float | None]:
    rio = getattr(data, "rio", None)
    if rio is not None and rio.crs is not None:
        t = rio.transform()
        return rio.crs.to_wkt(), (t.a, t.b, t.c, t.d, t.e, t.f), rio.nodata
    attrs = data.attrs
    crs = attrs.get("crs_wkt")
    transform = attrs.get("transform")
    nodata = attrs.get("nodata", attrs.get("_FillValue"))
    return (str(crs) if crs else None, tuple(transform)[:6] if transform is not None else None,
            float(nodata) if nodata is not None else None)


def labels_like(data: Any, labels: Any, plan: ArrayPlan) -> Any:
    """``labels`` (NumPy or Dask, H × W) as a DataArray on ``data``'s grid, CRS and attributes."""
    import xarray as xr

    coords = {name: c for name, c in data.coords.items() if set(c.dims) <= set(SPATIAL)}
    attrs = {k: v for k, v in data.attrs.items() if k not in _VALUE_ATTRS}
    out = xr.DataArray(labels, dims=SPATIAL, coords=coords, attrs={**attrs, **plan.attrs()},
                       name="labels")
    rio = getattr(data, "rio", None)
    if rio is not None and rio.crs is not None:
        out = out.rio.write_crs(rio.crs).rio.write_transform(rio.transform())
        out = out.rio.write_nodata(plan.nodata_label)
    return out
