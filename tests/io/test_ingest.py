"""The ingest: the input copied into the work directory's Zarr, strip by strip, on threads.

Oracle: the input read whole by rasterio, and the Zarr read back by zarr itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import zarr

from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.io.zarrstore import INFO_ATTR, ingest
from tests.conftest import smooth_image, write_geotiff


@pytest.mark.parametrize("threads", [1, 3, 40])  # 40: more threads than strips
def test_ingest_on_threads_copies_every_pixel(tmp_path, threads):
    image = smooth_image((3, 150, 700), "uint16", seed=3)
    image[:, :32, :32] = 0  # a chunk equal to the fill value is still written (and read back)
    src = write_geotiff(tmp_path / "in.tif", image)
    opened = []

    def open_reader():
        opened.append(1)
        return open_raster(str(src))

    ingest(open_reader, tmp_path / "image.zarr", 32, threads=threads)
    copy = zarr.open_array(str(tmp_path / "image.zarr"), mode="r")
    with rasterio.open(src) as ds:
        expected = ds.read()
    np.testing.assert_array_equal(copy[:], expected)
    assert copy.chunks == (3, 32, 32)
    assert copy.attrs[INFO_ATTR]["width"] == 700
    strips = 5 * 2  # 150 rows → 5 chunk rows; 700 columns → 2 strips of ≤ 16 chunks
    # one reader per thread: the first gives the info and copies too; each other opens its own
    assert len(opened) == min(threads, strips)
