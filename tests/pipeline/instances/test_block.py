"""Instances block by block (core + halo, anchor ownership) equal the whole image in one piece.

Oracle: ``tests.pipeline.instances.synthetic.oracle_instances`` (scikit-image and scipy on the
whole image, numbered in raster order of first pixels by a loop over the pixels).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from segpipe.models.foundation import InputError
from segpipe.pipeline.instances.block import BlockWindow, block_instances
from segpipe.pipeline.instances.canonical import global_ids
from segpipe.pipeline.instances.options import InstanceOptions
from segpipe.pipeline.tiling import Window
from tests.pipeline.instances.synthetic import disks, oracle_instances, tiles


def tiled(labels: np.ndarray, side: int, options: InstanceOptions, probabilities=None):
    """The mosaic of every block's owned objects under global ids, and the blocks."""
    found = []
    for _, core in tiles(labels.shape, side):
        window = BlockWindow.around(core, options.max_diameter, labels.shape)
        read = None if probabilities is None else probabilities[(slice(None), *window.read.slices)]
        found.append(block_instances(labels[window.read.slices], window, options, read))
    ids = global_ids([b.anchors for b in found])
    mosaic = np.zeros(labels.shape, np.int64)
    painted = np.zeros(labels.shape, np.int64)
    for block, gid in zip(found, ids):
        h, w = block.ids.shape
        r0, c0 = block.origin
        own = block.ids > 0
        mosaic[r0:r0 + h, c0:c0 + w][own] = gid[block.ids[own].astype(np.int64) - 1]
        painted[r0:r0 + h, c0:c0 + w] += own
    assert painted.max() <= 1, "an object was kept by two blocks"
    return mosaic, found


@pytest.mark.parametrize(("seed", "side"), [(0, 9), (1, 16), (2, 23), (3, 40)])
def test_separated_instances_of_blocks_equal_the_whole_image(seed, side):
    labels = disks((90, 117), seed, count=14, radius=(3, 7), classes=2)
    options = InstanceOptions(classes=(1, 2), min_distance=3, min_area_pixels=6,
                              max_diameter=32, separate=True)
    mosaic, blocks = tiled(labels, side, options)
    expected = oracle_instances(labels, (1, 2), separate=True, min_distance=3, min_area=6)
    np.testing.assert_array_equal(mosaic, expected)
    assert not any(b.clipped.any() for b in blocks)
    # and the separation did split clumps: more instances than 4-connected components
    plain = oracle_instances(labels, (1, 2), separate=False, min_area=6)
    assert expected.max() > plain.max()


@pytest.mark.parametrize("side", [10, 33])
def test_a_probability_surface_splits_block_by_block_as_on_the_whole_image(side):
    labels = disks((72, 88), 6, count=12, radius=(3, 7), classes=2)
    rng = np.random.default_rng(6)
    probabilities = gaussian_filter(rng.random((3, *labels.shape)), (0, 2, 2)) + 0.01
    options = InstanceOptions(classes=(1, 2), min_distance=2, max_diameter=32)
    mosaic, _ = tiled(labels, side, options, probabilities)
    expected = oracle_instances(labels, (1, 2), separate=True, min_distance=2,
                                elevation=probabilities)
    np.testing.assert_array_equal(mosaic, expected)
    distance, _ = tiled(labels, side, options)
    assert not np.array_equal(mosaic, distance)  # the surface did make a difference


@pytest.mark.parametrize("side", [7, 20])
def test_plain_components_of_blocks_equal_the_whole_image(side):
    labels = disks((64, 80), 5, count=10, radius=(2, 6), classes=3)
    options = InstanceOptions(classes=(1, 3), max_diameter=30, separate=False)
    mosaic, _ = tiled(labels, side, options)
    np.testing.assert_array_equal(mosaic, oracle_instances(labels, (1, 3), separate=False))


def test_anchors_classes_and_pixels_describe_the_kept_objects():
    labels = disks((50, 50), 8, count=5, radius=(3, 5), classes=2)
    options = InstanceOptions(classes=(1, 2), max_diameter=20, separate=False)
    mosaic, blocks = tiled(labels, 25, options)
    for block in blocks:
        for i in range(1, block.count + 1):
            rows, cols = block.pixels(i)
            anchor = block.anchors[i - 1]
            first = np.lexsort((cols, rows))[0]
            assert (rows[first], cols[first]) == tuple(anchor)
            assert set(labels[rows, cols].tolist()) == {int(block.classes[i - 1])}
            assert len(np.unique(mosaic[rows, cols])) == 1


def test_a_clump_larger_than_the_halo_is_flagged():
    labels = np.zeros((40, 60), np.uint8)
    labels[10:14, 2:58] = 1  # a bar 56 px long, halo 8
    labels[30:34, 30:34] = 1  # a small square well inside
    options = InstanceOptions(classes=(1,), max_diameter=8, separate=False)
    _, blocks = tiled(labels, 20, options)
    flagged = {tuple(a) for b in blocks for a, c in zip(b.anchors, b.clipped) if c}
    unflagged = {tuple(a) for b in blocks for a, c in zip(b.anchors, b.clipped) if not c}
    assert (10, 2) in flagged
    assert (30, 30) in unflagged


def test_bad_options_and_windows_are_refused():
    with pytest.raises(InputError, match="min distance"):
        InstanceOptions(classes=(1,), min_distance=0)
    with pytest.raises(InputError, match="at least one class"):
        InstanceOptions(classes=())
    with pytest.raises(InputError, match="not inside"):
        BlockWindow.around(Window(0, 0, 20, 20), 4, (10, 10))
    window = BlockWindow.around(Window(0, 0, 10, 10), 4, (30, 30))
    with pytest.raises(InputError, match="read window"):
        block_instances(np.zeros((10, 10), np.uint8), window, InstanceOptions(classes=(1,)))
    with pytest.raises(InputError, match="probabilities"):
        block_instances(np.zeros((14, 14), np.uint8), window, InstanceOptions(classes=(1,)),
                        np.zeros((2, 10, 14)))
