"""``segpipe.open``, ``segpipe.write`` and ``segpipe.run``: files in and out from Python.

:func:`open` reads any input a run reads (GeoTIFF/COG, OME-TIFF, OME-Zarr, slides) through the
run's own readers (:func:`~segpipe.pipeline.io.base.open_raster`), lazily: a Dask array whose
chunks each open the file and read one window, wrapped as a DataArray with the file's grid;
:func:`open_levels` gives every pyramid level so, as a dict by level.
:func:`write` writes labels with the run's own writers (:func:`~segpipe.pipeline.io.writers.
write_outputs`: COG, OME-TIFF, OME-Zarr by the extension) from a Zarr array that the labels are
stored into chunk by chunk; with ``compute=False`` it returns the delayed work, as
ome-zarr-py's writers do. :func:`run` is ``segpipe run`` on one input.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.readeroptions import ReaderOptions
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.summary import RunResult

__all__ = ["lazy_raster", "open", "open_levels", "run", "write"]

CHUNK = 1024  # spatial chunk side of an opened raster (all bands in every chunk)


@dataclass(frozen=True)
class _Source:
    """A raster level as an array-like for ``dask.array.from_array``: each read opens it."""

    path: str
    level: int
    shape: tuple[int, int, int]
    dtype: np.dtype
    options: ReaderOptions

    @property
    def ndim(self) -> int:
        return 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        from segpipe.pipeline.io.base import open_raster
        from segpipe.pipeline.tiling import Window

        bands, rows, cols = (k.indices(n) for k, n in zip(key, self.shape))
        window = Window(rows[0], cols[0], rows[1] - rows[0], cols[1] - cols[0])
        with open_raster(self.path, level=self.level, options=self.options) as reader:
            return reader.read(window)[slice(*bands)]


def raster_info(path: str, level: int = 0, options: ReaderOptions | None = None) -> RasterInfo:
    """The metadata of ``path`` at ``level`` (no pixel read)."""
    from segpipe.pipeline.io.base import open_raster

    with open_raster(path, level=level, options=options) as reader:
        return reader.info


def lazy_raster(path: str, level: int = 0, options: ReaderOptions | None = None) -> Any:
    """Level ``level`` of ``path`` as a Dask array (bands, H, W); building it reads no pixel."""
    import dask.array as da
    from dask.base import tokenize

    options = options or ReaderOptions()
    info = raster_info(path, level, options)
    source = _Source(str(path), level, (info.bands, info.height, info.width),
                     np.dtype(info.dtype), options)
    name = "segpipe-open-" + tokenize(str(Path(path).absolute()), level, _mtime(path), options)
    return da.from_array(source, chunks=(info.bands, CHUNK, CHUNK), name=name, asarray=False,
                         meta=np.empty((0, 0, 0), info.dtype), lock=False)


def _mtime(path: str) -> int:
    p = Path(path)
    return p.stat().st_mtime_ns if p.exists() else 0


def open(path: str, level: int = 0, *, bands: tuple[str, ...] | None = None,
         resampling: str = "nearest") -> Any:
    """Level ``level`` of ``path`` as a lazy DataArray (band, y, x) with its grid and CRS.

    ``y``/``x`` are pixel centres: in CRS units from the transform (then ``.rio.crs`` and
    ``.rio.transform()`` are the file's, through rioxarray when it is installed; without it
    the ``crs_wkt`` and ``transform`` attributes hold them), or from a microscopy file's pixel
    size with its unit as the coordinates' ``units``. ``band`` holds the band names.
    A STAC item (as ``segpipe run --bands --resampling``): ``bands`` the common names to stack
    (on the finest grid among them; default every band), ``resampling`` ``nearest`` or
    ``bilinear`` for the coarser ones; other inputs ignore both.
    """
    xr = _xarray()
    options = ReaderOptions.of(bands, resampling)
    info = raster_info(path, level, options)
    data = lazy_raster(path, level, options)
    names = info.channel_names or tuple(range(1, info.bands + 1))
    coords: dict[str, Any] = {"band": list(names), **_spatial_coords(info)}
    attrs: dict[str, Any] = {}
    if info.transform is not None:
        attrs["transform"] = tuple(info.transform[:6])
    if info.crs_wkt:
        attrs["crs_wkt"] = info.crs_wkt
    if info.nodata is not None:
        attrs["nodata"] = info.nodata
    out = xr.DataArray(data, dims=("band", "y", "x"), coords=coords, attrs=attrs)
    if info.crs_wkt and _has_rioxarray():
        from affine import Affine

        out = out.rio.write_crs(info.crs_wkt)
        if info.transform is not None:
            out = out.rio.write_transform(Affine(*info.transform[:6]))
    return out


def open_levels(path: str) -> dict[int, Any]:
    """Every pyramid level of ``path`` as :func:`open` gives it, by level (0 the full size).

    A dict rather than an attribute of the level-0 array: each level is a DataArray of its
    own grid (its transform scaled), and attributes must stay plain values for writers.
    """
    levels = raster_info(path).levels or ((0, 0),)
    return {level: open(path, level) for level in range(len(levels))}


def _xarray() -> Any:
    try:
        import xarray as xr
    except ImportError:
        raise InputError("segpipe.open returns an xarray DataArray: install xarray and "
                         "rioxarray (pip install segpipe[xarray])") from None
    return xr


def _has_rioxarray() -> bool:
    try:
        import rioxarray  # noqa: F401
    except ImportError:
        return False
    return True


def _spatial_coords(info: RasterInfo) -> dict[str, Any]:
    """Pixel-centre ``y``/``x`` coordinates from the transform, else from the pixel size."""
    rows, cols = np.arange(info.height) + 0.5, np.arange(info.width) + 0.5
    if info.transform is not None:
        a, b, c, d, e, f = info.transform[:6]
        if b == 0 and d == 0:  # a rotated grid has no 1-D coords; its transform says it all
            return {"x": c + a * cols, "y": f + e * rows}
        return {}
    if info.pixel_size is not None:
        unit = {"units": info.pixel_unit} if info.pixel_unit else {}
        py, px = info.pixel_size
        return {"y": ("y", py * rows, unit), "x": ("x", px * cols, unit)}
    return {}


def run(input: str, output: str, **options: Any) -> RunResult:
    """``segpipe run --input INPUT --output OUTPUT`` with ``options`` by their flat names.

    The whole run (work directory, ``resume=True``, the report beside the output), in this
    process; returns the run's :class:`~segpipe.pipeline.summary.RunSummary` (a
    :class:`~segpipe.pipeline.summary.SkippedRun` when the output was up to date).
    """
    from segpipe.pipeline.stages import run_one

    return run_one(RunOptions.of(input, output, **options))


def write(
    labels: Any, path: str, *, compute: bool = True, crs: str | None = None,
    transform: tuple[float, ...] | None = None, class_names: tuple[str, ...] | None = None,
    colors: tuple[tuple[int, int, int], ...] | None = None,
) -> Any:
    """Write ``labels`` (H, W) to ``path`` in the format its extension names, as a run does.

    A DataArray from :func:`segpipe.segment` carries its CRS, transform, class names and
    colours; for an array give them here (else the output has no georeferencing and classes
    named by number). ``compute=False``: the delayed work (its result the paths written).
    """
    from segpipe.writing import export_labels, labels_export

    export = labels_export(labels, path, crs, transform, class_names, colors)
    folder = Path(tempfile.mkdtemp(prefix="segpipe-write-"))
    try:
        work = export_labels(export, str(folder / "labels.zarr"))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if compute:
        return work.compute()
    return work
