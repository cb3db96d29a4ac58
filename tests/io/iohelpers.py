"""Helpers for the reader and writer tests: small files made by code, the reader picked."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from segpipe.pipeline.io.base import open_raster


def reader_class(path: str | Path) -> type:
    """The reader class the real registry (``open_raster``) picks for ``path``."""
    with open_raster(os.fspath(path)) as reader:
        return type(reader)


def write_ome_tiff(
    path: Path,
    data: np.ndarray,
    axes: str,
    *,
    pixel_size: tuple[float, float] | None = None,
    unit: str = "µm",
    channel_names: list[str] | None = None,
    sublevels: int = 0,
    tile: int = 32,
    photometric: str = "minisblack",
) -> Path:
    """An OME-TIFF with ``sublevels`` SubIFD levels (``data[..., ::2**i, ::2**i]`` on Y, X)."""
    metadata: dict = {"axes": axes}
    if pixel_size is not None:
        metadata.update(
            PhysicalSizeY=pixel_size[0], PhysicalSizeYUnit=unit,
            PhysicalSizeX=pixel_size[1], PhysicalSizeXUnit=unit,
        )
    if channel_names:
        metadata["Channel"] = {"Name": channel_names}
    iy, ix = axes.index("Y"), axes.index("X")
    options = {"tile": (tile, tile), "compression": "zlib", "photometric": photometric}
    with tifffile.TiffWriter(path, ome=True, bigtiff=True) as tif:
        tif.write(data, subifds=sublevels, metadata=metadata, **options)
        for i in range(1, sublevels + 1):
            tif.write(downsample(data, 2**i, iy, ix), subfiletype=1, **options)
    return path


def downsample(data: np.ndarray, factor: int, iy: int = -2, ix: int = -1) -> np.ndarray:
    """``data`` with rows and columns ``[::factor]`` on axes ``iy`` and ``ix``."""
    index = [slice(None)] * data.ndim
    index[iy] = index[ix] = slice(None, None, factor)
    return data[tuple(index)]
