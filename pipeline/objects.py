"""Objects per class: 4-connected regions of one label, counted without a second pass.

Each block labels the components of its core, numbered class by class (:func:`block_components`),
and keeps only their number per class and the component ids along its four edges (:class:`Edges`).
The driver then joins components that touch across a shared block edge (same class, facing
pixels: 4-connectivity) and counts ``objects = components − merges`` (:func:`count_objects`,
streaming over the blocks in raster order with memory of one block row:
:mod:`segpipe.pipeline.seamjoin`).
Connectivity is 4 (edge neighbours), as ``rasterio.features.shapes`` polygonizes by default,
so a class's object count equals the number of its polygons.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from skimage.measure import label as label_regions

if TYPE_CHECKING:
    from segpipe.pipeline.workdir import BlockRecord

__all__ = ["BlockObjects", "Edges", "block_components", "count_objects"]


@dataclass(frozen=True)
class Edges:
    """Component ids (0 = nodata) along the four edges of a block's core."""

    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray

    @classmethod
    def of(cls, ids: np.ndarray) -> Edges:
        """The edges of a block's component-id image."""
        return cls(ids[0].copy(), ids[-1].copy(), ids[:, 0].copy(), ids[:, -1].copy())

    def concatenated(self) -> np.ndarray:
        """Top, bottom, left, right in one array (``2·(h + w)`` ids)."""
        return np.concatenate([self.top, self.bottom, self.left, self.right])

    @classmethod
    def split(cls, flat: np.ndarray, height: int, width: int) -> Edges:
        """Inverse of :meth:`concatenated` for a ``height`` × ``width`` core."""
        if flat.size != 2 * (height + width):
            raise ValueError(f"{flat.size} edge ids do not fit a {height}x{width} core")
        w2 = 2 * width
        return cls(flat[:width], flat[width:w2], flat[w2 : w2 + height], flat[w2 + height :])


def block_components(labels: np.ndarray, nodata: int) -> tuple[dict[int, int], np.ndarray]:
    """4-connected components of each class of a block: (count per class, component ids).

    Ids run from 1 through the classes in ascending order (class ``k``'s components follow those
    of every smaller class, each class's in raster order); nodata pixels get 0. One labelling
    pass over all classes (scikit-image's ``label`` joins equal neighbours), then the ids are
    renumbered class by class: the same ids as labelling each class on its own, twice as fast.
    """
    dtype = np.uint32 if labels.size < 2**32 else np.uint64
    ids, n = label_regions(labels, background=nodata, connectivity=1, return_num=True)
    if n == 0:
        return {}, np.zeros(labels.shape, dtype)
    classes = np.zeros(n + 1, np.int64)
    classes[ids.ravel()] = labels.ravel()  # a component's pixels share one class
    order = np.argsort(classes[1:], kind="stable")  # by class, raster order within a class
    renumber = np.zeros(n + 1, dtype)
    renumber[order + 1] = np.arange(1, n + 1, dtype=dtype)
    counts = np.bincount(classes[1:])
    return {int(k): int(c) for k, c in enumerate(counts) if c}, renumber[ids]


@dataclass(frozen=True)
class BlockObjects:
    """What the merge needs of one block: its place, its components per class, its edges."""

    index: tuple[int, int]
    components: Mapping[int, int]
    edges: Edges

    @classmethod
    def of_record(cls, record: BlockRecord) -> BlockObjects:
        """A finished block's objects, from its marker."""
        return cls(record.index, record.components, Edges.split(record.edge_ids(), *record.shape))

    def classes_of(self, ids: np.ndarray) -> np.ndarray:
        """The class of each component id (ids ≥ 1; see :func:`block_components`)."""
        labels = np.array(sorted(self.components), np.int64)
        ends = np.cumsum([self.components[k] for k in sorted(self.components)])
        return labels[np.searchsorted(ends, ids, side="left")]


def count_objects(blocks: Iterable[BlockObjects]) -> dict[int, int]:
    """Objects per class over all blocks: components, minus joins across shared block edges.

    Blocks are keyed by their index in the block grid; an absent block (one that failed, and is
    nodata) joins nothing. The join streams over the blocks in raster order
    (:mod:`segpipe.pipeline.seamjoin`).
    """
    from segpipe.pipeline.seamjoin import join_blocks

    return join_blocks(blocks).finish()
