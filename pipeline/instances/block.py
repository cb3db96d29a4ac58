"""The instances of one block, from its core labels plus a halo, kept by the block owning them.

A block reads its core grown by a halo of ``max_diameter`` pixels on each side (clipped at the
image border) and finds the objects of the chosen classes in that whole read window: the
4-connected components of each class, or with ``separate`` the pieces of a watershed of each
class's foreground on its Euclidean distance transform (or on the model's probability of the
class, where given), seeded by its maxima at least ``min_distance`` pixels apart, each clump
(4-connected component of a class) split on its own in its bounding box (:func:`separate_class`
says why), a clump left without a seed staying one object. Objects under ``min_area_pixels``
are then dropped. The reference a tiled run equals is this same computation on the whole
image in one piece.

Ownership: an object belongs to the block whose core holds its *anchor*, its first pixel in
raster order in image coordinates. The anchor depends on the object only, not on how the image
is cut, so every object is kept by exactly one block; its pixels may extend into the halo (they
are returned with the block, in image coordinates, for a writer to paint).

The contract, "objects smaller than the halo": the distance transform and the seeds of a clump
(a 4-connected component of one class before separation) depend on the whole clump, so a block
sees a kept object exactly as the whole image does when the clump fits in a ``max_diameter`` ×
``max_diameter`` box: from an anchor in the core such a clump, and the background pixels around
it, lie inside the read window. A clump reaching an inner border of the read window (one that is
not the image border) may be cut; the objects kept from it are flagged ``clipped`` (they may be
wrong, duplicated or partial: the clump is larger than the halo). Plain components of any size
are exact through :mod:`segpipe.pipeline.instances.relabel` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, find_objects
from skimage.feature import peak_local_max
from skimage.measure import label as label_regions
from skimage.segmentation import watershed

from segpipe.models.foundation import InputError
from segpipe.pipeline.instances.options import InstanceOptions
from segpipe.pipeline.tiling import Window

__all__ = ["BlockInstances", "BlockWindow", "block_instances", "separate_class",
           "window_objects"]


@dataclass(frozen=True)
class BlockWindow:
    """A block's core, the window read around it (core + halo, clipped) and the image size."""

    core: Window
    read: Window
    image: tuple[int, int]

    @classmethod
    def around(cls, core: Window, halo: int, image: tuple[int, int]) -> BlockWindow:
        """``core`` grown by ``halo`` on each side and clipped at the ``image`` (height, width)."""
        read = core.grow(halo, halo, halo, halo).intersection(Window(0, 0, *image))
        inside = core.intersection(Window(0, 0, *image))
        if read is None or inside != core:
            raise InputError(f"block core {core} is not inside the {image[0]}x{image[1]} image")
        return cls(core, read, image)

    def inner_border(self) -> np.ndarray:
        """A read-window mask of its edge pixels that are not on the image border."""
        border = np.zeros((self.read.height, self.read.width), bool)
        if self.read.row > 0:
            border[0] = True
        if self.read.col > 0:
            border[:, 0] = True
        if self.read.row_stop < self.image[0]:
            border[-1] = True
        if self.read.col_stop < self.image[1]:
            border[:, -1] = True
        return border


