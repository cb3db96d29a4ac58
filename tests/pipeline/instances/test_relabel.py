"""Plain components relabelled from segpipe's own seam join equal the whole image's components.

Per block: ``block_components`` and the seam join (``join_blocks``, its union pairs written by
``SeamWriter`` and read back by ``read_seams``), as a run writes them. Oracle:
``skimage.measure.label(connectivity=1)`` of each class on the whole image, small objects
dropped and ids numbered by a pixel loop (``synthetic.oracle_canonical``).
"""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.pipeline.instances.relabel import (
    block_facts,
    canonical_table,
    relabel_block,
    table_from_seams,
)
from segpipe.pipeline.objects import BlockObjects, Edges, block_components
from segpipe.pipeline.seamjoin import SeamWriter, join_blocks
from tests.pipeline.instances.synthetic import disks, oracle_instances, tiles

NODATA = 255


def big_objects(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Disks plus objects far larger than a block: a comb, a ring, a long diagonal band."""
    labels = disks(shape, seed, count=12, radius=(2, 9), classes=2)
    h, w = shape
    labels[2:4, 1 : w - 1] = 1  # the comb's spine, teeth every 6 columns
    labels[2 : h // 2, 1 : w - 1 : 6] = 1
    rows, cols = np.mgrid[:h, :w]
    ring = np.abs(np.hypot(rows - h * 0.6, cols - w * 0.5) - min(h, w) * 0.3) < 1.5
    labels[ring] = 2
    labels[np.abs(rows - cols) < 1] = 1
    labels[rows == h - 1] = NODATA  # a nodata row: joins nothing
    return labels


def relabelled(labels: np.ndarray, side: int, folder: str, *, classes, min_area: int):
    per_block = {}
    for index, core in tiles(labels.shape, side):
        counts, ids = block_components(labels[core.slices], NODATA)
        per_block[index] = (core, counts, ids)
    objects = [BlockObjects(i, c, Edges.of(ids)) for i, (_, c, ids) in per_block.items()]
    writer = SeamWriter(folder)
    join = join_blocks(objects, sink=writer)
    join.finish()  # flushes the last union pairs to the writer
    writer.finish(join)
    facts = [block_facts(i, ids, counts, (core.row, core.col), labels.shape[1])
             for i, (core, counts, ids) in per_block.items()]
    offsets, table = table_from_seams(folder, facts, classes=classes, min_area_pixels=min_area)
    mosaic = np.zeros(labels.shape, np.int64)
    for index, (core, _, ids) in per_block.items():
        mosaic[core.slices] = relabel_block(ids, offsets[index], table)
    return mosaic


@pytest.mark.parametrize(("seed", "side", "min_area"), [(0, 5, 0), (1, 8, 10), (2, 13, 0),
                                                         (3, 32, 25), (4, 100, 0)])
def test_relabelled_blocks_equal_the_whole_image_components(tmp_path, seed, side, min_area):
    labels = big_objects((61, 77), seed)
    mosaic = relabelled(labels, side, str(tmp_path / "seams"), classes=(1, 2),
                        min_area=min_area)
    expected = oracle_instances(labels, (1, 2), separate=False, min_area=min_area)
    np.testing.assert_array_equal(mosaic, expected)
    assert expected.max() > 5


def test_classes_not_chosen_get_no_ids(tmp_path):
    labels = big_objects((40, 50), 9)
    mosaic = relabelled(labels, 7, str(tmp_path / "seams"), classes=(2,), min_area=0)
    assert not mosaic[labels != 2].any()
    np.testing.assert_array_equal(mosaic, oracle_instances(labels, (2,), separate=False))


def test_the_table_maps_provisional_ids_without_files():
    """Two blocks side by side, one bar across the seam: one object, id 1; the dot is id 2."""
    labels = np.zeros((4, 8), np.uint8)
    labels[1, 1:7] = 1
    labels[3, 6] = 1
    left, right = block_components(labels[:, :4], NODATA), block_components(labels[:, 4:], NODATA)
    join = join_blocks([BlockObjects((0, 0), left[0], Edges.of(left[1])),
                        BlockObjects((0, 1), right[0], Edges.of(right[1]))])
    pairs: list[tuple[int, int]] = [(join.offsets[0, 0] + 2, join.offsets[0, 1] + 2)]
    facts = [block_facts((0, 0), left[1], left[0], (0, 0), 8),
             block_facts((0, 1), right[1], right[0], (0, 4), 8)]
    table = canonical_table(facts, join.offsets, np.array(pairs), classes=(1,))
    out = np.concatenate([relabel_block(left[1], join.offsets[0, 0], table),
                          relabel_block(right[1], join.offsets[0, 1], table)], axis=1)
    expected = np.zeros((4, 8), np.uint32)
    expected[1, 1:7] = 1
    expected[3, 6] = 2
    np.testing.assert_array_equal(out, expected)
