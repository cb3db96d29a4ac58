"""Deterministic label images of disks and ellipses (some touching) and the tests' oracles.

The oracles are written here from numpy, scipy and scikit-image directly, never through
``segpipe.pipeline.instances``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt
from skimage.feature import peak_local_max
from skimage.measure import label, regionprops
from skimage.segmentation import watershed

from segpipe.pipeline.tiling import Window


def disks(shape: tuple[int, int], seed: int, *, count: int, radius: tuple[float, float],
          classes: int = 2, pairs: bool = True) -> np.ndarray:
    """Ellipses of classes 1 … classes on class 0; with ``pairs`` each gets a touching twin."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint8)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    for _ in range(count):
        r0, c0 = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        a, b = rng.uniform(*radius, 2)
        k = int(rng.integers(1, classes + 1))
        centres = [(r0, c0)]
        if pairs:  # a twin overlapping a little: a clump the watershed should split
            angle = rng.uniform(0, np.pi)
            d = 1.6 * min(a, b)
            centres.append((r0 + d * np.sin(angle), c0 + d * np.cos(angle)))
        for r, c in centres:
            out[((rows - r) / a) ** 2 + ((cols - c) / b) ** 2 <= 1] = k
    return out


def tiles(shape: tuple[int, int], side: int):
    """Core windows of ``side``-px blocks in raster order, with their block index."""
    for bi, r0 in enumerate(range(0, shape[0], side)):
        for bj, c0 in enumerate(range(0, shape[1], side)):
            yield (bi, bj), Window(r0, c0, min(side, shape[0] - r0), min(side, shape[1] - c0))


def oracle_canonical(image: np.ndarray) -> np.ndarray:
    """Ids renumbered 1, 2, … in the order their first pixel is met scanning row by row."""
    flat = image.ravel()
    new: dict[int, int] = {}
    for value in flat[flat != 0].tolist():
        new.setdefault(value, len(new) + 1)
    return np.array([new.get(v, 0) for v in flat.tolist()], np.int64).reshape(image.shape)


def oracle_instances(labels: np.ndarray, classes: tuple[int, ...], *, separate: bool,
                     min_distance: int = 1, min_area: int = 0,
                     elevation: np.ndarray | None = None) -> np.ndarray:
    """The whole image in one piece: components (or watershed pieces) per class, canonical."""
    out = np.zeros(labels.shape, np.int64)
    for k in classes:
        mask = labels == k
        comps = label(mask, connectivity=1)
        if separate:  # each clump on its own, in its bounding box
            dist = distance_transform_edt(mask) if elevation is None else elevation[k]
            split = np.zeros(labels.shape, np.int64)
            for region in regionprops(comps):
                r0, c0, r1, c1 = region.bbox
                alone = region.image
                d = np.where(alone, dist[r0:r1, c0:c1], 0)
                seeds = peak_local_max(d, min_distance=min_distance, threshold_abs=0,
                                       exclude_border=False, labels=alone.astype(int))
                markers = np.zeros(alone.shape, np.int64)
                for i, (r, c) in enumerate(seeds):
                    markers[r, c] = i + 1
                pieces = watershed(-d, markers, mask=alone, connectivity=1)
                rest = label(alone & (pieces == 0), connectivity=1)
                pieces = np.where(rest > 0, rest + len(seeds), pieces)
                split[r0:r1, c0:c1][alone] = pieces[alone] + split.max()
            comps = split
        out[comps > 0] = comps[comps > 0] + out.max()
    if min_area:
        for value, n in zip(*np.unique(out[out > 0], return_counts=True)):
            if n < min_area:
                out[out == value] = 0
    return oracle_canonical(out)
