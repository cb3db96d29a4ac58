"""Loss weights per pixel: class balance plus the U-Net border weight.

``w(x) = w_c(x) + w0 · exp(−(d1(x) + d2(x))² / (2σ²))`` (Ronneberger et al. 2015, eq. 2), where
``w_c`` is the inverse frequency of the pixel's class among the labelled training pixels and
``d1``, ``d2`` are the distances to the nearest and second-nearest instance
(:func:`scipy.ndimage.distance_transform_edt` per instance; 0 inside an instance, so pixels at
an instance's edge next to another instance are weighted too, as the formula says). The border
term needs instances (vector features, or an instance raster) and at least two of them in view.
Unlabelled pixels weigh 0.

Tiles are weighted from the instances of the tile grown by :func:`border_context` pixels: an
instance farther away can only change a term already below ``w0 · exp(−12.5)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = ["border_context", "border_weights", "class_weights", "pixel_weights"]


def class_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights ``N / (K_present · n_c)``; 0 for classes with no pixel."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def border_context(sigma: float) -> int:
    """Pixels of context the border weight of a tile needs around it: ⌈5σ⌉."""
    return math.ceil(5 * sigma)


def border_weights(instances: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """``w0 · exp(−(d1 + d2)² / (2σ²))`` per pixel (0 where fewer than two instances)."""
    ids = np.unique(instances)
    ids = ids[ids > 0]
    out = np.zeros(instances.shape, np.float64)
    if w0 <= 0 or len(ids) < 2:
        return out
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    for k in ids:
        d = distance_transform_edt(instances != k)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    return w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))


def pixel_weights(
    classes: np.ndarray, per_class: np.ndarray, border: np.ndarray | None
) -> np.ndarray:
    """The loss weight of every pixel: class weight plus border term, 0 where unlabelled."""
    labelled = classes >= 0
    weights = np.where(labelled, per_class[np.where(labelled, classes, 0)], 0.0)
    if border is not None:
        weights = np.where(labelled, weights + border, 0.0)
    return weights.astype(np.float32)
