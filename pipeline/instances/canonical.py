"""Canonical instance ids: consecutive from 1 in raster order of each object's first pixel.

The numbering depends on the partition of the pixels only, not on how the image was cut into
blocks or in which order they ran, so a tiled run and a whole-image run give the same ids, and a
rerun gives the same bytes. For blocks, each object's first pixel is its anchor
(:mod:`segpipe.pipeline.instances.block`), and the global id is the anchor's rank over all blocks
(:func:`global_ids`); for a labelling held in memory, :func:`canonical_ids` renumbers it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["canonical_ids", "global_ids"]


def canonical_ids(instance_image: np.ndarray) -> np.ndarray:
    """``instance_image`` renumbered canonically (uint32; 0 stays background).

    Any labelling works (ids need not be consecutive or ordered); pixels sharing an id stay one
    instance, whether connected or not.
    """
    values, first, inverse = np.unique(instance_image.ravel(), return_index=True,
                                       return_inverse=True)
    first = np.where(values == 0, -1, first)  # background sorts first and becomes 0
    table = np.empty(len(values), np.uint32)
    table[np.argsort(first)] = np.arange(len(values), dtype=np.uint32)
    if not (values == 0).any():
        table += 1
    return table[inverse].reshape(instance_image.shape)


def global_ids(anchors: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The canonical global id of every block's objects, from all blocks' anchors.

    ``anchors[b]`` is block ``b``'s (n_b, 2) image (row, col) anchors (distinct over the image:
    each is a pixel of its object). Returns, per block, the uint32 ids of its objects in the same
    order: the rank of each anchor in raster order over all blocks, from 1. Memory: 3 integers
    per object of the image.
    """
    counts = [len(a) for a in anchors]
    every = (np.concatenate([np.asarray(a, np.int64).reshape(-1, 2) for a in anchors])
             if anchors else np.zeros((0, 2), np.int64))
    order = np.lexsort((every[:, 1], every[:, 0]))
    rank = np.empty(len(every), np.uint32)
    rank[order] = np.arange(1, len(every) + 1, dtype=np.uint32)
    return np.split(rank, np.cumsum(counts)[:-1]) if counts else []
