"""TIFF files that cannot hold what their header declares: refused before any pixel is read.

A TIFF's header lists where each strip or tile of image data lies (offset and byte count). A
file cut short (a copy or download that stopped) still has an intact header whose pointers run
past its end; a damaged or forged header may declare an image far larger than the file (a
200 000 × 200 000 px image in 12 KiB). Reading either fails half-way, and an image size taken
from such a header could size allocations. :func:`check_tiff_holds_data` reads only the header
and the strip/tile tables (tifffile, lazily) and raises :class:`RasterError` when

- a strip or tile ends past the end of the file (truncated), or
- the image is stored uncompressed and its strips or tiles hold fewer bytes than its declared
  size needs (corrupt header).

Sparse files, whose empty tiles have no bytes at all (GDAL's ``SPARSE_OK``), are left alone, as
are compressed images whose pointers lie inside the file: nothing bounds how well data
compresses. Anything tifffile cannot parse is left to the reader that opens the file.
"""

from __future__ import annotations

import math
import os

import numpy as np
import tifffile

from segpipe.models.foundation import RasterError
from segpipe.models.location import is_url

__all__ = ["check_tiff_holds_data"]

_UNCOMPRESSED = 1


def check_tiff_holds_data(path: str) -> None:
    """Refuse the local TIFF ``path`` if it is truncated or declares more than it stores.

    The header is read once per file, with its reader family (:func:`~segpipe.pipeline.io.
    tiff.tiff_header`): this check opens nothing more.
    """
    from segpipe.pipeline.io.tiff import tiff_header

    if is_url(path):
        return
    defect = tiff_header(path).defect
    if defect is not None:
        raise RasterError(defect)


def header_defect(path: str, tif: tifffile.TiffFile) -> str | None:
    """Why the open TIFF ``tif`` (the local file ``path``) cannot hold its data; None if it can."""
    size = os.path.getsize(path)
    try:
        pages = [p for level in tif.series[0].levels for p in level.pages if p is not None]
        for page in pages:
            _check_page(path, page, size)
    except RasterError as exc:
        return str(exc)
    except Exception:  # not a TIFF tifffile can parse: the reader decides
        return None
    return None


def _check_page(path: str, page: tifffile.TiffPage | tifffile.TiffFrame, size: int) -> None:
    offsets, counts = page.dataoffsets, page.databytecounts
    end = max((o + c for o, c in zip(offsets, counts) if c), default=0)
    if end > size:
        raise RasterError(
            f"{path} is truncated or corrupt: its header puts image data up to byte {end:,} but "
            f"the file has only {size:,} bytes; check the file or copy it again"
        )
    key = page.keyframe
    if key is None or key.compression != _UNCOMPRESSED or key.bitspersample % 8 or not all(counts):
        return
    need = math.prod(key.shape) * np.dtype(key.dtype).itemsize
    have = sum(counts)
    if have < need:
        height, width = key.imagelength, key.imagewidth
        raise RasterError(
            f"{path} is truncated or corrupt: its header declares {width:,} × {height:,} px "
            f"of {key.dtype} data ({need:,} bytes uncompressed) but the file stores only "
            f"{have:,} bytes of it; check the file or copy it again"
        )

