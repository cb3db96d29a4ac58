"""A bounded look at a whole raster: the right pyramid level, decimated, never read whole.

:func:`read_overview` returns the image at most ``max_side`` pixels on its longest side for the
quicklook. It reads the raster's own pyramid through :func:`~segpipe.pipeline.io.base.open_raster`
(GDAL overviews, the TIFF series' levels, OME-Zarr datasets, OpenSlide levels): the coarsest
level whose longest side still reaches ``max_side`` (:func:`overview_level`), then every
``step``-th pixel of it (nearest, top-left: pixel ``(i, j)`` of the overview is pixel
``(i * step, j * step)`` of that level). The level is read window by window, each window a
bounded number of bytes and a multiple of ``step`` pixels on a side, so memory stays bounded by
the overview plus one window however large the raster is.

For slides this is the pyramid of the scan itself (series 0 of an SVS, OpenSlide's levels):
the label and macro images, which can carry patient data, are separate series and never read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from segpipe.models.foundation import RasterError
from segpipe.pipeline.io.base import RasterInfo, Reader
from segpipe.pipeline.io.gdal import streaming_env
from segpipe.pipeline.io.heldreader import input_reader
from segpipe.pipeline.io.preview import decimation_step, load_preview
from segpipe.pipeline.io.readeroptions import ReaderOptions
from segpipe.pipeline.tiling import Window

__all__ = ["WINDOW_BYTES", "Overview", "overview_level", "overview_windows", "read_overview"]

# the most bytes one window read may hold (all bands of the raster)
WINDOW_BYTES = 16 << 20


@dataclass(frozen=True)
class Overview:
    """The decimated pixels and where they come from.

    ``pixels`` is (bands, ceil(h / step), ceil(w / step)) for the bands asked for, from pyramid
    level ``info.level`` (of shape ``info.height`` × ``info.width``).
    """

    pixels: np.ndarray
    info: RasterInfo
    step: int

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the overview."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])


def overview_level(levels: Sequence[tuple[int, int]], max_side: int) -> int:
    """The coarsest level whose longest side is at least ``max_side`` (level 0 when none is)."""
    fits = [i for i, (h, w) in enumerate(levels) if max(h, w) >= max_side]
    return min(fits, key=lambda i: max(levels[i])) if fits else 0


def overview_windows(height: int, width: int, step: int, pixels: int) -> Iterator[Window]:
    """Windows covering a level, each at most ``pixels`` pixels, starting at multiples of ``step``.

    Square windows of a multiple of ``step`` on a side when one ``step`` × ``step`` square fits
    in ``pixels``; otherwise single sampled rows, cut into runs of at most ``pixels`` columns.
    Rows and columns not sampled (not multiples of ``step``) are skipped where possible.
    """
    if step * step <= pixels:
        side = step * max(1, math.isqrt(pixels) // step)
        for row in range(0, height, side):
            for col in range(0, width, side):
                yield Window(row, col, min(side, height - row), min(side, width - col))
        return
    span = step * max(1, pixels // step)
    for row in range(0, height, step):
        for col in range(0, width, span):
            yield Window(row, col, 1, min(span, width - col))


def read_overview(
    path: str | os.PathLike[str], max_side: int, *, bands: Sequence[int] | None = None,
    preview: str | None = None, options: ReaderOptions | None = None,
) -> Overview:
    """The raster at ``path`` at most ``max_side`` pixels a side, from its pyramid (see module).

    ``bands`` are 0-based band indices to keep (default: all). ``preview``: where the ingest
    kept level 0's decimation (:mod:`segpipe.pipeline.io.preview`), used instead of reading
    level 0 again when no coarser level fits. ``options``: the run's reader options (a STAC
    item's stack: the bands and grid the run segmented).
    """
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    with streaming_env():  # a level-0 read decodes every tile: on every core
        return _read_overview(path, max_side, bands, preview, options)


def _read_overview(
    path: str | os.PathLike[str], max_side: int, bands: Sequence[int] | None,
    preview: str | None = None, options: ReaderOptions | None = None,
) -> Overview:
    # inside a run: planning's reader, held (no new open)
    with input_reader(os.fspath(path), options=options) as base:
        levels = base.info.levels or (base.info.shape,)
        level = overview_level(levels, max_side)
        if level == 0:
            kept = _kept(preview, base.info, max_side, bands)
            return kept if kept is not None else _decimate(base, max_side, bands)
        try:
            reader = base.at_level(level)
        except RasterError:  # levels it lists but cannot open (a copy's recorded pyramid)
            return _decimate(base, max_side, bands)
    with reader:
        return _decimate(reader, max_side, bands)


def _kept(preview: str | None, info: RasterInfo, max_side: int,
          bands: Sequence[int] | None) -> Overview | None:
    """Level 0's decimation as the ingest kept it, when it matches ``info`` and ``max_side``."""
    kept = load_preview(preview) if preview else None
    step = decimation_step(info.height, info.width, max_side)
    if kept is None or kept.step != step or kept.pixels.shape[0] != info.bands:
        return None
    keep = list(range(info.bands)) if bands is None else [int(b) for b in bands]
    return Overview(kept.pixels[keep], info, step)


def _decimate(reader: Reader, max_side: int, bands: Sequence[int] | None) -> Overview:
    info = reader.info
    keep = list(range(info.bands)) if bands is None else [int(b) for b in bands]
    step = decimation_step(info.height, info.width, max_side)
    out = np.empty(
        (len(keep), -(-info.height // step), -(-info.width // step)), np.dtype(info.dtype)
    )
    per_pixel = max(1, info.bands * np.dtype(info.dtype).itemsize)
    for window in overview_windows(info.height, info.width, step, WINDOW_BYTES // per_pixel):
        block = reader.read(window)
        # the level's samples [::step] inside the window (it starts at a multiple of step)
        r0, c0 = -(-window.row // step), -(-window.col // step)
        first_r, first_c = r0 * step - window.row, c0 * step - window.col
        sampled = block[:, first_r::step, first_c::step][keep]
        out[:, r0 : r0 + sampled.shape[1], c0 : c0 + sampled.shape[2]] = sampled
    return Overview(out, info, step)
