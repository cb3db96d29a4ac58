"""Objects per class, merged across block seams without a second pass over the labels.

The oracle is ``scipy.ndimage.label`` (4-connectivity) on the whole label image, and the number
of polygons ``rasterio.features.shapes`` (GDAL's polygonize, 4-connected by default) makes of it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import rasterio.features
from scipy import ndimage

from segpipe.models.foundation import ResumeError
from segpipe.pipeline.objects import BlockObjects, Edges, block_components, count_objects
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.segment import LabelSummaries
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.workdir import FORMAT, BlockRecord, WorkDir
from tests.conftest import write_geotiff
from tests.pipeline.labelmodel import argmax_model, blobs, one_hot

NODATA = 255
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])  # 4-connectivity, written out


def whole_image_objects(labels: np.ndarray, classes: int) -> list[int]:
    return [ndimage.label(labels == k, structure=CROSS)[1] for k in range(classes)]


def objects_by_blocks(labels: np.ndarray, side: int) -> dict[int, int]:
    """Cut ``labels`` into ``side``-px blocks, summarize each as a marker would, and merge."""
    blocks = []
    for bi, r0 in enumerate(range(0, labels.shape[0], side)):
        for bj, c0 in enumerate(range(0, labels.shape[1], side)):
            s = LabelSummaries.of(labels[r0 : r0 + side, c0 : c0 + side], NODATA, rows=False)
            record = BlockRecord(f"{bi}_{bj}", 0, {}, 0.0, "w", 0, "r", shape=s.shape,
                                 components=s.components, edges=s.edges)
            record = BlockRecord.from_json(record.to_json())  # as read back from the marker
            edges = Edges.split(record.edge_ids(), *record.shape)
            blocks.append(BlockObjects(record.index, record.components, edges))
    return count_objects(blocks)


def serpentine(h: int, w: int) -> np.ndarray:
    """A 1-px-wide snake of class 1 on class 0, crossing every vertical seam on every pass."""
    out = np.zeros((h, w), np.uint8)
    out[::2] = 1  # full rows 0, 2, 4, …
    for i, r in enumerate(range(1, h, 2)):
        out[r, w - 1 if i % 2 == 0 else 0] = 1  # joined at the right, then the left end, …
    return out


@pytest.mark.parametrize("seed", range(12))
def test_merged_block_components_equal_whole_image_labelling(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(x) for x in rng.integers(5, 90, 2))
    classes = int(rng.integers(1, 5))
    labels = blobs((h, w), classes, seed, sigma=float(rng.uniform(0.5, 4)))
    labels[rng.random((h, w)) < 0.04] = NODATA  # nodata specks cut regions and seams
    side = int(rng.integers(1, 24))
    got = objects_by_blocks(labels, side)
    assert [got.get(k, 0) for k in range(classes)] == whole_image_objects(labels, classes)


def test_a_snake_and_diagonal_touches_across_block_corners():
    labels = serpentine(41, 37)
    assert whole_image_objects(labels, 2) == [20, 1]  # one snake; class 0 in 20 strips
    for side in (3, 4, 7, 10):
        got = objects_by_blocks(labels, side)
        assert [got[0], got[1]] == [20, 1]
    # a checkerboard touches only at corners: every square is its own object (4-connectivity)
    board = (np.indices((12, 12)).sum(axis=0) % 2).astype(np.uint8)
    assert objects_by_blocks(board, 3) == {0: 72, 1: 72}


def test_component_ids_run_through_the_classes_in_order():
    labels = np.array([[2, 0, 2], [0, 0, NODATA], [1, 2, 1]], np.uint8)
    counts, ids = block_components(labels, NODATA)
    assert counts == {0: 1, 1: 2, 2: 3}
    assert ids[1, 2] == 0  # nodata
    assert set(np.unique(ids[labels == 0])) == {1}  # class 0: id 1
    assert set(np.unique(ids[labels == 1])) == {2, 3}  # class 1: ids 2, 3
    assert set(np.unique(ids[labels == 2])) == {4, 5, 6}


def test_run_with_small_blocks_counts_objects_across_seams(tmp_path):
    classes = 3
    labels = blobs((70, 90), classes, seed=5, sigma=2.0)
    nodata = np.zeros(labels.shape, bool)
    nodata[30:33, :] = True  # a nodata band cuts regions in two
    src = write_geotiff(tmp_path / "in.tif", one_hot(labels, classes, nodata), nodata=0)
    model = argmax_model(tmp_path / "m.pt2", classes)
    out = tmp_path / "out.tif"
    # 16-px tiles in blocks of 2×2 tiles: 3 × 3 blocks, seams every 32 px
    summary = run_one(RunOptions.of(str(src), str(out), model=str(model), tile=16,
                                    block_pixels=32, device="cpu"))
    assert summary["blocks"] == 9
    with rasterio.open(out) as ds:
        written = ds.read(1)
    expected = whole_image_objects(written, classes)
    assert [c["objects"] for c in summary["classes"]] == expected
    # many objects cross a seam: counting per block would give more
    per_block = sum(
        ndimage.label(written[r : r + 32, c : c + 32] == k, structure=CROSS)[1]
        for k in range(classes) for r in range(0, 70, 32) for c in range(0, 90, 32)
    )
    assert per_block > sum(expected) + 10
    # as many objects as GDAL's polygonize makes polygons (what --vectors writes)
    shapes = [v for _, v in rasterio.features.shapes(written, mask=written != NODATA)]
    assert [shapes.count(k) for k in range(classes)] == expected


def test_a_work_directory_of_an_older_format_is_refused_with_a_clear_message(tmp_path):
    workdir = WorkDir(str(tmp_path / "wd"))
    (tmp_path / "wd").mkdir()
    (tmp_path / "wd" / "manifest.json").write_text(json.dumps({"format": FORMAT - 1}))
    with pytest.raises(ResumeError, match=f"format {FORMAT - 1}.*remove the work directory"):
        workdir.load()


def test_marker_of_a_2048_px_block_stays_small():
    rng = np.random.default_rng(0)
    labels = blobs((2048, 2048), 5, seed=1, sigma=3.0)
    labels[rng.random(labels.shape) < 0.001] = NODATA
    s = LabelSummaries.of(labels, NODATA, rows=True)
    record = BlockRecord("0_0", labels.size, {}, 0.0, "w", 0, "r", shape=s.shape,
                         components=s.components, edges=s.edges, row_classes=s.row_classes,
                         row_counts=s.row_counts)
    text = record.to_json()
    assert len(text) < 64_000  # 8192 edge ids and 5 × 2048 row counts, packed
    back = BlockRecord.from_json(text)
    np.testing.assert_array_equal(back.row_table(), [(labels == k).sum(axis=1) for k in range(5)])
