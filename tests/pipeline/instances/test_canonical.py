"""Canonical ids: consecutive from 1 in raster order of first pixels (oracle: a pixel loop)."""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.pipeline.instances.canonical import canonical_ids, global_ids
from tests.pipeline.instances.synthetic import oracle_canonical


@pytest.mark.parametrize("seed", range(6))
def test_any_labelling_is_renumbered_as_the_pixel_loop_does(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (int(rng.integers(1, 30)), int(rng.integers(1, 30))))
    image = rng.permutation(1000)[image] * (rng.random(image.shape) < 0.7)  # sparse ids, gaps
    out = canonical_ids(image)
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, oracle_canonical(image))


def test_an_image_without_background_starts_at_one():
    np.testing.assert_array_equal(canonical_ids(np.array([[7, 7], [3, 9]])), [[1, 1], [2, 3]])


def test_global_ids_rank_the_anchors_over_every_block():
    rng = np.random.default_rng(3)
    pixels = rng.permutation(50 * 60)[:200]
    anchors = np.stack(np.divmod(pixels, 60), axis=1)
    blocks = np.split(anchors, [17, 90, 90, 150])  # an empty block too
    ids = np.concatenate(global_ids(blocks))
    expected = np.argsort(np.argsort(pixels)) + 1  # raster rank = rank of the linear index
    np.testing.assert_array_equal(ids, expected)
    assert global_ids([]) == []
