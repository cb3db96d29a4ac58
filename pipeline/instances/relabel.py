"""Plain components (no separation) as canonical instance ids, exact for objects of any size.

The seam join (:mod:`segpipe.pipeline.seamjoin`) gives component ``i`` of block ``b`` (numbered
by :func:`~segpipe.pipeline.objects.block_components`) the provisional id ``offset[b] + i`` and
writes every union of two groups as a pair of provisional ids; the connected components of those
pairs over the provisional ids are the image's objects. This module turns them into a lookup
table, provisional id → canonical id (consecutive from 1 in raster order of each object's first
pixel over the whole image; 0 for classes that are not instances and for objects under the
minimum area), and relabels a block with it. An object's first pixel is the first, in raster
order, of its member components' first pixels; its area is the sum of theirs: both are known per
block (:func:`block_facts`), so no block is read twice for the table and no halo is needed.

Memory: a few integers per provisional id (components of all blocks), not per pixel.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from segpipe.models.foundation import InputError
from segpipe.pipeline.seamjoin import read_seams

__all__ = ["BlockFacts", "block_facts", "canonical_table", "relabel_block", "table_from_seams"]

_NONE = np.iinfo(np.int64).max


@dataclass(frozen=True)
class BlockFacts:
    """Per component of a block (local ids 1 … n): first pixel, area and class.

    ``first`` is the image linear index ``row * image_width + col`` of the component's first
    pixel in raster order (raster order of linear indices is raster order of pixels).
    """

    index: tuple[int, int]
    first: np.ndarray
    area: np.ndarray
    classes: np.ndarray


def block_facts(index: tuple[int, int], ids: np.ndarray, components: Mapping[int, int],
                origin: tuple[int, int], image_width: int) -> BlockFacts:
    """The facts of a block's components from its component-id image.

    ``ids`` and ``components`` are what ``block_components`` returned for the block's core,
    whose top-left pixel is image pixel ``origin``.
    """
    n = sum(components.values())
    values, first = np.unique(ids.ravel(), return_index=True)
    if len(values) != n + (1 if (values == 0).any() else 0):
        raise InputError(f"block {index}: {len(values)} ids for {n} components")
    first = first[values > 0]  # ids 1 … n in order (np.unique sorts)
    rows, cols = np.divmod(first, ids.shape[1])
    linear = (rows + origin[0]) * image_width + cols + origin[1]
    area = np.bincount(ids.ravel().astype(np.int64), minlength=n + 1)[1:]
    classes = np.repeat(np.array(sorted(components), np.int64),
                        [components[k] for k in sorted(components)])
    return BlockFacts(index, linear.astype(np.int64), area.astype(np.int64), classes)


def canonical_table(facts: Iterable[BlockFacts], offsets: Mapping[tuple[int, int], int],
                    pairs: np.ndarray, *, classes: Collection[int],
                    min_area_pixels: int = 0) -> np.ndarray:
    """uint32 canonical id of every provisional id (index 0 and non-instances map to 0).

    ``offsets`` and ``pairs`` are the seam join's (:func:`~segpipe.pipeline.seamjoin.read_seams`);
    ``facts`` those of every block that has an offset. Objects of ``classes`` with at least
    ``min_area_pixels`` pixels are numbered; the rest map to 0.
    """
    blocks = list(facts)
    size = 1 + max((offsets[f.index] + len(f.first) for f in blocks), default=0)
    first = np.full(size, _NONE, np.int64)
    area = np.zeros(size, np.int64)
    klass = np.full(size, -1, np.int64)
    for f in blocks:
        span = slice(offsets[f.index] + 1, offsets[f.index] + 1 + len(f.first))
        first[span], area[span], klass[span] = f.first, f.area, f.classes
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(size, size))
    groups, group = connected_components(graph, directed=False)
    group_first = np.full(groups, _NONE, np.int64)
    np.minimum.at(group_first, group, first)
    group_area = np.zeros(groups, np.int64)
    np.add.at(group_area, group, area)
    group_class = np.full(groups, -1, np.int64)
    group_class[group] = klass  # one class per group: unions join facing pixels of one class
    keep = np.isin(group_class, list(classes)) & (group_area >= min_area_pixels)
    keep[group[0]] = False
    kept = np.flatnonzero(keep)
    rank = np.zeros(groups, np.uint32)
    rank[kept[np.argsort(group_first[kept])]] = np.arange(1, len(kept) + 1, dtype=np.uint32)
    return rank[group]


def relabel_block(ids: np.ndarray, offset: int, table: np.ndarray) -> np.ndarray:
    """A block's component ids (``block_components``) as canonical instance ids (uint32)."""
    provisional = np.where(ids > 0, ids.astype(np.int64) + offset, 0)
    return table[provisional]


def table_from_seams(folder: str, facts: Iterable[BlockFacts], *, classes: Collection[int],
                     min_area_pixels: int = 0) -> tuple[dict[tuple[int, int], int], np.ndarray]:
    """(offset per block, :func:`canonical_table`) from a seam join written under ``folder``."""
    offsets, pairs = read_seams(folder)
    return offsets, canonical_table(facts, offsets, pairs, classes=classes,
                                    min_area_pixels=min_area_pixels)
