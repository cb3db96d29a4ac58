"""The instance areas the report draws: pixels per id counted chunk by chunk from a real Zarr
array, and the log-spaced bins. Oracles: numpy's bincount of the whole array, numpy.geomspace
and numpy.histogram."""

from __future__ import annotations

import math

import numpy as np

from segpipe.pipeline.instances.histogram import MAX_BINS, instance_pixels, log_bins
from segpipe.pipeline.io.zarrstore import create_array


def test_pixels_per_id_equal_a_bincount_of_the_whole_array(tmp_path):
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 40, (150, 170)).astype(np.uint32)  # chunks cut at the edges too
    ids[ids == 17] = 0  # an id with no pixel
    create_array(tmp_path / "ids.zarr", ids.shape, (64, 48), "uint32", fill_value=0)[:] = ids
    got = instance_pixels(str(tmp_path / "ids.zarr"), 39)
    np.testing.assert_array_equal(got, np.bincount(ids.ravel(), minlength=40)[1:])
    assert got[16] == 0


def test_bins_are_log_spaced_from_the_smallest_to_the_largest_area():
    areas = np.array([3.0, 4, 4, 9, 30, 31, 250, 1200.5])
    edges = log_bins(areas)
    bins = math.ceil(math.log2(len(areas))) + 1  # Sturges
    np.testing.assert_allclose(edges, np.geomspace(3.0, 1200.5, bins + 1), rtol=1e-12)
    assert edges[0] == 3.0 and edges[-1] == 1200.5
    counts, _ = np.histogram(areas, bins=edges)
    assert counts.sum() == len(areas)  # the largest area is in the last bin
    assert len(log_bins(areas, max_bins=3)) == 3 + 1  # capped
    assert len(log_bins(np.arange(1.0, 10**6))) == 21 + 1  # Sturges: ceil(19.9) + 1
    assert MAX_BINS > 21


def test_equal_areas_get_one_bin_around_them():
    edges = log_bins(np.array([5.0, 5.0, 5.0]))
    assert len(edges) == 2 and edges[0] < 5.0 < edges[1]
    assert edges[1] / 5.0 == 5.0 / edges[0]
