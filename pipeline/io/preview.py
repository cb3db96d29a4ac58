"""The quicklook's pixels, kept while the input is ingested: no second read of level 0.

An input without a pyramid level near the quicklook's size (:func:`~segpipe.pipeline.io.overview.
overview_level` gives level 0) was read twice: once by the ingest, once more, in full, to
decimate it for the quicklook. The ingest now keeps the decimation as it copies each window
(:class:`Preview`: every ``step``-th pixel of level 0, top-left, all bands; the same samples
:func:`~segpipe.pipeline.io.overview.read_overview` takes) and stores it in the work directory
(``preview.zarr``, a few MB at most); the quicklook takes it from there.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from segpipe.pipeline.tiling import Window

__all__ = ["Preview", "decimation_step", "load_preview"]

STEP_ATTR = "segpipe_preview_step"
CHUNK = 512  # the stored preview's chunks (its encoding buffers stay a chunk's size)


def decimation_step(height: int, width: int, max_side: int) -> int:
    """The step that brings a ``height`` × ``width`` level to at most ``max_side`` a side."""
    return max(1, math.ceil(max(height, width) / max_side))


@dataclass(frozen=True)
class Preview:
    """Every ``step``-th pixel of a level, filled window by window (threads fill disjoint ones)."""

    pixels: np.ndarray  # (bands, ceil(height / step), ceil(width / step))
    step: int

    @classmethod
    def empty(cls, bands: int, height: int, width: int, dtype: str, max_side: int) -> Preview:
        step = decimation_step(height, width, max_side)
        return cls(np.zeros((bands, -(-height // step), -(-width // step)), dtype), step)

    def add(self, window: Window, block: np.ndarray) -> None:
        """Keep the samples of ``block`` (all bands of ``window``) that fall on the grid."""
        step = self.step
        r0, c0 = -(-window.row // step), -(-window.col // step)
        sampled = block[:, r0 * step - window.row::step, c0 * step - window.col::step]
        self.pixels[:, r0:r0 + sampled.shape[1], c0:c0 + sampled.shape[2]] = sampled

    def save(self, path: str | os.PathLike[str]) -> None:
        """Store it as a Zarr array (with its step) at ``path``."""
        from segpipe.pipeline.io.zarrstore import create_array

        bands = self.pixels.shape[0]
        array = create_array(path, self.pixels.shape, (bands, CHUNK, CHUNK),
                             str(self.pixels.dtype), attrs={STEP_ATTR: self.step})
        array[...] = self.pixels


def load_preview(path: str | os.PathLike[str]) -> Preview | None:
    """The preview stored at ``path``, or None when there is none."""
    from segpipe.pipeline.io.zarrstore import open_array

    try:
        array = open_array(path, mode="r")
    except (FileNotFoundError, OSError, ValueError, KeyError):
        return None
    step = array.attrs.get(STEP_ATTR)
    if not isinstance(step, int):
        return None
    return Preview(np.asarray(array[...]), step)
