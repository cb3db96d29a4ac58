"""segpipe.write, segpipe.run and the lazy reader under segpipe.open, against rasterio."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import rasterio
from dask.delayed import Delayed

import segpipe
from segpipe.files import lazy_raster
from tests.api.helpers import cli_labels, read_image
from tests.pipeline.test_exactness import tiny_unet

OPTIONS = dict(tile=16, normalize="meanstd", block_pixels=32)


def test_written_cog_equals_the_cli_cog(tmp_path, geotiff):
    src = geotiff((3, 75, 101), "uint8", seed=11)
    model = tiny_unet(tmp_path / "unet.pt", 3, "valid")
    cli_out = tmp_path / "cli.tif"
    expected, _ = cli_labels(src, model, cli_out, **OPTIONS)
    with rasterio.open(cli_out) as ds:
        crs, transform = ds.crs, ds.transform
        names = json.loads(ds.tags()["CLASS_NAMES"])
        colormap = ds.colormap(1)
        structure = ds.tags(ns="IMAGE_STRUCTURE")  # LAYOUT=COG, compression
    assert structure["LAYOUT"] == "COG"
    image = read_image(src)
    eager = segpipe.segment(image, str(model), device="cpu", **OPTIONS)
    lazy = segpipe.segment(da.from_array(image, chunks=(3, 40, 40)), str(model), device="cpu",
                           **OPTIONS)
    meta = dict(crs=crs.to_wkt(), transform=tuple(transform)[:6], class_names=tuple(names))

    written = segpipe.write(eager, str(tmp_path / "eager.tif"), **meta)
    delayed = segpipe.write(lazy, str(tmp_path / "lazy.tif"), compute=False, **meta)

    assert written == [str(tmp_path / "eager.tif")]
    assert isinstance(delayed, Delayed) and not (tmp_path / "lazy.tif").exists()
    assert delayed.compute() == [str(tmp_path / "lazy.tif")]
    for name in ("eager.tif", "lazy.tif"):
        with rasterio.open(tmp_path / name) as ds:
            np.testing.assert_array_equal(ds.read(1), expected)
            assert ds.crs == crs and ds.transform == transform
            assert json.loads(ds.tags()["CLASS_NAMES"]) == names
            assert ds.colormap(1) == colormap
            assert ds.tags(ns="IMAGE_STRUCTURE") == structure


def test_run_writes_what_segment_returns(tmp_path, geotiff):
    src = geotiff((1, 50, 61), "uint16", seed=3)
    model = tiny_unet(tmp_path / "unet.pt", 1, "valid")
    out = tmp_path / "run.tif"

    summary = segpipe.run(str(src), str(out), model=str(model), device="cpu", **OPTIONS)

    assert summary["output"] == str(out) and summary["halo"] > 0
    labels = segpipe.segment(read_image(src), str(model), device="cpu", **OPTIONS)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(1), labels)


def test_lazy_raster_reads_what_rasterio_reads(tmp_path, geotiff):
    src = geotiff((2, 1100, 1030), "uint16", seed=1)

    lazy = lazy_raster(str(src))

    assert lazy.shape == (2, 1100, 1030) and lazy.dtype == np.uint16
    assert lazy.chunks == ((2,), (1024, 76), (1024, 6))
    np.testing.assert_array_equal(lazy[:, 1000:1100, 1000:1030].compute(),
                                  read_image(src)[:, 1000:1100, 1000:1030])
    np.testing.assert_array_equal(lazy.compute(), read_image(src))
