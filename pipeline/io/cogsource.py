"""A work-directory Zarr array as a GDAL dataset, so that GDAL's COG driver reads it in place.

GDAL 3.10 (rasterio's wheel) cannot open zarr-python 3's Zarr v3 arrays (it knows no ``bytes``
codec), and a staging GeoTIFF copy of the array costs a write and a read of every pixel. So the
export hands GDAL a virtual raster (VRT, in memory) whose bands are *derived* bands: each block
GDAL asks for is filled by :func:`read_block`, a Python pixel function that reads that window
of the array with zarr-python (a local or object-store work directory alike) and converts it to
the band's type. Everything else in the VRT (size, georeferencing, nodata, colour table, band
descriptions, tags) is what rasterio writes for any dataset, set with the same calls as on a
GeoTIFF; GDAL's COG driver then copies the VRT, so the output holds the same bytes a copy of a
staged GeoTIFF with those pixels and that metadata held.

Python pixel functions run only where GDAL is told to trust them: :func:`trusted` allows this
module's functions alone (``GDAL_VRT_ENABLE_PYTHON=TRUSTED_MODULES``) for the duration of a
copy. GDAL may call them from its own threads (rasterio releases the GIL during a copy); each
call takes the GIL. A multi-band raster is read a window at a time for all bands, band after
band: the last window read is kept (all its bands) so the array is read once per window. The
pixel function finds its array by a token in the VRT, registered for one copy only.
"""

from __future__ import annotations

import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.io import MemoryFile

from segpipe.pipeline.io.writers.common import probability_block

if TYPE_CHECKING:
    from rasterio.io import DatasetReader, DatasetWriter

__all__ = ["PIXEL_FUNCTION", "Convert", "derived_vrt", "read_block", "read_window", "trusted"]

#: The pixel function GDAL calls, as the dotted name it imports.
PIXEL_FUNCTION = f"{__name__}.read_block"


class Convert(StrEnum):
    """How a window of the array becomes the band's pixels (the ``convert`` argument)."""

    NONE = "none"  # as stored (labels)
    FLOAT32 = "float32"  # float16 probabilities as float32
    UINT8 = "uint8"  # probabilities as round(p * 255)


@dataclass
class _Source:
    """One work array being copied: opened once; for (C, H, W), the last window read."""

    array: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: tuple[tuple[int, ...], np.ndarray] | None = None

    def window(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        key = (row, col, height, width)
        with self.lock:
            if self.last is not None and self.last[0] == key:
                return self.last[1]
        block = read_window(self.array, row, col, height, width)
        if self.array.ndim == 3:  # the other bands ask for this window next
            with self.lock:
                self.last = (key, block)
        return block


# the arrays of the copies under way, by the token their VRT names (see derived_vrt)
_SOURCES: dict[str, _Source] = {}


def read_window(array: Any, row: int, col: int, height: int, width: int) -> np.ndarray:
    """Pixels ``[row:row+height, col:col+width]`` of every channel of a Zarr ``array``.

    (C, h, w) for a (C, H, W) array, (1, h, w) for an (H, W) one. The one place the COG export
    reads a work array (tests count its calls).
    """
    rows, cols = slice(row, row + height), slice(col, col + width)
    if array.ndim == 2:
        return np.asarray(array[rows, cols])[None]
    return np.asarray(array[:, rows, cols])


def read_block(
    in_ar: list[np.ndarray], out_ar: np.ndarray, xoff: int, yoff: int, xsize: int, ysize: int,
    raster_xsize: int, raster_ysize: int, buf_radius: int, gt: tuple[float, ...],
    **kwargs: bytes,
) -> None:
    """GDAL's pixel function: fill ``out_ar`` with channel ``band`` of a registered array.

    Arguments come from the band's ``PixelFunctionArguments`` (as bytes): ``source`` (the
    token :func:`derived_vrt` registered the array under), ``band`` (0-based) and ``convert``
    (:class:`Convert`). GDAL asks for whole windows at full resolution (``out_ar`` is
    (ysize, xsize)).
    """
    source = _SOURCES[kwargs["source"].decode()]
    convert = kwargs["convert"].decode()
    block = source.window(yoff, xoff, ysize, xsize)[int(kwargs["band"])]
    if convert != Convert.NONE:
        block = probability_block(block, as_uint8=convert == Convert.UINT8,
                                  float_dtype="float32")
    out_ar[:] = block


@contextmanager
def trusted() -> Iterator[None]:
    """A GDAL environment that runs this module's pixel functions and no other Python."""
    with rasterio.Env(GDAL_VRT_ENABLE_PYTHON="TRUSTED_MODULES",
                      GDAL_VRT_PYTHON_TRUSTED_MODULES=__name__):
        yield


@contextmanager
def derived_vrt(
    path: str, profile: dict[str, Any], convert: Convert, block: int,
    describe: Callable[[DatasetWriter], None],
) -> Iterator[DatasetReader]:
    """An open in-memory VRT over the Zarr array ``path`` (run under :func:`trusted`).

    ``profile``: rasterio's creation keywords (size, count, dtype, georeferencing, nodata);
    ``describe(dst)`` sets the rest with rasterio (colour table, descriptions, tags) as on any
    writable dataset. Each band becomes a derived band of ``block``-pixel blocks, band ``i``
    reading channel ``i`` of the array through :func:`read_block`. The array is opened once,
    here, and forgotten on exit (a later copy of the same path reads it afresh).
    """
    from segpipe.pipeline.io.zarrstore import open_array

    token = uuid.uuid4().hex
    with MemoryFile(ext=".vrt") as shell:
        with shell.open(driver="VRT", **profile) as dst:
            describe(dst)
        xml = _derive(shell.read().decode(), token, convert, block)
    _SOURCES[token] = _Source(open_array(path, mode="r"))
    try:
        with MemoryFile(xml.encode(), ext=".vrt") as mem, mem.open() as src:
            yield src
    finally:
        del _SOURCES[token]


def _derive(xml: str, token: str, convert: Convert, block: int) -> str:
    """The VRT ``xml``, every band a derived band reading the source ``token`` names."""
    root = ET.fromstring(xml)
    for band in root.iter("VRTRasterBand"):
        band.set("subClass", "VRTDerivedRasterBand")
        band.set("blockXSize", str(block))
        band.set("blockYSize", str(block))
        ET.SubElement(band, "PixelFunctionLanguage").text = "Python"
        ET.SubElement(band, "PixelFunctionType").text = PIXEL_FUNCTION
        ET.SubElement(band, "PixelFunctionArguments", {
            "source": token, "band": str(int(band.get("band", "1")) - 1), "convert": str(convert),
        })
    return ET.tostring(root, encoding="unicode")
