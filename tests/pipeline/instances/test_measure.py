"""Measurements block by block equal ``regionprops`` of the whole image's instances.

Oracle: ``skimage.measure.regionprops_table`` on the whole-image instance labels of
``synthetic.oracle_instances`` (scikit-image/scipy in one piece, ids by a pixel loop), with the
physical columns computed here from the affine's coefficients.
"""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from scipy.ndimage import gaussian_filter
from skimage.measure import regionprops_table

from segpipe.models.foundation import InputError
from segpipe.pipeline.instances.block import BlockWindow, block_instances
from segpipe.pipeline.instances.canonical import global_ids
from segpipe.pipeline.instances.measure import Scale, columns, measure_objects
from segpipe.pipeline.instances.options import InstanceOptions
from tests.pipeline.instances.synthetic import disks, oracle_instances, tiles

OPTIONS = InstanceOptions(classes=(1, 2), min_distance=3, min_area_pixels=8, max_diameter=30)
SCALE = Scale(pixel_area=0.25, transform=Affine(0.5, 0.0, 100.0, 0.0, -0.5, 200.0))


def image(seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = disks((70, 90), seed, count=10, radius=(3, 7), classes=2)
    rng = np.random.default_rng(seed)
    channels = np.stack([gaussian_filter(rng.random(labels.shape), 2) * 100 + 5 * labels,
                         rng.random(labels.shape)], axis=-1)
    return labels, channels


def tiled_measurements(labels: np.ndarray, channels: np.ndarray, side: int):
    blocks = []
    for _, core in tiles(labels.shape, side):
        window = BlockWindow.around(core, OPTIONS.max_diameter, labels.shape)
        blocks.append((window, block_instances(labels[window.read.slices], window, OPTIONS)))
    ids = global_ids([b.anchors for _, b in blocks])
    parts = [measure_objects(b.ids, b.origin, global_ids=g, classes=b.classes,
                             intensity=channels[w.read.slices], scale=SCALE)
             for (w, b), g in zip(blocks, ids)]
    return {name: np.concatenate([p[name] for p in parts]) for name in columns(2)}


@pytest.mark.parametrize(("seed", "side"), [(0, 11), (1, 25), (2, 64)])
def test_block_measurements_equal_regionprops_of_the_whole_image(seed, side):
    labels, channels = image(seed)
    whole = oracle_instances(labels, (1, 2), separate=True, min_distance=3, min_area=8)
    props = regionprops_table(
        whole, intensity_image=channels,
        properties=["label", "area", "perimeter", "centroid", "bbox", "equivalent_diameter_area",
                    "eccentricity", "solidity", "intensity_mean", "intensity_std"])
    got = tiled_measurements(labels, channels, side)
    order = np.argsort(got["id"])
    got = {k: v[order] for k, v in got.items()}
    expected = {
        "id": props["label"], "area_pixels": props["area"], "area": props["area"] * 0.25,
        "perimeter": props["perimeter"], "centroid_row": props["centroid-0"],
        "centroid_col": props["centroid-1"],
        "centroid_x": 100.0 + 0.5 * (props["centroid-1"] + 0.5),
        "centroid_y": 200.0 - 0.5 * (props["centroid-0"] + 0.5),
        "bbox_row_min": props["bbox-0"], "bbox_col_min": props["bbox-1"],
        "bbox_row_max": props["bbox-2"], "bbox_col_max": props["bbox-3"],
        "equivalent_diameter": props["equivalent_diameter_area"],
        "eccentricity": props["eccentricity"], "solidity": props["solidity"],
        "mean_0": props["intensity_mean-0"], "std_0": props["intensity_std-0"],
        "mean_1": props["intensity_mean-1"], "std_1": props["intensity_std-1"],
        "class": np.array([labels[whole == i][0] for i in props["label"]]),
    }
    assert len(expected["id"]) > 10
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-9, atol=1e-9, err_msg=name)


def test_a_block_without_objects_gives_empty_columns_and_a_bad_window_is_refused():
    empty = measure_objects(np.zeros((4, 4), np.uint32), (0, 0), global_ids=np.zeros(0),
                            classes=np.zeros(0), intensity=np.zeros((4, 4)), scale=SCALE)
    assert list(empty) == columns(1) and all(len(v) == 0 for v in empty.values())
    with pytest.raises(InputError, match="does not cover"):
        measure_objects(np.zeros((4, 4), np.uint32), (0, 0), global_ids=np.zeros(0),
                        classes=np.zeros(0), intensity=np.zeros((3, 4)), scale=SCALE)
