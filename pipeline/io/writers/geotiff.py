"""GeoTIFF outputs in COG layout: the labels and the probabilities, streamed from the work arrays.

Each array is first written window by window into a tiled GeoTIFF in the staging directory (the
work directory) with the input's CRS and transform (or its GCPs and their CRS) and RPCs, band
names and tags; GDAL's COG driver then
copies it into the final layout (deflate, 512-pixel blocks, BigTIFF when needed) and builds the
overviews from level 0: the labels with ``job.options.overview_resampling`` (``nearest`` or
``mode``, never an average: labels are categories), the probabilities with ``nearest``. The copy
is written beside the output and moved into place only when complete
(:func:`~segpipe.models.foundation.atomic_output`); an object-store output is uploaded from local
scratch when complete (:func:`segpipe.pipeline.storage.publish`).

Labels: one band named ``labels`` with the nodata value, a colour table (uint8 labels), the
provenance tags, ``CLASS_NAMES`` (JSON) and a ``CLASS_<i>`` band tag per class. Probabilities:
one band per class (named after it), float32 (GDAL has no float16) or ``round(p * 255)`` uint8,
``CLASS_NAMES`` and ``SCALE`` (``1`` or ``1/255``) tags.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RioWindow

from segpipe.pipeline import storage
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.georef import rasterio_georef
from segpipe.pipeline.io.pyramid import open_stored
from segpipe.pipeline.io.writers.common import (
    as_uint8,
    open_probabilities,
    probabilities_target,
    probability_block,
    probability_names,
    write_labels_and_probabilities,
)
from segpipe.pipeline.tiling import Window

if TYPE_CHECKING:
    from rasterio.io import DatasetWriter

    from segpipe.pipeline.io.writers import ExportJob

__all__ = ["COG_BLOCK", "chunk_windows", "write", "write_labels", "write_probabilities"]

COG_BLOCK = 512


def chunk_windows(height: int, width: int, step: int) -> list[Window]:
    """Chunk-aligned windows of ``step`` rows by up to 8 × ``step`` columns."""
    return [
        Window(r, c, min(step, height - r), min(8 * step, width - c))
        for r in range(0, height, step)
        for c in range(0, width, 8 * step)
    ]


def _profile(info: RasterInfo, count: int, dtype: str, **extra: Any) -> dict[str, Any]:
    """The staging GeoTIFF's creation options: tiled, deflate, the input's georeferencing.

    That is its CRS with its transform, or its GCPs with their CRS, and its RPCs; the COG copy
    keeps them all.
    """
    profile: dict[str, Any] = {
        "driver": "GTiff", "height": info.height, "width": info.width, "count": count,
        "dtype": dtype, "tiled": True, "blockxsize": COG_BLOCK, "blockysize": COG_BLOCK,
        "compress": "deflate", "BIGTIFF": "IF_SAFER", **extra,
    }
    profile.update(rasterio_georef(
        info.crs_wkt, info.transform, info.gcps, info.gcp_crs_wkt, info.rpcs
    ))
    return profile


def _write_blocks(
    dst: DatasetWriter, array: Any, convert: Callable[[np.ndarray], np.ndarray] | None = None
) -> None:
    """Copy a (H, W) or (C, H, W) Zarr array into ``dst`` in chunk-aligned windows."""
    height, width = array.shape[-2:]
    lead = (slice(None),) * (array.ndim - 2)
    for w in chunk_windows(height, width, array.chunks[-2]):
        rows, cols = w.slices
        block = np.asarray(array[(*lead, rows, cols)])
        if convert is not None:
            block = convert(block)
        dst.write(
            block.reshape(-1, w.height, w.width),
            window=RioWindow(w.col, w.row, w.width, w.height),
        )


@dataclass(frozen=True)
class _Cog:
    """One COG output: where, its staging file, its profile and how its overviews are made."""

    out: str
    staging: Path
    profile: dict[str, Any]
    resampling: str
    predictor: bool = False


def _stage_and_copy(cog: _Cog, fill: Callable[[DatasetWriter], None]) -> Path:
    """Write the staging GeoTIFF with ``fill``, then COG-copy it to ``cog.out`` atomically."""
    copy_options = {"PREDICTOR": "YES"} if cog.predictor else {}
    try:
        with warnings.catch_warnings():
            # an input without georeferencing (a slide, a Zarr array) gives an output without it
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(cog.staging, "w", **cog.profile) as dst:
                fill(dst)
            with storage.publish(cog.out) as partial:
                rasterio.shutil.copy(  # tiles compressed on every core (same bytes)
                    cog.staging, partial, driver="COG", COMPRESS="DEFLATE", NUM_THREADS="ALL_CPUS",
                    BLOCKSIZE=str(COG_BLOCK), BIGTIFF="IF_SAFER",
                    RESAMPLING=str(cog.resampling).upper(), OVERVIEWS="AUTO", **copy_options,
                )
    finally:
        cog.staging.unlink(missing_ok=True)
    return Path(cog.out)


def write_labels(job: ExportJob) -> Path:
    """Write the label array as a COG at ``job.out``; returns that path."""
    labels = open_stored(job.labels_path, job.info, "labels", 2)

    def fill(dst: DatasetWriter) -> None:
        _write_blocks(dst, labels)
        if labels.dtype == np.uint8:
            dst.write_colormap(1, {i: (*c, 255) for i, c in enumerate(job.colors)})
        dst.set_band_description(1, "labels")
        dst.update_tags(**job.tags, CLASS_NAMES=json.dumps(list(job.class_names)))
        dst.update_tags(1, **{f"CLASS_{i}": name for i, name in enumerate(job.class_names)})

    cog = _Cog(
        out=job.out,
        staging=Path(job.staging_dir) / "labels.staging.tif",
        # staged uncompressed (one byte a pixel, as the free-disk check counts it): the copy
        # then decompresses nothing
        profile=_profile(job.info, 1, str(labels.dtype), nodata=job.nodata, compress="none"),
        resampling=job.options.overview_resampling,
    )
    return _stage_and_copy(cog, fill)


def write_probabilities(job: ExportJob) -> Path:
    """Write the probability array as a COG at ``probabilities_path(job.out)``; that path."""
    probs = open_probabilities(job)
    uint8 = as_uint8(job)
    names = probability_names(job, probs.shape[0])

    def convert(block: np.ndarray) -> np.ndarray:
        return probability_block(block, as_uint8=uint8, float_dtype="float32")

    def fill(dst: DatasetWriter) -> None:
        _write_blocks(dst, probs, convert)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(CLASS_NAMES=json.dumps(names), SCALE="1/255" if uint8 else "1")

    cog = _Cog(
        out=probabilities_target(job.out),
        staging=Path(job.staging_dir) / "probabilities.staging.tif",
        profile=_profile(
            job.info, len(names), "uint8" if uint8 else "float32", predictor=2 if uint8 else 3
        ),
        resampling="nearest",
        predictor=True,
    )
    return _stage_and_copy(cog, fill)


def write(job: ExportJob) -> list[str]:
    """The labels, and the probabilities when the job has them, as COGs; their paths."""
    return write_labels_and_probabilities(job, write_labels, write_probabilities)
