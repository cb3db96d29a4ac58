"""Augmentation: the eight flips and 90° rotations of the square, applied to image and labels.

The image window is square and centred on the label window (the tile core), so one transform of
the dihedral group applies to both and keeps them aligned.
"""

from __future__ import annotations

import numpy as np

__all__ = ["augment"]


def augment(
    x: np.ndarray, targets: tuple[np.ndarray, ...], rng: np.random.Generator
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Rotate by a random multiple of 90° and maybe flip: ``x`` (C, S, S), targets (T, T)."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))

    def apply(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(-2, -1))
        return np.ascontiguousarray(a[..., ::-1] if flip else a)

    return apply(x), tuple(apply(t) for t in targets)
