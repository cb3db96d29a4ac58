"""GDAL rasters (GeoTIFF, COG, anything GDAL reads) through rasterio, window by window.

Also here: :func:`streaming_env`, the GDAL settings every stage that streams a whole image
through GDAL (ingest, export, the quicklook) runs under.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window as RioWindow

from segpipe.models.foundation import RasterError
from segpipe.models.location import is_url
from segpipe.pipeline.io.base import MaskKind, RasterInfo, Reader, ReaderBase
from segpipe.pipeline.io.georef import read_gcps, read_rpcs
from segpipe.pipeline.io.pyramid import info_at_level
from segpipe.pipeline.io.remote import gdal_env
from segpipe.pipeline.tiling import Window

# GDAL's block cache while streaming whole images (ingest, export). GDAL's default, 5 % of the
# RAM, would make the driver's memory grow with the image up to that much.
GDAL_CACHE_BYTES = 64 << 20


def streaming_env() -> rasterio.Env:
    """GDAL settings for streaming a whole image: bounded block cache, tiles decoded on all cores.

    The block cache is :data:`GDAL_CACHE_BYTES` (64 MiB). ``GDAL_NUM_THREADS``: a window that
    spans several compressed tiles of a GeoTIFF is decoded by as many threads (GDAL ≥ 3.6);
    these stages run in the driver, one at a time (blocks read the ingested Zarr array instead).
    """
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, GDAL_NUM_THREADS="ALL_CPUS")


def _nodata(ds: rasterio.DatasetReader) -> float | None:
    declared = [v for v in ds.nodatavals if v is not None]
    if declared and all(math.isnan(v) for v in declared):
        return math.nan
    values = set(declared)
    if len(values) > 1:
        raise RasterError(f"{ds.name}: bands declare different nodata values {sorted(values)}")
    return values.pop() if values else None


def _alpha_band(ds: rasterio.DatasetReader) -> int | None:
    """The 0-based index of the band GDAL takes as alpha (colour interpretation ``alpha``)."""
    alpha = [i for i, c in enumerate(ds.colorinterp) if c == ColorInterp.alpha]
    return alpha[0] if alpha else None


def _mask_kind(ds: rasterio.DatasetReader, alpha: int | None) -> MaskKind | None:
    """The mask GDAL reports for the image bands (the alpha band's own flags aside)."""
    flags = {f for i, band in enumerate(ds.mask_flag_enums) if i != alpha for f in band}
    if MaskFlags.alpha in flags:
        return MaskKind.ALPHA
    if MaskFlags.per_dataset in flags:
        return MaskKind.PER_DATASET
    if MaskFlags.nodata in flags:
        return MaskKind.NODATA
    return None


class GdalReader(ReaderBase):
    """One level of a GDAL raster; level N > 0 is the file's overview N.

    A mask GDAL reports (an internal or ``.msk`` mask, an alpha band, nodata) is in
    ``info.mask``; :meth:`read_mask` reads a mask band window by window.

    An ``s3://`` URL is read with range requests under the AWS settings of
    :func:`~segpipe.pipeline.io.remote.gdal_env`, held for the reader's life.
    """

    def __init__(self, path: str, *, level: int = 0, described: RasterInfo | None = None) -> None:
        """Open ``level`` of ``path``; ``described``: its level 0 as already read (no reopen)."""
        self._env = contextlib.ExitStack()
        self._env.enter_context(gdal_env(path))
        self._path = path
        try:
            if described is not None and level:
                self.info = info_at_level(described, level)
                self._ds = _open(path, overview_level=level - 1)
            else:
                self._open(path, level)
        except BaseException:
            self._env.close()
            raise

    def at_level(self, level: int) -> Reader:
        """Overview ``level`` of this file, opened without describing the file again."""
        if self.info.level != 0:
            return super().at_level(level)
        try:
            return GdalReader(self._path, level=level, described=self.info)
        except RasterioIOError as exc:  # a level it lists but cannot open
            raise RasterError(f"{self._path}: cannot open overview {level} ({exc})") from None

    def _open(self, path: str, level: int) -> None:
        try:
            base = _open(path)
        except RasterioIOError as exc:
            if not is_url(path) and os.path.isfile(path) and os.path.getsize(path) == 0:
                raise RasterError(
                    f"{path} is empty (0 bytes): check the path, or copy the file again"
                ) from None
            raise RasterError(
                f"cannot read {path} as a raster ({_first_line(exc).rstrip('.')}); give a "
                "raster file (GeoTIFF, COG, OME-TIFF, SVS, OME-Zarr...): segpipe inspect FILE "
                "shows what segpipe reads"
            ) from None
        try:
            self.info = info_at_level(self._describe(path, base), level)
        except BaseException:
            base.close()
            raise
        if level:  # an overview is another dataset; level 0 reads from the one just opened
            base.close()
            base = _open(path, overview_level=level - 1)
        self._ds = base

    @staticmethod
    def _describe(path: str, base: rasterio.DatasetReader) -> RasterInfo:
        """The raster's :class:`RasterInfo` at level 0, from its open dataset."""
        factors = base.overviews(1) if base.count else []
        levels = (
            (base.height, base.width),
            *((math.ceil(base.height / f), math.ceil(base.width / f)) for f in factors),
        )
        dtypes = set(base.dtypes)
        if len(dtypes) != 1:
            raise RasterError(f"{path}: bands of mixed types {sorted(dtypes)} are unsupported")
        crs = base.crs
        gcps, gcp_crs = read_gcps(base)
        alpha = _alpha_band(base)
        mask = _mask_kind(base, alpha) if base.count else None
        info = RasterInfo(
            path=path,
            format="gdal",
            height=base.height,
            width=base.width,
            bands=base.count,
            dtype=base.dtypes[0],
            nodata=_nodata(base),
            crs_wkt=crs.to_wkt() if crs else None,
            transform=tuple(base.transform)[:6] if not base.transform.is_identity else None,
            channel_names=tuple(d or f"band_{i + 1}" for i, d in enumerate(base.descriptions)),
            levels=levels,
            gcps=gcps,
            gcp_crs_wkt=gcp_crs,
            rpcs=read_rpcs(base),
            mask=mask,
            alpha_band=alpha if mask is MaskKind.ALPHA else None,  # a mask, not an image band
            extra={"driver": base.driver},
        )
        return info

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` as (bands, h, w)."""
        try:
            return self._ds.read(
                window=RioWindow(window.col, window.row, window.width, window.height)
            )
        except RasterioIOError as exc:
            raise RasterError(
                f"{self.info.path} is truncated or corrupt: reading rows {window.row}-"
                f"{window.row_stop - 1}, columns {window.col}-{window.col_stop - 1} failed "
                f"({_first_line(exc)}); check the file or copy it again"
            ) from None

    def read_mask(self, window: Window) -> np.ndarray | None:
        """Where ``window`` is valid by GDAL's mask band (per-dataset or alpha); else None."""
        if self.info.mask is None or not self.info.mask.is_band:
            return None
        try:
            mask = self._ds.dataset_mask(
                window=RioWindow(window.col, window.row, window.width, window.height)
            )
        except RasterioIOError as exc:
            raise RasterError(
                f"{self.info.path}: reading its mask band at rows {window.row}-"
                f"{window.row_stop - 1} failed ({_first_line(exc)}); check the file"
            ) from None
        return np.asarray(mask != 0)

    def close(self) -> None:
        """Close the dataset (and leave its GDAL environment)."""
        try:
            self._ds.close()
        finally:
            self._env.close()


def _open(path: str, **kw: Any) -> rasterio.DatasetReader:
    """``rasterio.open``, quiet about rasters without georeferencing (slides, photos: normal)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, **kw)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
