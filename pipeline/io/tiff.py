"""TIFFs that are not GeoTIFFs, through tifffile: Aperio SVS, pyramidal (Big)TIFF, plain TIFF.

Pixels are read through tifffile's Zarr view of one pyramid level
(``series.levels[level].aszarr()``), so a window decodes only the tiles (or strips) it touches;
JPEG, JPEG 2000, LZW, deflate, zstd... tiles are decoded by imagecodecs. Pyramids are the series'
levels: SubIFDs, reduced-resolution pages in the main IFD chain, or the Aperio SVS levels.

Which TIFF goes where (see :func:`classify_tiff`): GeoTIFFs and TIFFs carrying GDAL metadata,
nodata or RPC tags, or an internal mask (GDAL's per-dataset mask), go to the GDAL reader (it
understands those); OME-TIFFs to
:mod:`segpipe.pipeline.io.ometiff`; NDPI to :mod:`segpipe.pipeline.io.slide`; every other TIFF
here, with format ``"tiff"``.

Physical pixel size, never invented: Aperio's ``MPP = 0.499`` (µm); ImageJ's ``unit`` with the
resolution tags; or resolution tags in pixels per centimetre. A resolution in inches (often a
meaningless 72 dpi) or without a unit gives no pixel size.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile
import zarr

from segpipe.models.foundation import RasterError
from segpipe.models.location import is_url
from segpipe.pipeline import storage
from segpipe.pipeline.io.base import RasterInfo, ReaderBase, file_signature
from segpipe.pipeline.io.pyramid import check_level, info_at_level
from segpipe.pipeline.io.units import normalize_unit
from segpipe.pipeline.tiling import Window

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# GeoTIFF: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory; GDAL's own tags
# (metadata, nodata); RPCCoefficientTag
_GDAL_TAGS = frozenset({33550, 33922, 34264, 34735, 42112, 42113, 50844})
# axes of a tifffile series that become bands; any other non-spatial axis must have size 1
_BAND_AXES = frozenset("CSIQ")


#: How far each read of a TIFF in a bucket reads ahead (an IFD, a tile: one request each)
READ_AHEAD = 64 << 10


def is_tiff(path: str) -> bool:
    """Whether ``path`` (a file or an object) starts with a TIFF or BigTIFF header."""
    try:
        with storage.open_binary(path, READ_AHEAD) as f:
            return f.read(4) in _TIFF_MAGIC
    except Exception:  # unreadable here (an object store's errors vary): GDAL's reader decides
        return False


@dataclass(frozen=True)
class TiffHeader:
    """What one open of a TIFF says: its reader family, a defect if it has one, its digest.

    ``family``: see :func:`classify_tiff`. ``defect``: why a local file cannot hold the data its
    header declares (:func:`segpipe.pipeline.io.integrity.header_defect`), else None.
    ``sample_sha256``: a local file's sampled digest (:func:`segpipe.pipeline.keys.
    sampled_digest`, the input identity's), read through the same open, so that planning reads
    the family, the integrity and the identity of its input with one open.
    """

    family: str | None
    defect: str | None = None
    sample_sha256: str | None = None


def tiff_header(path: str) -> TiffHeader:
    """The header of the TIFF at ``path``, read once per file version (size, mtime, inode)."""
    return _read_header(path, file_signature(path) if is_url(path) or os.path.exists(path)
                        else ())


def classify_tiff(path: str) -> str | None:
    """The reader family of a TIFF: gdal, ome, ndpi, svs or tiff (None: not a readable TIFF).

    GeoTIFF tags or GDAL's metadata/nodata/RPC tags make it ``"gdal"`` whatever else it has;
    so does an internal mask (the IFD after the image, a mask subfile) of a plain TIFF.
    """
    return tiff_header(path).family


@functools.lru_cache(maxsize=64)
def _read_header(path: str, signature: tuple[int, ...]) -> TiffHeader:
    """The family, and for a local file its integrity and its identity's digest: one open.

    On a bucket, one request (the read-ahead holds the first IFD).
    """
    from segpipe.pipeline.io.integrity import header_defect
    from segpipe.pipeline.keys import sampled_digest

    try:
        with storage.open_binary(path, READ_AHEAD) as f:
            if f.read(4) not in _TIFF_MAGIC:
                return TiffHeader(None)
            f.seek(0)
            with tifffile.TiffFile(f) as tif:
                family = _family(tif)
                if is_url(path):
                    return TiffHeader(family)
                defect = header_defect(path, tif)
            return TiffHeader(family, defect, sampled_digest(f, signature[0]))
    except Exception:  # unreadable (a store's errors vary) or broken (tifffile's vary): not ours
        return TiffHeader(None)


def _family(tif: tifffile.TiffFile) -> str:
    """See :func:`classify_tiff`."""
    page = tif.pages.first
    if any(code in page.tags for code in _GDAL_TAGS):
        return "gdal"
    if tif.is_ome:
        return "ome"
    if tif.is_ndpi:
        return "ndpi"
    if tif.is_svs:
        return "svs"
    return "gdal" if _has_mask_page(tif) else "tiff"


def _has_mask_page(tif: tifffile.TiffFile) -> bool:
    """Whether the IFD after the first is a mask (where GDAL writes an internal mask)."""
    try:
        second = tif.pages[1]
    except IndexError:
        return False
    return bool(getattr(second, "is_mask", False))


def accepts(path: str) -> bool:
    """Whether :class:`TiffReader` is the reader for ``path`` (a non-geo, non-OME TIFF)."""
    return classify_tiff(path) in ("tiff", "svs")


@dataclass(frozen=True)
class AxisLayout:
    """How a tifffile/Zarr array with named axes maps to (bands, height, width)."""

    axes: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, axes: str, shape: Sequence[int], path: str) -> AxisLayout:
        """Check that ``axes`` has Y and X and no non-band axis longer than 1."""
        axes = axes.upper()
        if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
            raise RasterError(f"{path}: cannot find the image plane in axes {axes!r} {shape}")
        for ax, size in zip(axes, shape):
            if ax not in _BAND_AXES and ax not in "YX" and size > 1:
                raise RasterError(
                    f"{path}: axis {ax} has {size} planes (axes {axes!r}, shape {tuple(shape)}); "
                    "segpipe segments 2-D images: extract one plane (time point, z-slice) first"
                )
        return cls(axes, tuple(shape))

    @property
    def height(self) -> int:
        """Rows."""
        return self.shape[self.axes.index("Y")]

    @property
    def width(self) -> int:
        """Columns."""
        return self.shape[self.axes.index("X")]

    @property
    def bands(self) -> int:
        """Channels × samples."""
        return int(np.prod([n for a, n in zip(self.axes, self.shape) if a in _BAND_AXES]))

    def read(self, array: Any, window: Window) -> np.ndarray:
        """``window`` of ``array`` as (bands, h, w), reading only the chunks it touches."""
        rows, cols = window.slices
        selection: list[slice | int] = []
        kept = []
        for ax in self.axes:
            if ax == "Y":
                selection.append(rows)
                kept.append(ax)
            elif ax == "X":
                selection.append(cols)
                kept.append(ax)
            elif ax in _BAND_AXES:
                selection.append(slice(None))
                kept.append(ax)
            else:
                selection.append(0)
        data = np.asarray(array[tuple(selection)])
        order = [i for i, a in enumerate(kept) if a in _BAND_AXES]
        order += [kept.index("Y"), kept.index("X")]
        data = data.transpose(order)
        return data.reshape(self.bands, window.height, window.width)


class TifffileReader(ReaderBase):
    """One level of series 0 of a TIFF read with tifffile; subclasses add the metadata."""

    format = "tiff"

    def __init__(self, path: str, *, level: int = 0) -> None:
        self._handle = storage.open_binary(path, READ_AHEAD) if storage.is_url(path) else None
        try:
            self._tif = tifffile.TiffFile(self._handle or path)
        except Exception as exc:
            self._close_handle()
            raise RasterError(f"cannot read {path} as a TIFF: {exc}") from None
        try:
            self.info = self._open(path, level)
        except BaseException:
            self.close()
            raise

    def _open(self, path: str, level: int) -> RasterInfo:
        if not self._tif.series:
            raise RasterError(f"{path}: the TIFF holds no image")
        series = self._tif.series[0]
        layouts = [AxisLayout.of(lv.axes, lv.shape, path) for lv in series.levels]
        levels = tuple((lay.height, lay.width) for lay in layouts)
        check_level(path, levels, level)
        self._layout = layouts[level]
        try:
            self._array = zarr.open_array(series.aszarr(level=level), mode="r")
        except Exception as exc:
            raise RasterError(f"{path}: cannot read level {level} by tiles: {exc}") from None
        if tuple(self._array.shape) != self._layout.shape:
            raise RasterError(
                f"{path}: level {level} has shape {self._array.shape}, expected "
                f"{self._layout.shape} for axes {self._layout.axes!r}"
            )
        base = layouts[0]
        meta = self._metadata(series)
        info = RasterInfo(
            path=path,
            format=self.format,
            height=base.height,
            width=base.width,
            bands=base.bands,
            dtype=str(series.dtype),
            pixel_size=meta.get("pixel_size"),
            pixel_unit=meta.get("pixel_unit") if meta.get("pixel_size") else None,
            channel_names=meta.get("channel_names"),
            levels=levels,
            extra={"axes": series.levels[0].axes, **meta.get("extra", {})},
        )
        return info_at_level(info, level)

    def _metadata(self, series: tifffile.TiffPageSeries) -> dict[str, Any]:
        """pixel_size (y, x), pixel_unit, channel_names and extra of the series."""
        return {}

    def read(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` as (bands, h, w)."""
        return self._layout.read(self._array, window)

    def close(self) -> None:
        """Close the file (and the object's handle)."""
        self._tif.close()
        self._close_handle()

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _rgb_names(page: Any, layout_bands: int) -> tuple[str, ...] | None:
    if page.photometric == tifffile.PHOTOMETRIC.RGB and layout_bands == 3:
        return ("red", "green", "blue")
    if page.photometric == tifffile.PHOTOMETRIC.RGB and layout_bands == 4:
        return ("red", "green", "blue", "alpha")
    return None


def svs_metadata(description: str) -> dict[str, str]:
    """The ``key = value`` fields of an Aperio ImageDescription (``MPP``, ``AppMag``, ...)."""
    fields: dict[str, str] = {}
    for item in description.split("|")[1:]:
        key, sep, value = item.partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and np.isfinite(number) else None


class TiffReader(TifffileReader):
    """Aperio SVS, pyramidal (Big)TIFF or plain TIFF (format ``"tiff"``)."""

    format = "tiff"

    def _metadata(self, series: tifffile.TiffPageSeries) -> dict[str, Any]:
        tif = self._tif
        page = series.keyframe
        bands = AxisLayout.of(series.axes, series.shape, tif.filename).bands
        meta: dict[str, Any] = {"channel_names": _rgb_names(page, bands), "extra": {}}
        if tif.is_svs:
            fields = svs_metadata(tif.pages.first.description)
            meta["extra"] = {"vendor": "aperio"}
            if (mag := _positive(fields.get("AppMag"))) is not None:
                meta["extra"]["objective_power"] = mag
            if (mpp := _positive(fields.get("MPP"))) is not None:
                meta["pixel_size"], meta["pixel_unit"] = (mpp, mpp), "µm"
            return meta
        xres, yres = (_positive(v) for v in page.resolution)
        if xres is None or yres is None:
            return meta
        imagej = tif.imagej_metadata or {}
        if tif.is_imagej and normalize_unit(imagej.get("unit")) not in (None, "pixel"):
            meta["pixel_size"] = (1 / yres, 1 / xres)
            meta["pixel_unit"] = normalize_unit(imagej["unit"])
        elif page.resolutionunit == tifffile.RESUNIT.CENTIMETER:
            meta["pixel_size"], meta["pixel_unit"] = (1e4 / yres, 1e4 / xres), "µm"
        elif page.resolutionunit == tifffile.RESUNIT.MILLIMETER:
            meta["pixel_size"], meta["pixel_unit"] = (1e3 / yres, 1e3 / xres), "µm"
        elif page.resolutionunit == tifffile.RESUNIT.MICROMETER:
            meta["pixel_size"], meta["pixel_unit"] = (1 / yres, 1 / xres), "µm"
        return meta
