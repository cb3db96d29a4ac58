"""GeoTIFF in, COG out: georeferencing kept exactly, nodata mapped, valid COG, re-read by GDAL."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from segpipe.models import NormMethod
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import CUSTOM_WKT, UTM_21N, WGS84, smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_unet(tmp_path_factory.mktemp("m") / "unet.pt", 3, "valid")


@pytest.mark.parametrize(
    ("crs", "transform"),
    [
        (UTM_21N, Affine(30.0, 0, 300000.0, 0, -30.0, 5000000.0)),
        (WGS84, Affine(0.0001, 0, -58.5, 0, -0.0001, -34.1)),
        (CUSTOM_WKT, Affine(10.0, 0, 4321000.0, 0, -10.0, 3210000.0)),
    ],
    ids=["utm", "epsg4326", "custom-wkt"],
)
def test_georeferencing_round_trip(tmp_path, model, crs, transform):
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 90, 70), "uint8"), crs=crs,
                        transform=transform)
    out = tmp_path / "out.tif"
    run_one(RunOptions.of(input=str(src), output=str(out), model=str(model), tile=32,
                         device="cpu"))
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.crs.to_wkt() == a.crs.to_wkt()
        assert b.transform == a.transform
        assert (b.width, b.height, b.count) == (a.width, a.height, 1)
        assert b.nodata == 255 and b.dtypes[0] == "uint8"
        if crs == CUSTOM_WKT:
            assert a.crs.to_epsg() is None
    assert cog_validate(str(out), strict=True)[0]


def test_nodata_becomes_255_and_float_nan_too(tmp_path, model):
    img = smooth_image((3, 64, 80), "uint16")
    img[:, 10:20, 5:30] = 0  # declared nodata
    img[0, 40:45, 40:45] = 0  # one band only: still data
    src = write_geotiff(tmp_path / "nd.tif", img, nodata=0)
    out = tmp_path / "nd_out.tif"
    run_one(RunOptions.of(input=str(src), output=str(out), model=str(model), tile=32,
                         device="cpu", normalize=NormMethod.MEANSTD))
    with rasterio.open(out) as ds:
        labels = ds.read(1)
    assert (labels[10:20, 5:30] == 255).all()
    assert (labels[40:45, 40:45] != 255).all()
    assert (labels != 255).sum() == labels.size - 250

    fimg = smooth_image((3, 50, 50), "float32")
    fimg[:, :7, :] = np.nan
    fsrc = write_geotiff(tmp_path / "f.tif", fimg, nodata=float("nan"))
    fout = tmp_path / "f_out.tif"
    run_one(RunOptions.of(input=str(fsrc), output=str(fout), model=str(model), tile=32,
                         device="cpu", normalize=NormMethod.MEANSTD))
    with rasterio.open(fout) as ds:
        flabels = ds.read(1)
    assert (flabels[:7] == 255).all() and (flabels[7:] != 255).all()


def test_output_carries_classes_colors_provenance_and_nearest_overviews(tmp_path, model):
    src = write_geotiff(tmp_path / "big.tif", smooth_image((3, 600, 700), "uint8", seed=2))
    out = tmp_path / "big_out.tif"
    summary = run_one(RunOptions.of(input=str(src), output=str(out), model=str(model), tile=128,
                                   device="cpu", normalize=NormMethod.MEANSTD))
    with rasterio.open(out) as ds:
        tags = ds.tags()
        assert tags["SEGPIPE_MODEL_SHA256"] == summary["model"]["sha256"]
        assert tags["SEGPIPE_TILE"] == "128" and tags["SEGPIPE_BLEND"] == "crop"
        assert ds.colormap(1)[0][:3] is not None
        assert ds.overviews(1) == [2]
        full = ds.read(1)
        half = ds.read(1, out_shape=(300, 350))  # served from the overview
    with rasterio.open(out, overview_level=0) as ov:
        level1 = ov.read(1)
    # GDAL's nearest 2x overview keeps the top-left pixel of each 2x2 cell (never an average)
    np.testing.assert_array_equal(level1, full[::2, ::2])
    np.testing.assert_array_equal(half, level1)
    assert set(np.unique(level1)) <= set(np.unique(full))
    from PIL import Image

    quicklook = np.asarray(Image.open(tmp_path / "big_out.quicklook.png"))
    assert quicklook.shape[1] == 700 and quicklook.shape[0] > 600  # image plus legend
