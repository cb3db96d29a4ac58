"""A COG in a bucket is read by range requests: a small window costs a small part of the file."""

from __future__ import annotations

import numpy as np
import rasterio
import s3fs
from rasterio.windows import Window as RioWindow

from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.tiling import Window
from tests.conftest import smooth_image
from tests.storage.conftest import CountingProxy, write_cog


def test_a_small_window_of_a_cog_costs_a_small_fraction_of_its_bytes(
    s3, s3_env, tmp_path, monkeypatch
):
    cog = write_cog(tmp_path / "large.tif", smooth_image((1, 2048, 2048), "uint8", seed=3))
    size = cog.stat().st_size
    s3.bucket("ranges")
    s3.fs().put_file(str(cog), "ranges/large.tif")
    proxy = CountingProxy(s3.endpoint)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # segpipe's GDAL goes through it
        s3fs.S3FileSystem.clear_instance_cache()
        window = Window(1000, 1200, 64, 64)
        with open_raster("s3://ranges/large.tif") as reader:
            pixels = reader.read(window)
            assert reader.info.shape == (2048, 2048)
        fetched = proxy.reset()
    finally:
        proxy.close()
    with rasterio.open(cog) as ds:  # the oracle: GDAL on the local copy
        expected = ds.read(window=RioWindow(1200, 1000, 64, 64))
    np.testing.assert_array_equal(pixels, expected)
    assert fetched > 0, "the read did not go through the counting proxy"
    # the header and the one 256 px tile the window lies in, not the 64 tiles of the file
    assert fetched < 0.1 * size, (fetched, size)
