"""OME-TIFF, SVS and pyramidal (Big)TIFF read through tifffile, against tifffile's full reads."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import rasterio
import tifffile
from iohelpers import downsample, reader_class, write_ome_tiff

from segpipe.models.foundation import InputError, RasterError
from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.io.gdal import GdalReader
from segpipe.pipeline.io.ometiff import OmeTiffReader
from segpipe.pipeline.io.ometiff import accepts as ome_accepts
from segpipe.pipeline.io.tiff import TiffReader, classify_tiff
from segpipe.pipeline.io.tiff import accepts as tiff_accepts
from segpipe.pipeline.tiling import Window

WINDOWS = [Window(0, 0, 1, 1), Window(5, 7, 33, 41), Window(31, 29, 3, 70)]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _check_windows(reader, full: np.ndarray) -> None:
    """``full`` is (bands, h, w) of the reader's level."""
    h, w = reader.info.shape
    assert full.shape[1:] == (h, w)
    for win in [*WINDOWS, Window(max(h - 9, 0), max(w - 11, 0), 9, 11), reader.info.window]:
        if win.row >= h or win.col >= w:
            continue
        win = Window(win.row, win.col, min(win.height, h - win.row), min(win.width, w - win.col))
        got = reader.read(win)
        assert got.dtype == full.dtype
        np.testing.assert_array_equal(got, full[:, win.row : win.row_stop, win.col : win.col_stop])


def test_ome_tiff_multichannel_pyramid_with_physical_size(tmp_path):
    data = _rng().integers(0, 4000, (3, 130, 150), dtype=np.uint16)
    path = write_ome_tiff(
        tmp_path / "img.ome.tif", data, "CYX", pixel_size=(0.5, 0.25),
        channel_names=["DAPI", "GFP", "Cy5"], sublevels=2,
    )
    assert reader_class(path) is OmeTiffReader
    with OmeTiffReader(str(path)) as r:
        info = r.info
        assert (info.format, info.bands, info.dtype) == ("ome-tiff", 3, "uint16")
        assert info.shape == (130, 150)
        assert info.pixel_size == (0.5, 0.25)
        assert info.pixel_unit == "µm"
        assert info.channel_names == ("DAPI", "GFP", "Cy5")
        assert info.levels == ((130, 150), (65, 75), (33, 38))
        _check_windows(r, tifffile.imread(path))
    for level in (1, 2):
        with OmeTiffReader(str(path), level=level) as r:
            assert r.info.level == level
            assert r.info.shape == r.info.levels[level]
            assert r.info.pixel_size == (0.5 * 2**level, 0.25 * 2**level)
            _check_windows(r, downsample(data, 2**level))
            np.testing.assert_array_equal(
                r.read(r.info.window), tifffile.imread(path, series=0, level=level)
            )


def test_ome_tiff_without_physical_size_invents_none(tmp_path):
    data = _rng(1).integers(0, 255, (40, 50), dtype=np.uint8)
    path = write_ome_tiff(tmp_path / "plain.ome.tif", data, "YX")
    with OmeTiffReader(str(path)) as r:
        assert r.info.pixel_size is None
        assert r.info.pixel_unit is None
        assert r.info.bands == 1
        _check_windows(r, data[None])


def test_ome_tiff_units_are_kept(tmp_path):
    data = np.zeros((20, 30), np.uint8)
    path = write_ome_tiff(tmp_path / "nm.ome.tif", data, "YX", pixel_size=(120.0, 80.0), unit="nm")
    with OmeTiffReader(str(path)) as r:
        assert r.info.pixel_size == (120.0, 80.0)
        assert r.info.pixel_unit == "nm"


