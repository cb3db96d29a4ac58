"""NDPI/MRXS through OpenSlide: a clear error without the extra, exact reads with it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tifffile

from segpipe.models.foundation import InputError, RasterError
from segpipe.pipeline.io import slide
from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.io.slide import OpenSlideReader
from segpipe.pipeline.tiling import Window


def test_without_openslide_the_error_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "scan.ndpi"
    path.write_bytes(b"II*\x00" + bytes(64))
    assert slide.accepts(str(path)) and slide.accepts(str(tmp_path / "x.MRXS")) is False
    with pytest.raises(RasterError, match="as a slide"):  # the registry picked OpenSlide
        open_raster(str(path))
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide -> ImportError
    with pytest.raises(RasterError, match=r"pip install segpipe\[openslide\]"):
        OpenSlideReader(str(path))


def test_only_openslide_formats_are_accepted(tmp_path):
    for name in ("a.ndpi", "b.mrxs", "c.vms"):
        (tmp_path / name).write_bytes(b"x")
        assert slide.accepts(str(tmp_path / name))
    for name in ("d.svs", "e.tif", "f.ome.tif"):
        (tmp_path / name).write_bytes(b"x")
        assert not slide.accepts(str(tmp_path / name))


def _generic_pyramid(path, data):
    opts = {"tile": (64, 64), "photometric": "rgb", "compression": "zlib", "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(data, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", **opts)
        tif.write(data[::2, ::2], subfiletype=1, **opts)
        tif.write(data[::4, ::4], subfiletype=1, **opts)


def test_openslide_reads_levels_exactly(tmp_path):
    # sizes divisible by 4: integer downsamples, so OpenSlide reads levels without resampling
    data = np.random.default_rng(0).integers(0, 255, (300, 408, 3), dtype=np.uint8)
    path = tmp_path / "generic.tif"  # OpenSlide's generic-tiff vendor
    _generic_pyramid(path, data)
    with OpenSlideReader(str(path)) as r:
        info = r.info
        assert (info.format, info.bands, info.dtype) == ("slide", 3, "uint8")
        assert info.levels == ((300, 408), (150, 204), (75, 102))
        assert info.pixel_size == pytest.approx((0.5, 0.5)) and info.pixel_unit == "µm"
        assert info.channel_names == ("red", "green", "blue")
        assert info.extra["vendor"] == "generic-tiff"
        w = Window(17, 33, 120, 200)
        np.testing.assert_array_equal(r.read(w), data[17:137, 33:233].transpose(2, 0, 1))
    with OpenSlideReader(str(path), level=2) as r:
        assert r.info.shape == (75, 102)
        assert r.info.pixel_size == pytest.approx((2.0, 2.0))
        level2 = data[::4, ::4].transpose(2, 0, 1)
        np.testing.assert_array_equal(r.read(r.info.window), level2)
        for row, col in [(1, 1), (3, 7), (37, 51), (74, 101)]:
            w = Window(row, col, 75 - row, 102 - col)
            np.testing.assert_array_equal(r.read(w), level2[:, row:, col:])
    with pytest.raises(InputError, match=r"levels 0\.\.2"):
        OpenSlideReader(str(path), level=3)


def test_openslide_refuses_non_slides(tmp_path):
    path = tmp_path / "x.ndpi"
    path.write_text("not a slide")
    with pytest.raises(RasterError, match="cannot read"):
        OpenSlideReader(str(path))