@dataclass(frozen=True)
class BlockInstances:
    """The objects a block owns, as a label image of its read window.

    ``ids``: uint32 over the read window (its top-left pixel is image pixel ``origin``), 0 or the
    local id ``1 … count`` of an owned object, local ids in raster order of the anchors (so the
    canonical global id of local id ``i`` is the rank of ``anchors[i - 1]`` over the image).
    ``anchors``: (count, 2) image (row, col) of each object's first pixel; ``classes``: each
    object's class; ``clipped``: objects whose clump reaches an inner border of the read window
    (larger than the halo: may be wrong).
    """

    origin: tuple[int, int]
    ids: np.ndarray
    anchors: np.ndarray
    classes: np.ndarray
    clipped: np.ndarray

    @property
    def count(self) -> int:
        """Number of objects the block owns."""
        return len(self.anchors)

    def pixels(self, local_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (rows, cols) of the object with local id ``local_id`` (1 … count)."""
        rows, cols = np.nonzero(self.ids == local_id)
        return rows + self.origin[0], cols + self.origin[1]


def separate_class(mask: np.ndarray, min_distance: int,
                   elevation: np.ndarray | None = None) -> np.ndarray:
    """Touching objects of one class's foreground split: int64 ids 1 … n, 0 off the mask.

    Each clump (4-connected component of ``mask``) is split on its own, in its bounding box:
    its seeds are the maxima of the distance transform at least ``min_distance`` apart (absolute
    threshold 0, no border exclusion), and the watershed floods from them inside the clump. On
    its own, because scikit-image's watershed breaks ties of equal height by the order of its
    queue, which holds every clump of the array at once: flooding a window's clumps together
    would let the clumps around an object (which differ between a block and the whole image)
    decide its tie pixels. A clump left without a seed stays one object.

    ``elevation`` (the model's probability of the class, say; positive on the mask) replaces
    the distance transform as the surface whose maxima seed and whose basins split.
    """
    clumps = label_regions(mask, connectivity=1)
    distance = distance_transform_edt(mask) if elevation is None else elevation
    out = np.zeros(mask.shape, np.int64)
    n = 0
    for i, box in enumerate(find_objects(clumps), start=1):
        if box is None:
            continue
        pieces = _split_clump(clumps[box] == i, distance[box], min_distance)
        out[box][pieces > 0] = pieces[pieces > 0] + n
        n += int(pieces.max())
    return out


def _split_clump(clump: np.ndarray, distance: np.ndarray, min_distance: int) -> np.ndarray:
    """One clump's pieces (ids 1 … n) in its bounding box."""
    peaks = peak_local_max(distance, min_distance=min_distance, threshold_abs=0.0,
                           exclude_border=False, labels=clump.astype(np.int64))
    if len(peaks) < 2:
        return clump.astype(np.int64)
    markers = np.zeros(clump.shape, np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    pieces = watershed(-distance, markers, mask=clump, connectivity=1).astype(np.int64)
    unseeded = label_regions(clump & (pieces == 0), connectivity=1).astype(np.int64)
    return np.where(unseeded > 0, unseeded + len(peaks), pieces)


def window_objects(labels: np.ndarray, options: InstanceOptions,
                   probabilities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every object of ``labels`` (ids 1 … n, int64; ids grouped by class) and each one's class.

    Objects under ``options.min_area_pixels`` are set to 0 (their ids stay unused).
    ``probabilities`` (classes, h, w), indexed by class value, are the watershed's surface when
    given (:func:`separate_class`).
    """
    ids = np.zeros(labels.shape, np.int64)
    classes: list[np.ndarray] = []
    n = 0
    for k in options.classes:
        mask = labels == k
        if options.separate:
            surface = None if probabilities is None else probabilities[k]
            found = separate_class(mask, options.min_distance, surface)
        else:
            found = label_regions(mask, connectivity=1).astype(np.int64)
        count = int(found.max(initial=0))
        ids[found > 0] = found[found > 0] + n
        classes.append(np.full(count, k, np.int64))
        n += count
    if options.min_area_pixels > 0:
        small = np.bincount(ids.ravel(), minlength=n + 1) < options.min_area_pixels
        small[0] = False
        ids[small[ids]] = 0
    return ids, np.concatenate([np.zeros(1, np.int64), *classes])


def block_instances(labels: np.ndarray, window: BlockWindow, options: InstanceOptions,
                    probabilities: np.ndarray | None = None) -> BlockInstances:
    """The objects of the block ``window`` whose anchor lies in its core.

    ``labels`` is the label image of ``window.read`` (core + halo of ``options.max_diameter``
    pixels, clipped at the image border: :meth:`BlockWindow.around`); ``probabilities``, when
    the model gives them, (classes, h, w) over the same window: the watershed's surface.
    """
    if labels.shape != (window.read.height, window.read.width):
        raise InputError(f"labels of shape {labels.shape} do not cover the read window "
                         f"{window.read}")
    if probabilities is not None and probabilities.shape[1:] != labels.shape:
        raise InputError(f"probabilities of shape {probabilities.shape} do not match the "
                         f"labels' {labels.shape}")
    ids, classes = window_objects(labels, options, probabilities)
    found, first = np.unique(ids.ravel(), return_index=True)
    found, first = found[found > 0], first[found > 0]
    rows, cols = np.divmod(first, labels.shape[1])
    rows, cols = rows + window.read.row, cols + window.read.col
    core = window.core
    own = ((rows >= core.row) & (rows < core.row_stop)
           & (cols >= core.col) & (cols < core.col_stop))
    order = np.argsort(first[own], kind="stable")  # raster order of the anchors in the window
    kept = found[own][order]
    local = np.zeros(int(ids.max(initial=0)) + 1, np.uint32)
    local[kept] = np.arange(1, len(kept) + 1, dtype=np.uint32)
    local_ids = local[ids]
    return BlockInstances(
        origin=(window.read.row, window.read.col),
        ids=local_ids,
        anchors=np.stack([rows[own][order], cols[own][order]], axis=1).astype(np.int64),
        classes=classes[kept],
        clipped=_clipped(labels, local_ids, len(kept), window, options),
    )


def _clipped(labels: np.ndarray, local_ids: np.ndarray, count: int, window: BlockWindow,
             options: InstanceOptions) -> np.ndarray:
    """Which kept objects' clumps (components of their class) reach an inner window border."""
    border = window.inner_border()
    flagged = np.zeros(count + 1, bool)
    if not border.any() or count == 0:
        return flagged[1:]
    chosen = np.isin(labels, options.classes)
    classes = np.where(chosen, labels.astype(np.int64) + 1, 0)  # class 0 may be chosen
    clumps = label_regions(classes, background=0, connectivity=1)
    cut = np.isin(clumps, np.unique(clumps[border & (clumps > 0)]))
    flagged[np.unique(local_ids[cut])] = True
    return flagged[1:]
