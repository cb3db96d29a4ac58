"""Label GeoTIFFs in COG layout, streamed from the label Zarr.

The labels are first written window by window into a tiled GeoTIFF in the work directory (with
CRS, transform, nodata, colour table, class names and provenance tags), then GDAL's COG driver
copies it into the final layout and builds the overviews from level 0 with ``nearest`` or
``mode`` resampling (never an average: labels are categories). The result is written beside the
output and renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.zarrstore import open_array
from segpipe.pipeline.tiling import Window

COG_BLOCK = 512


def chunk_windows(height: int, width: int, step: int) -> list[Window]:
    """Chunk-aligned windows of ``step`` rows by up to 8 × ``step`` columns."""
    return [
        Window(r, c, min(step, height - r), min(8 * step, width - c))
        for r in range(0, height, step)
        for c in range(0, width, 8 * step)
    ]


def write_label_cog(
    labels_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    info: RasterInfo,
    *,
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    nodata: int,
    tags: Mapping[str, str],
    workdir: str | os.PathLike[str],
    overview_resampling: str = "nearest",
) -> None:
    """Write the label array at ``labels_path`` as a COG at ``out_path`` (atomically)."""
    labels = open_array(labels_path, mode="r")
    height, width = labels.shape
    out_path = Path(out_path)
    staging = Path(workdir) / "labels.staging.tif"
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": str(labels.dtype),
        "nodata": nodata,
        "tiled": True,
        "blockxsize": COG_BLOCK,
        "blockysize": COG_BLOCK,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if info.crs_wkt:
        profile["crs"] = CRS.from_wkt(info.crs_wkt)
    if info.transform:
        profile["transform"] = Affine(*info.transform)
    with warnings.catch_warnings():
        # an input without georeferencing (a slide, a Zarr array) gives an output without it
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        _write_staging_and_copy(labels, staging, out_path, profile, class_names, colors, tags,
                                overview_resampling)


def _write_staging_and_copy(labels, staging: Path, out_path: Path, profile: dict,
                            class_names, colors, tags, overview_resampling: str) -> None:
    height, width = labels.shape
    step = labels.chunks[0]
    with rasterio.open(staging, "w", **profile) as dst:
        for w in chunk_windows(height, width, step):
            rows, cols = w.slices
            dst.write(
                np.asarray(labels[rows, cols])[None],
                window=rasterio.windows.Window(w.col, w.row, w.width, w.height),
            )
        if labels.dtype == np.uint8:
            dst.write_colormap(1, {i: (*c, 255) for i, c in enumerate(colors)})
        dst.set_band_description(1, "labels")
        dst.update_tags(**tags, CLASS_NAMES=json.dumps(list(class_names)))
        dst.update_tags(1, **{f"CLASS_{i}": name for i, name in enumerate(class_names)})
    partial = out_path.with_name(f".{out_path.name}.partial")
    try:
        rasterio.shutil.copy(
            staging,
            partial,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=str(COG_BLOCK),
            BIGTIFF="IF_SAFER",
            RESAMPLING=overview_resampling.upper(),
            OVERVIEWS="AUTO",
        )
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
        staging.unlink(missing_ok=True)