def test_ome_tiff_rgb_samples_are_three_bands(tmp_path):
    data = _rng(2).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    path = write_ome_tiff(
        tmp_path / "rgb.ome.tif", data, "YXS", photometric="rgb", pixel_size=(1.0, 1.0),
        sublevels=1,
    )
    with OmeTiffReader(str(path)) as r:
        assert r.info.bands == 3
        assert r.info.channel_names == ("red", "green", "blue")
        _check_windows(r, data.transpose(2, 0, 1))
    with OmeTiffReader(str(path), level=1) as r:
        _check_windows(r, data[::2, ::2].transpose(2, 0, 1))


def test_ome_tiff_singleton_time_and_z_are_dropped(tmp_path):
    data = _rng(3).integers(0, 255, (1, 2, 1, 45, 60), dtype=np.uint8)
    path = write_ome_tiff(tmp_path / "tczyx.ome.tif", data, "TCZYX", channel_names=["a", "b"])
    with OmeTiffReader(str(path)) as r:
        assert r.info.bands == 2
        assert r.info.channel_names == ("a", "b")
        _check_windows(r, data[0, :, 0])


def test_ome_tiff_z_stack_is_refused(tmp_path):
    data = np.zeros((3, 20, 30), np.uint8)
    path = write_ome_tiff(tmp_path / "z.ome.tif", data, "ZYX")
    with pytest.raises(RasterError, match="axis Z has 3 planes"):
        OmeTiffReader(str(path))


def test_missing_level_lists_the_levels(tmp_path):
    path = write_ome_tiff(tmp_path / "l.ome.tif", np.zeros((64, 64), np.uint8), "YX", sublevels=1)
    with pytest.raises(InputError, match=r"levels 0\.\.1 \(64x64, 32x32\)"):
        OmeTiffReader(str(path), level=2)


def test_pyramidal_bigtiff_subifds_with_resolution_in_cm(tmp_path):
    data = _rng(4).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    path = tmp_path / "pyramid.tif"
    opts = {"tile": (64, 64), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            data, subifds=2, resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER",
            **opts,
        )
        tif.write(data[::2, ::2], subfiletype=1, **opts)
        tif.write(data[::4, ::4], subfiletype=1, **opts)
    assert classify_tiff(str(path)) == "tiff"
    assert reader_class(path) is TiffReader
    with TiffReader(str(path)) as r:
        assert r.info.format == "tiff"
        assert r.info.levels == ((200, 300), (100, 150), (50, 75))
        assert r.info.pixel_size == pytest.approx((0.25, 0.25))
        assert r.info.pixel_unit == "µm"
        _check_windows(r, data.transpose(2, 0, 1))
    with TiffReader(str(path), level=2) as r:
        assert r.info.pixel_size == pytest.approx((1.0, 1.0))
        _check_windows(r, data[::4, ::4].transpose(2, 0, 1))


def test_reduced_pages_in_main_chain_are_levels(tmp_path):
    data = _rng(5).integers(0, 60000, (120, 100), dtype=np.uint16)
    path = tmp_path / "chain.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(data, tile=(32, 32), metadata=None)
        tif.write(data[::2, ::2], tile=(32, 32), subfiletype=1, metadata=None)
    with TiffReader(str(path), level=1) as r:
        assert r.info.levels == ((120, 100), (60, 50))
        assert r.info.pixel_size is None  # no unit: nothing invented
        _check_windows(r, data[None, ::2, ::2])


