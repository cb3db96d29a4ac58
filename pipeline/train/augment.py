"""Augmentation: flips and 90° rotations of image and labels, and a radiometric change.

The eight flips and rotations of the square apply to image and labels: the image window is
square and centred on the label window (the tile core), so one transform of the dihedral group
keeps them aligned. The radiometric change of strength ``a``, when asked for, applies to the
image alone: normalized pixels ``x`` of band ``b`` become ``gain_b · sign(x)|x|^γ + offset_b``
with ``gain_b`` in [1 − a, 1 + a], ``offset_b`` in ±a/10 and one ``γ`` in [1 − a/2, 1 + a/2]
per tile, so a model sees the same surface under other sensors, atmospheres and sun angles.
It draws nothing when ``a`` is 0, so training without it is unchanged.
"""

from __future__ import annotations

import numpy as np

__all__ = ["augment", "radiometric"]


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


def radiometric(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Per-band gain and offset and a gamma of strength ``strength`` on ``x`` (C, S, S)."""
    if strength <= 0:
        return x
    bands = x.shape[0]
    gain = np.asarray(rng.uniform(1 - strength, 1 + strength, bands), np.float32)[:, None, None]
    offset = np.asarray(rng.uniform(-strength / 10, strength / 10, bands), np.float32)
    offset = offset[:, None, None]
    gamma = np.float32(rng.uniform(1 - strength / 2, 1 + strength / 2))
    out = np.sign(x) * np.abs(x) ** gamma
    return (out * gain + offset).astype(np.float32)
