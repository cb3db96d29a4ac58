"""Registers every reader family with :func:`segpipe.pipeline.io.base.open_raster`, in order.

First match wins: STAC items (a ``.json`` told by its content), OME-Zarr groups, plain Zarr
arrays, OpenSlide formats (NDPI, MRXS; optional), OME-TIFF, SVS and other non-geographic TIFFs
through tifffile, and GDAL for everything else (GeoTIFFs are classified by their tags and always
go to GDAL).
"""

from __future__ import annotations

from pathlib import Path

from segpipe.models.location import is_url
from segpipe.pipeline.io import ometiff, slide, stac, tiff
from segpipe.pipeline.io.base import register_reader
from segpipe.pipeline.io.gdal import GdalReader
from segpipe.pipeline.io.omezarr import OmeZarrReader, is_ome_zarr
from segpipe.pipeline.io.zarrstore import ZarrReader, is_zarr


def _any(path: str) -> bool:
    return Path(path).is_file() or is_url(path)


register_reader(stac.is_stac_item, stac.StacReader)
register_reader(is_ome_zarr, OmeZarrReader)
register_reader(is_zarr, ZarrReader)
register_reader(slide.accepts, slide.OpenSlideReader)
register_reader(ometiff.accepts, ometiff.OmeTiffReader)
register_reader(tiff.accepts, tiff.TiffReader)
register_reader(_any, GdalReader)
