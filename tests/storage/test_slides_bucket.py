"""OME-TIFF and SVS slides in a bucket: read by tifffile over range requests, never downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import s3fs
import tifffile

from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.tiling import Window
from tests.conftest import smooth_image
from tests.io.iohelpers import write_ome_tiff
from tests.pipeline.test_quicklook import write_svs
from tests.storage.conftest import CountingProxy, segpipe


def _put(s3, local, key: str) -> str:
    s3.fs().put_file(str(local), key)
    return f"s3://{key}"


@pytest.fixture
def slides(s3, s3_env, tmp_path):
    s3.bucket("slides")
    ome = write_ome_tiff(tmp_path / "cells.ome.tif", smooth_image((2, 1536, 1280), "uint16"),
                         "CYX", pixel_size=(0.25, 0.25), channel_names=["dapi", "cd3"],
                         sublevels=2, tile=256)
    scan = np.ascontiguousarray(smooth_image((3, 1024, 1536), "uint8", seed=4).transpose(1, 2, 0))
    svs = tmp_path / "slide.svs"
    write_svs(svs, scan)
    return {"ome": ome, "ome_url": _put(s3, ome, "slides/cells.ome.tif"),
            "svs": svs, "svs_url": _put(s3, svs, "slides/slide.svs")}


@pytest.mark.parametrize("name", ["ome", "svs"])
def test_a_slide_in_a_bucket_reads_as_the_same_file_on_disk(slides, name):
    window = Window(300, 700, 200, 150)
    with open_raster(slides[f"{name}_url"]) as remote, open_raster(str(slides[name])) as local:
        assert type(remote) is type(local) and remote.info.format == local.info.format
        for field in ("shape", "bands", "dtype", "pixel_size", "pixel_unit", "levels",
                      "channel_names"):
            assert getattr(remote.info, field) == getattr(local.info, field), field
        pixels = remote.read(window)
    with tifffile.TiffFile(slides[name]) as tif:  # the oracle: tifffile on the local copy
        level0 = tif.series[0].levels[0].asarray()
    if name == "svs":
        level0 = level0.transpose(2, 0, 1)
    np.testing.assert_array_equal(pixels, level0[:, 300:500, 700:850])  # rows, then columns
    if name == "ome":  # the OME metadata came through the range reads too
        assert remote.info.pixel_size == (0.25, 0.25)
        assert list(remote.info.channel_names or ()) == ["dapi", "cd3"]


def test_a_window_of_a_slide_in_a_bucket_costs_a_small_part_of_it(s3, slides, monkeypatch):
    size = slides["ome"].stat().st_size
    proxy = CountingProxy(s3.endpoint)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        s3fs.S3FileSystem.clear_instance_cache()
        with open_raster(slides["ome_url"]) as reader:
            reader.read(Window(1024, 1024, 64, 64))
        fetched = proxy.reset()
    finally:
        proxy.close()
    assert fetched > 0, "the read did not go through the counting proxy"
    # the IFDs and the two 256 px tiles (one per channel) the window lies in: not the file
    assert fetched < 0.15 * size, (fetched, size)


def test_segpipe_run_on_a_slide_in_a_bucket_equals_the_run_on_disk(s3, remote_assets,
                                                                   prefect_api, tmp_path):
    s3.bucket("oneband")
    ome = write_ome_tiff(tmp_path / "one.ome.tif", smooth_image((1, 160, 224), "uint8", seed=9),
                         "CYX", pixel_size=(0.5, 0.5), sublevels=1, tile=64)
    url = _put(s3, ome, "oneband/one.ome.tif")
    env = {**s3.env(tmp_path / "home"), "PREFECT_API_URL": prefect_api}
    args = ["--model", remote_assets["model"], "--tile", "32", "--block-pixels", "64",
            "--device", "cpu", "--workers", "0", "--quiet"]
    for src, out in ((ome, tmp_path / "disk.tif"), (url, tmp_path / "bucket.tif")):
        done = segpipe(["run", "--input", src, "--output", out, *args], env, tmp_path)
        assert done.returncode == 0, done.stderr
    disk, bucket = (tifffile.imread(tmp_path / n) for n in ("disk.tif", "bucket.tif"))
    np.testing.assert_array_equal(bucket, disk)
    assert len(np.unique(disk)) > 1
