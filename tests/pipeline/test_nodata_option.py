"""``--nodata``: a fill value the file does not declare (Landsat L1 zero fill) is nodata."""

from __future__ import annotations

import numpy as np
import rasterio

from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet


def test_an_undeclared_fill_value_is_nodata_for_statistics_and_labels(tmp_path):
    image = smooth_image((3, 90, 110), "uint16", seed=3)
    image[image == 0] = 1
    image[:, :30, :40] = 0  # fill around the scene, not declared in the file
    src = write_geotiff(tmp_path / "scene.tif", image)
    with rasterio.open(src) as ds:
        assert ds.nodata is None
    model = tiny_unet(tmp_path / "m.pt", 3, "valid")
    out = tmp_path / "out.tif"
    summary = run_one(RunOptions.of(str(src), str(out), model=str(model), tile=32,
                                    device="cpu", normalize="percentile", nodata=0))
    fill = (image == 0).all(axis=0)
    with rasterio.open(out) as ds:
        labels = ds.read(1)
    assert (labels[fill] == 255).all() and (labels[~fill] != 255).all()
    # the percentiles are those of the scene's own pixels, the fill left out
    expected = [np.percentile(band[~fill], 1) for band in image]
    np.testing.assert_allclose(summary["normalizer"]["offset"], expected, rtol=1e-9)
    assert summary["nodata_pixels"] == fill.sum()
