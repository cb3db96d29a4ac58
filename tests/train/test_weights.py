"""Loss weights: inverse class frequency and the U-Net border weight, against brute force."""

from __future__ import annotations

import numpy as np

from segpipe.pipeline.train.weights import border_weights, class_weights, pixel_weights


def touching_discs(size: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    instances = np.zeros((size, size), np.int32)
    instances[(yy - 20) ** 2 + (xx - 12) ** 2 <= 64] = 1   # radius 8 at (20, 12)
    instances[(yy - 20) ** 2 + (xx - 28) ** 2 <= 64] = 2   # radius 8 at (20, 28): they touch
    instances[(yy - 4) ** 2 + (xx - 36) ** 2 <= 4] = 3     # a small third one
    return instances


def brute_force(instances: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """For every pixel, the Euclidean distance to every pixel of each instance; two smallest."""
    pixels = np.argwhere(np.ones(instances.shape, bool)).astype(np.float64)
    per_instance = []
    for k in np.unique(instances[instances > 0]):
        members = np.argwhere(instances == k).astype(np.float64)
        d = np.sqrt(((pixels[:, None, :] - members[None, :, :]) ** 2).sum(-1)).min(1)
        per_instance.append(d)
    d = np.sort(np.stack(per_instance), axis=0)
    return (w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))).reshape(instances.shape)


def test_border_weight_matches_the_formula_on_touching_discs():
    instances = touching_discs()
    got = border_weights(instances, 10.0, 5.0)
    expected = brute_force(instances, 10.0, 5.0)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # between the discs (the gap at column 20) the weight is near w0; far away near 0
    assert got[20, 20] > 9.0 and got[39, 0] < 1e-3


def test_border_weight_needs_two_instances():
    one = np.zeros((10, 10), np.int32)
    one[2:5, 2:5] = 7
    assert not border_weights(one, 10.0, 5.0).any()


def test_class_weights_are_inverse_frequencies():
    counts = np.array([600, 300, 0, 100])
    w = class_weights(counts)
    # N / (K_present * n_c): 1000 / (3 * n_c); an absent class weighs 0
    np.testing.assert_allclose(w, [1000 / 1800, 1000 / 900, 0, 1000 / 300])
    assert np.isclose((w * counts).sum(), counts.sum())  # total weight is unchanged


def test_pixel_weights_zero_where_unlabelled():
    classes = np.array([[0, 1], [-1, 1]])
    border = np.array([[0.5, 0.0], [2.0, 1.0]])
    w = pixel_weights(classes, np.array([2.0, 3.0]), border)
    np.testing.assert_allclose(w, [[2.5, 3.0], [0.0, 4.0]])