def test_aperio_svs_mpp_and_levels(tmp_path):
    data = _rng(6).integers(0, 255, (160, 224, 3), dtype=np.uint8)
    path = tmp_path / "slide.svs"
    desc = (
        "Aperio Image Library v12.0.15 \r\n224x160 [0,0 224x160] (64x64) JPEG/RGB Q=90"
        "|AppMag = 40|MPP = 0.2520|Filename = synthetic"
    )
    opts = {"photometric": "rgb", "compression": "jpeg", "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(data, tile=(64, 64), description=desc, **opts)
        tif.write(data[::8, ::8], description="Aperio Image Library v12.0.15 \r\nthumb", **opts)
        tif.write(data[::4, ::4], tile=(32, 32), description="Aperio Image Library v12", **opts)
    assert classify_tiff(str(path)) == "svs"
    assert reader_class(path) is TiffReader
    full = tifffile.imread(path)  # the same JPEG decoder, so equal bit for bit
    with TiffReader(str(path)) as r:
        assert r.info.pixel_size == (0.252, 0.252)
        assert r.info.pixel_unit == "µm"
        assert r.info.levels == ((160, 224), (40, 56))
        assert r.info.extra["vendor"] == "aperio"
        assert r.info.extra["objective_power"] == 40
        _check_windows(r, full.transpose(2, 0, 1))
    with TiffReader(str(path), level=1) as r:
        assert r.info.pixel_size == pytest.approx((1.008, 1.008))
        level1 = tifffile.imread(path, series=0, level=1)
        _check_windows(r, level1.transpose(2, 0, 1))


def test_a_window_reads_only_its_tiles(tmp_path):
    """A 64x64 window of a 16000x16000 level (256 MB) allocates far less than the level."""
    path = tmp_path / "big.tif"
    tile = np.arange(512 * 512, dtype=np.uint32).reshape(512, 512).astype(np.uint8)
    shape = (16000, 16000)
    n = (shape[0] + 511) // 512 * ((shape[1] + 511) // 512)
    tifffile.imwrite(
        path, (tile for _ in range(n)), shape=shape, dtype=np.uint8, tile=(512, 512),
        compression="zlib", bigtiff=True, metadata=None,
    )
    with TiffReader(str(path)) as r:
        tracemalloc.start()
        try:
            got = r.read(Window(8000, 9000, 64, 64))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    expected = np.tile(tile, (2, 2))[8000 % 512 : 8000 % 512 + 64, 9000 % 512 : 9000 % 512 + 64]
    np.testing.assert_array_equal(got[0], expected)
    assert peak < 16 * 2**20, f"reading one window allocated {peak / 2**20:.0f} MiB"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_geotiff_goes_to_gdal_and_ome_tiff_does_not(tmp_path, geotiff):
    geo = geotiff((3, 40, 50), "uint16")
    assert classify_tiff(str(geo)) == "gdal"
    assert not tiff_accepts(str(geo)) and not ome_accepts(str(geo))
    assert reader_class(geo) is GdalReader

    ome = write_ome_tiff(tmp_path / "x.ome.tif", np.zeros((20, 20), np.uint8), "YX")
    assert ome_accepts(str(ome)) and not tiff_accepts(str(ome))
    assert reader_class(ome) is OmeTiffReader

    # a TIFF written by GDAL without georeferencing but with nodata stays with GDAL
    plain = tmp_path / "gdal_nodata.tif"
    with rasterio.open(
        plain, "w", driver="GTiff", height=8, width=8, count=1, dtype="uint8", nodata=7
    ) as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    assert classify_tiff(str(plain)) == "gdal"

    text = tmp_path / "notes.tif"
    text.write_text("not a tiff")
    assert classify_tiff(str(text)) is None
    with pytest.raises(RasterError):  # only GDAL is left to try, and it refuses
        open_raster(str(text))


def test_plain_tiff_goes_to_tifffile(tmp_path):
    data = _rng(7).integers(0, 255, (30, 40), dtype=np.uint8)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, data)
    assert reader_class(path) is TiffReader
    with TiffReader(str(path)) as r:
        assert (r.info.bands, r.info.pixel_size, r.info.channel_names) == (1, None, None)
        _check_windows(r, data[None])


def test_imagej_units(tmp_path):
    data = np.zeros((2, 30, 40), np.uint16)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
        metadata={"axes": "CYX", "unit": "micron"},
    )
    with TiffReader(str(path)) as r:
        assert r.info.bands == 2
        assert r.info.pixel_size == pytest.approx((0.65, 0.65))
        assert r.info.pixel_unit == "µm"


def test_unreadable_tiff_is_a_raster_error(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 20)
    with pytest.raises(RasterError, match=r"cannot read|holds no image"):
        TiffReader(str(path))
