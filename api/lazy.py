"""Segmenting a Dask array lazily: a graph whose chunks are the run's blocks.

Building the graph loads and probes the model (in :func:`~segpipe.arrayplan.plan_array`) but
reads no pixel. Each output chunk is one block's core, computed by one task from the block's
read window (its halo and the mirror padding at the image's edges, exactly as
:func:`~segpipe.pipeline.tiling.read_mirrored` asks for it), so the chunks are the block cores
of the run's tile plan. When the normalization needs image statistics, they are one task over
the run's sampled windows (:func:`~segpipe.pipeline.normalize.sample_windows`) that every block
task depends on. The graph runs on whatever scheduler computes it; each worker process loads
the model once, by path, like a run's Dask workers.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from segpipe.arrayblocks import block_labels, needs_statistics, normalizer, source_box
from segpipe.arrayplan import ArrayPlan
from segpipe.pipeline.normalize import Normalizer, sample_windows
from segpipe.pipeline.tiling import Window

__all__ = ["segment_dask"]


def segment_dask(image: da.Array, plan: ArrayPlan) -> da.Array:
    """Lazy labels (H, W) of the Dask array ``image`` (bands, H, W) under ``plan``."""
    selected = image[list(plan.bands)]
    token = tokenize(selected.name, repr(plan))
    norm = _statistics(selected, plan, token)
    tiles = plan.tiles
    rows, cols = tiles.block_grid
    meta = np.empty((0, 0), plan.label_dtype)
    grid: list[list[da.Array]] = []
    for bi in range(rows):
        row = []
        for bj in range(cols):
            box = source_box(tiles.block_at(bi, bj).read, tiles.height, tiles.width)
            core = tiles.block_core(bi, bj)
            task = dask.delayed(_block, pure=True)(
                plan, norm, (bi, bj), box, selected[:, box.row : box.row_stop,
                                                    box.col : box.col_stop],
                dask_key_name=f"segpipe-block-{bi}_{bj}-{token}",
            )
            row.append(da.from_delayed(task, (core.height, core.width), dtype=meta.dtype,
                                       meta=meta))
        grid.append(row)
    return da.block(grid)


def _statistics(selected: da.Array, plan: ArrayPlan, token: str) -> Any:
    """The normalizer: a constant, or one task over the sampled windows when it needs them."""
    if not needs_statistics(plan):
        return normalizer(plan, None)
    windows = tuple(sample_windows(plan.tiles.height, plan.tiles.width))
    parts = [selected[:, w.row : w.row_stop, w.col : w.col_stop] for w in windows]
    return dask.delayed(_normalizer, pure=True)(
        plan, windows, parts, dask_key_name=f"segpipe-statistics-{token}"
    )


def _normalizer(plan: ArrayPlan, windows: tuple[Window, ...], parts: list[np.ndarray]) -> Any:
    by_window = dict(zip(windows, parts))
    return normalizer(plan, lambda w: np.asarray(by_window[w]))


def _block(
    plan: ArrayPlan, norm: Normalizer, index: tuple[int, int], box: Window, pixels: np.ndarray
) -> np.ndarray:
    """One block's labels from the image pixels ``box`` (the bounding box of its read)."""

    def read(w: Window) -> np.ndarray:
        return np.asarray(pixels)[:, w.row - box.row : w.row_stop - box.row,
                                  w.col - box.col : w.col_stop - box.col]

    return block_labels(plan.labeller(norm), index, read)
