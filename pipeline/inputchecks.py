"""Input pixels segpipe cannot segment meaningfully, refused at planning with the fix.

- :func:`check_pixel_type`: pixels must be integers or real numbers. Complex pixels (radar
  SLC), booleans (masks) and anything else are refused, saying what to convert them to.
- :func:`check_meanstd_bands`: ``meanstd`` normalization computed from the image divides each
  band by its standard deviation; a band whose valid pixels are all equal has none. It is found
  from the same pixels the stats stage reads (all of a small image, the fixed window sample of
  a large one, nodata excluded) and refused, naming the band and the value.

And one warning after the fact: :func:`warn_if_all_nodata`, for a run whose labels are all
nodata because every pixel of the input is (an empty scene, a band of NaN). Such a run succeeds:
its output is an all-nodata mask, and the warning says why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from segpipe.models.card import Normalization, NormMethod
from segpipe.models.foundation import InputError, RasterError
from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.io.readeroptions import ReaderOptions
from segpipe.pipeline.normalize import invalid_values, sample_windows
from segpipe.pipeline.summary import RunResult, RunSummary

__all__ = ["check_meanstd_bands", "check_pixel_type", "warn_if_all_nodata"]

log = logging.getLogger("segpipe")


def check_pixel_type(info: RasterInfo) -> None:
    """Refuse pixels that are neither integers nor real numbers."""
    try:
        kind: np.dtype | None = np.dtype(info.dtype)
    except TypeError:  # e.g. GDAL's complex integers, which numpy has no type for
        kind = None
    if kind is not None and (np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.floating)):
        return
    if "complex" in info.dtype:
        fix = "convert it to real values first (e.g. the amplitude, as float32)"
    elif kind == np.bool_:
        fix = "convert it to uint8 first (0 and 1)"
    else:
        fix = "convert it to an integer or float32 image first"
    raise RasterError(
        f"{info.path} has {info.dtype} pixels; segpipe segments images of integers or real "
        f"numbers: {fix}"
    )


def check_meanstd_bands(
    info: RasterInfo, bands: Sequence[int], norm: Normalization, names: Sequence[str],
    reader_options: ReaderOptions | None = None,
) -> None:
    """Refuse ``meanstd`` from image statistics when a selected band is constant.

    ``bands``: 0-based band indices into the input at ``info.level``; ``names``: how the
    message names each selected band (``--bands`` numbers); ``reader_options``: how the run
    reads the input (a STAC item's stack and resampling).
    """
    if norm.method is not NormMethod.MEANSTD or (norm.mean is not None and norm.std is not None):
        return
    low = np.full(len(bands), np.inf)
    high = np.full(len(bands), -np.inf)
    selected = list(bands)
    with open_raster(info.path, level=info.level, options=reader_options) as reader:
        for window in sample_windows(info.height, info.width):
            x = reader.read(window)[selected]
            invalid = invalid_values(x, info.nodata, reader.read_mask(window))
            for b in range(len(selected)):
                values = x[b] if invalid is None else x[b][~invalid[b]]
                if values.size:
                    low[b] = min(low[b], float(values.min()))
                    high[b] = max(high[b], float(values.max()))
    constant = [b for b in range(len(selected)) if low[b] == high[b]]
    if constant:
        b = constant[0]
        raise InputError(
            f"--normalize meanstd: band {names[b]} of {info.path} is constant (every valid "
            f"pixel is {low[b]:g}), so its standard deviation is 0 and meanstd cannot scale "
            "it; use --normalize scale or none, or leave the band out with --bands"
        )


def warn_if_all_nodata(summary: RunResult) -> None:
    """Warn when every label of a finished run (its summary) is nodata."""
    if not isinstance(summary, RunSummary) or summary.failed_blocks:
        return
    if summary.nodata_pixels == summary.image.height * summary.image.width:
        log.warning(
            "every pixel of %s is nodata (its nodata value, NaN or ±inf in every band read), "
            "so the labels are all nodata; check the input (segpipe inspect), --nodata and "
            "--bands", summary.input,
        )
