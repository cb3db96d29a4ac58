"""Registers every reader family with :func:`segpipe.pipeline.io.base.open_raster`, in order."""

from __future__ import annotations

from pathlib import Path

from segpipe.pipeline.io.base import register_reader
from segpipe.pipeline.io.gdal import GdalReader
from segpipe.pipeline.io.zarrstore import ZarrReader, is_zarr


def _any(path: str) -> bool:
    return Path(path).is_file() or "://" in path


register_reader(is_zarr, ZarrReader)
register_reader(_any, GdalReader)
