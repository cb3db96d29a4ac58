"""The streaming seam join: its union pairs give the whole image's components; its memory is
one row of blocks.

Oracles: ``scipy.ndimage.label`` (4-connectivity) on the whole label image, and
``scipy.sparse.csgraph.connected_components`` over the join's union pairs (not the join's own
union-find).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from segpipe.pipeline.objects import BlockObjects, Edges, block_components
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.seamjoin import SeamJoin, read_seams
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.workdir import WorkDir
from tests.conftest import write_geotiff
from tests.pipeline.labelmodel import argmax_model, blobs, one_hot
from tests.pipeline.test_objects import CROSS, NODATA, serpentine


def cut(labels: np.ndarray, side: int):
    """(block, global-id-less component ids) per ``side``-px block, in raster order."""
    for bi, r0 in enumerate(range(0, labels.shape[0], side)):
        for bj, c0 in enumerate(range(0, labels.shape[1], side)):
            counts, ids = block_components(labels[r0:r0 + side, c0:c0 + side], NODATA)
            yield BlockObjects((bi, bj), counts, Edges.of(ids)), (r0, c0), ids


def provisional_image(labels: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, SeamJoin]:
    """Every pixel's provisional global id (offset + local id), the union pairs, the join."""
    unions: list[np.ndarray] = []
    join = SeamJoin(sink=unions.append)
    image = np.zeros(labels.shape, np.int64)
    for block, (r0, c0), ids in cut(labels, side):
        join.add(block)
        h, w = ids.shape
        image[r0:r0 + h, c0:c0 + w] = np.where(ids > 0, ids.astype(np.int64) + join.offsets[
            block.index], 0)
    join.finish()
    pairs = np.concatenate(unions) if unions else np.zeros((0, 2), np.int64)
    return image, pairs, join


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two id images (0 = background in both) split the pixels into the same sets."""
    fg = a > 0
    if not np.array_equal(fg, b > 0):
        return False
    pairs = np.unique(np.stack([a[fg], b[fg]], axis=1), axis=0)
    return len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))


def joined_ids(image: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """One id per group of provisional ids linked by the union pairs (scipy's components)."""
    n = int(image.max()) + 1
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    return np.where(image > 0, group[image] + 1, 0)


def whole_components(labels: np.ndarray, classes: int) -> np.ndarray:
    """The oracle: each class labelled on the whole image, ids made distinct across classes."""
    whole = np.zeros(labels.shape, np.int64)
    for k in range(classes):
        ids, _ = ndimage.label(labels == k, structure=CROSS)
        whole[ids > 0] = ids[ids > 0] + whole.max()
    return whole


@pytest.mark.parametrize("seed", range(8))
def test_union_pairs_over_provisional_ids_give_the_whole_image_components(seed):
    rng = np.random.default_rng(100 + seed)
    h, w = (int(x) for x in rng.integers(8, 80, 2))
    classes = int(rng.integers(2, 5))
    labels = blobs((h, w), classes, seed, sigma=float(rng.uniform(0.5, 4)))
    labels[rng.random((h, w)) < 0.03] = NODATA
    image, pairs, _ = provisional_image(labels, int(rng.integers(2, 20)))
    assert same_partition(joined_ids(image, pairs), whole_components(labels, classes))


def test_the_snake_is_one_object_from_its_union_pairs():
    labels = serpentine(33, 29)
    image, pairs, join = provisional_image(labels, 4)
    assert join.finish()[1] == 1
    assert len(np.unique(joined_ids(image, pairs)[labels == 1])) == 1


def test_the_frontier_grows_with_the_width_not_the_height():
    """Noise labels (every seam pixel its own component): nodes held stay one row of blocks."""
    rng = np.random.default_rng(7)
    peaks = {}
    for height in (128, 1024):
        labels = rng.integers(0, 2, (height, 256)).astype(np.uint8)
        _, _, join = provisional_image(labels, 32)
        peaks[height] = join.peak_nodes
    assert peaks[1024] <= 1.25 * peaks[128], peaks
    # and a row of blocks' seams bound it: 2 edges of 256 px plus the vertical seams of a row
    assert peaks[1024] <= 2 * 256 + 8 * 32 * 2, peaks


def test_blocks_out_of_raster_order_are_refused():
    labels = np.zeros((8, 8), np.uint8)
    blocks = [b for b, _, _ in cut(labels, 4)]
    join = SeamJoin()
    join.add(blocks[1])
    with pytest.raises(ValueError, match="raster order"):
        join.add(blocks[0])


def test_a_run_writes_the_seam_join_that_gives_one_id_per_object(tmp_path):
    """The work directory's block offsets and union pairs, applied to each block's components
    of the written labels, give the whole image's 4-connected components per class."""
    classes = 3
    labels = blobs((70, 90), classes, seed=5, sigma=2.0)
    src = write_geotiff(tmp_path / "in.tif", one_hot(labels, classes, None), nodata=None)
    model = argmax_model(tmp_path / "m.pt2", classes)
    out, workdir = tmp_path / "out.tif", tmp_path / "wd"
    run_one(RunOptions.of(str(src), str(out), model=str(model), tile=16, block_pixels=32,
                          device="cpu", workdir=str(workdir), keep_workdir=True))
    with rasterio.open(out) as ds:
        written = ds.read(1)
    offsets, pairs = read_seams(WorkDir(str(workdir)).seams)
    assert len(offsets) == 9 and len(pairs) > 10
    image = np.zeros(written.shape, np.int64)
    for (bi, bj), offset in offsets.items():
        r0, c0 = bi * 32, bj * 32
        _, ids = block_components(written[r0:r0 + 32, c0:c0 + 32], NODATA)
        image[r0:r0 + 32, c0:c0 + 32] = np.where(ids > 0, ids.astype(np.int64) + offset, 0)
    assert same_partition(joined_ids(image, pairs), whole_components(written, classes))
