"""The log-spaced bins of the report's histogram of instance areas. Oracles: numpy.geomspace
and numpy.histogram. (The areas themselves, counted by the instance pass, are checked against
regionprops of the instance raster a run wrote: tests/pipeline/test_instance_report.py.)"""

from __future__ import annotations

import math

import numpy as np

from segpipe.pipeline.instances.histogram import MAX_BINS, log_bins


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
