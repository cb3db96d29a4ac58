"""The quicklook's decimation kept while ingesting: the same samples as reading level 0 again.

Oracles: rasterio's read of the whole input, sliced ``[:, ::step, ::step]`` by numpy.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import rasterio
from PIL import Image

from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.io.overview import read_overview
from segpipe.pipeline.io.preview import Preview, decimation_step, load_preview
from segpipe.pipeline.io.zarrstore import ingest
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from segpipe.pipeline.workdir import WorkDir
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.labelmodel import argmax_model


def test_the_ingest_keeps_every_step_th_pixel_of_level_0(tmp_path):
    image = smooth_image((3, 1000, 700), "uint16", seed=3)
    src = write_geotiff(tmp_path / "in.tif", image)
    preview = Preview.empty(3, 1000, 700, "uint16", max_side=96)
    assert preview.step == decimation_step(1000, 700, 96) == 11
    ingest(partial(open_raster, str(src)), tmp_path / "image.zarr", 64, threads=3,
           preview=preview)
    with rasterio.open(src) as ds:
        expected = ds.read()[:, ::11, ::11]
    np.testing.assert_array_equal(preview.pixels, expected)
    preview.save(tmp_path / "preview.zarr")
    kept = load_preview(tmp_path / "preview.zarr")
    assert kept is not None and kept.step == 11
    np.testing.assert_array_equal(kept.pixels, expected)


def test_the_overview_of_an_input_without_a_pyramid_comes_from_the_kept_preview(tmp_path):
    image = smooth_image((3, 300, 200), "uint8", seed=4)
    src = write_geotiff(tmp_path / "in.tif", image)
    step = decimation_step(300, 200, 64)
    planted = Preview(np.full((3, -(-300 // step), -(-200 // step)), 7, np.uint8), step)
    planted.save(tmp_path / "preview.zarr")
    # the planted preview is what comes back: level 0 is not read again
    view = read_overview(str(src), 64, bands=(2, 0), preview=str(tmp_path / "preview.zarr"))
    assert view.step == step and (view.pixels == 7).all() and view.pixels.shape[0] == 2
    # without it, or with one of another step, level 0 is decimated as before
    for preview in (None, str(tmp_path / "nothing.zarr")):
        again = read_overview(str(src), 64, bands=(2, 0), preview=preview)
        np.testing.assert_array_equal(again.pixels, image[[2, 0], ::step, ::step])
    assert read_overview(str(src), 50, preview=str(tmp_path / "preview.zarr")).step != step


def test_a_run_keeps_the_preview_and_its_quicklook_shows_the_input(tmp_path):
    classes = 3
    image = smooth_image((classes, 1700, 900), "uint8", seed=5)
    src = write_geotiff(tmp_path / "in.tif", image)
    model = argmax_model(tmp_path / "m.pt2", classes)
    out, wd = tmp_path / "out.tif", tmp_path / "wd"
    run_one(RunOptions.of(str(src), str(out), model=str(model), tile=256, device="cpu",
                          workdir=str(wd), keep_workdir=True))
    kept = load_preview(WorkDir(str(wd)).preview)
    assert kept is not None and kept.step == decimation_step(1700, 900, 1536) == 2
    np.testing.assert_array_equal(kept.pixels, image[:, ::2, ::2])
    # the quicklook is drawn at the preview's size (850 × 450 image rows and columns)
    png = np.asarray(Image.open(tmp_path / "out.quicklook.png"))
    assert png.shape[0] > 850 and png.shape[1] >= 450
    assert len(np.unique(png[:850, :450, :3])) > 10  # the input shows, not a blank
