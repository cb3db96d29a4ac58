"""Segmenting a NumPy array in this process, block by block, as a run's blocks do.

The array is read through :func:`~segpipe.arrayblocks.block_labels` one block at a time (its
read window with halo, mirrored at the edges), so the memory beyond the array and its labels is
one block's; the blocks run in raster order on the calling thread.
"""

from __future__ import annotations

import numpy as np

from segpipe.arrayblocks import block_labels, needs_statistics, normalizer
from segpipe.arrayplan import ArrayPlan
from segpipe.pipeline.tiling import Window

__all__ = ["segment_numpy"]


def segment_numpy(image: np.ndarray, plan: ArrayPlan) -> np.ndarray:
    """Labels (H, W) of ``image`` (bands, H, W) under ``plan``."""
    selected = list(plan.bands)

    def read(w: Window) -> np.ndarray:
        return np.asarray(image[selected, w.row : w.row_stop, w.col : w.col_stop])

    labeller = plan.labeller(normalizer(plan, read if needs_statistics(plan) else None))
    tiles = plan.tiles
    out = np.empty((tiles.height, tiles.width), plan.label_dtype)
    for index in tiles.block_indices():
        out[tiles.block_core(*index).slices] = block_labels(labeller, index, read)
    return out
