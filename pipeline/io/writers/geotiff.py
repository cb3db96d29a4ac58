"""GeoTIFF outputs in COG layout: the labels and the probabilities, read from the work arrays.

GDAL's COG driver copies each work-directory Zarr array straight into the output: its source is
an in-memory VRT whose bands read the array window by window
(:func:`segpipe.pipeline.io.cogsource.derived_vrt`), carrying the input's CRS and transform (or
its GCPs and their CRS), RPCs, band names and tags. No staging GeoTIFF is written: every
level-0 tile is read from the work array once and deflated once, into the output. The driver
builds the overviews from level 0 (the labels with ``job.options.overview_resampling``,
``nearest`` or ``mode``, never an average: labels are categories; the probabilities with
``nearest``) into its own temporary file beside the output, kept uncompressed
(``COG_TMP_COMPRESSION=NONE``) so that each overview tile too is encoded once, into the output.
The output's bytes are those the former staged copy gave (deflate, 512-pixel blocks, BigTIFF
when needed, the same overviews): only where the pixels come from changed. The copy is written
beside the output and moved into place only when complete
(:func:`~segpipe.models.foundation.atomic_output`); an object-store output is uploaded from local
scratch when complete (:func:`segpipe.pipeline.storage.publish`).

Instances (``--instance-labels``): one uint32 band named ``instances``, overviews ``nearest``.
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
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from segpipe.pipeline import storage
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.cogsource import Convert, derived_vrt, trusted
from segpipe.pipeline.io.georef import rasterio_georef
from segpipe.pipeline.io.pyramid import open_stored
from segpipe.pipeline.io.writers.common import (
    as_uint8,
    instances_target,
    open_probabilities,
    probabilities_target,
    probability_names,
    write_labels_and_probabilities,
)

if TYPE_CHECKING:
    from rasterio.io import DatasetWriter

    from segpipe.pipeline.io.writers import ExportJob

__all__ = ["COG_BLOCK", "cog_options", "write", "write_instances", "write_labels",
           "write_probabilities"]

COG_BLOCK = 512


def cog_options(resampling: str, *, predictor: bool = False) -> dict[str, str]:
    """GDAL COG creation options of every GeoTIFF output (tiles compressed on every core)."""
    options = {
        "COMPRESS": "DEFLATE", "NUM_THREADS": "ALL_CPUS", "BLOCKSIZE": str(COG_BLOCK),
        "BIGTIFF": "IF_SAFER", "RESAMPLING": str(resampling).upper(), "OVERVIEWS": "AUTO",
    }
    if predictor:
        options["PREDICTOR"] = "YES"
    return options


def _profile(info: RasterInfo, count: int, dtype: str, **extra: Any) -> dict[str, Any]:
    """The source VRT's keywords: size, type, the input's georeferencing, ``extra``.

    That is its CRS with its transform, or its GCPs with their CRS, and its RPCs; the COG copy
    keeps them all.
    """
    profile: dict[str, Any] = {
        "height": info.height, "width": info.width, "count": count, "dtype": dtype, **extra,
    }
    profile.update(rasterio_georef(
        info.crs_wkt, info.transform, info.gcps, info.gcp_crs_wkt, info.rpcs
    ))
    return profile


def _gtiff_colorinterp(count: int, dtype: str) -> tuple[ColorInterp, ...]:
    """The band colours GDAL gives a GeoTIFF of ``count`` bands of ``dtype`` (RGB for 3 uint8).

    The outputs were copies of such GeoTIFFs: their bands keep those colours (and the copy no
    ``COLORINTERP`` items), so the outputs' bytes stay the same.
    """
    with MemoryFile(ext=".tif") as mem, mem.open(
        driver="GTiff", width=1, height=1, count=count, dtype=dtype
    ) as probe:
        return tuple(probe.colorinterp)


@dataclass(frozen=True)
class _Cog:
    """One COG output: where, the work array it copies, the source's profile, the overviews."""

    out: str
    array: str  # the work-directory Zarr array
    profile: dict[str, Any]
    convert: Convert
    resampling: str
    predictor: bool = False


def _copy(cog: _Cog, describe: Callable[[DatasetWriter], None]) -> Path:
    """COG-copy the work array to ``cog.out`` atomically, its metadata set by ``describe``."""
    with warnings.catch_warnings():
        # an input without georeferencing (a slide, a Zarr array) gives an output without it
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with (
            trusted(), rasterio.Env(COG_TMP_COMPRESSION="NONE"),
            derived_vrt(cog.array, cog.profile, cog.convert, COG_BLOCK, describe) as src,
            storage.publish(cog.out) as partial,
        ):
            rasterio.shutil.copy(
                src, partial, driver="COG", **cog_options(cog.resampling, predictor=cog.predictor)
            )
    return Path(cog.out)


def write_labels(job: ExportJob) -> Path:
    """Write the label array as a COG at ``job.out``; returns that path."""
    labels = open_stored(job.labels_path, job.info, "labels", 2)

    def describe(dst: DatasetWriter) -> None:
        if labels.dtype == np.uint8:
            dst.write_colormap(1, {i: (*c, 255) for i, c in enumerate(job.colors)})
        dst.set_band_description(1, "labels")
        dst.update_tags(**job.tags, CLASS_NAMES=json.dumps(list(job.class_names)))
        dst.update_tags(1, **{f"CLASS_{i}": name for i, name in enumerate(job.class_names)})

    cog = _Cog(
        out=job.out, array=job.labels_path,
        profile=_profile(job.info, 1, str(labels.dtype), nodata=job.nodata),
        convert=Convert.NONE, resampling=job.options.overview_resampling,
    )
    return _copy(cog, describe)


def write_probabilities(job: ExportJob) -> Path:
    """Write the probability array as a COG at ``probabilities_path(job.out)``; that path."""
    probs = open_probabilities(job)  # raises InputError when the job has none
    uint8 = as_uint8(job)
    names = probability_names(job, probs.shape[0])

    def describe(dst: DatasetWriter) -> None:
        dst.colorinterp = _gtiff_colorinterp(len(names), dst.dtypes[0])
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(CLASS_NAMES=json.dumps(names), SCALE="1/255" if uint8 else "1")

    cog = _Cog(
        out=probabilities_target(job.out), array=str(job.probabilities_path),
        profile=_profile(job.info, len(names), "uint8" if uint8 else "float32"),
        convert=Convert.UINT8 if uint8 else Convert.FLOAT32, resampling="nearest",
        predictor=True,
    )
    return _copy(cog, describe)


def write_instances(job: ExportJob) -> Path:
    """Write the instance ids as a uint32 COG at ``instances_target(job.out)``; that path.

    One band ``instances`` (0 background, no nodata value: every pixel is an id or 0), the
    provenance tags, overviews by ``nearest`` (ids are never averaged).
    """
    open_stored(str(job.instances_path), job.info, "instances", 2)  # checks the grid

    def describe(dst: DatasetWriter) -> None:
        dst.set_band_description(1, "instances")
        dst.update_tags(**job.tags)

    cog = _Cog(
        out=instances_target(job.out), array=str(job.instances_path),
        profile=_profile(job.info, 1, "uint32"), convert=Convert.NONE, resampling="nearest",
    )
    return _copy(cog, describe)


def write(job: ExportJob) -> list[str]:
    """The labels, and the probabilities when the job has them, as COGs; their paths."""
    return write_labels_and_probabilities(job, write_labels, write_probabilities)
