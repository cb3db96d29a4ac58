"""Probability outputs (K, H, W) in GeoTIFF, OME-TIFF and OME-Zarr."""

from __future__ import annotations

import numpy as np
import ome_types
import ome_zarr_models
import pytest
import rasterio
import tifffile
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.gdal import GdalReader
from segpipe.pipeline.io.levels import OutputFormat, probabilities_path, write_probabilities
from segpipe.pipeline.io.omezarr import OmeZarrReader
from segpipe.pipeline.io.zarrstore import create_array

K, H, W, T = 3, 70, 90, 32
CLASSES = ["water", "forest", "urban"]


def _probs(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((K, H, W)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(0)
    data = p.astype(np.float16)
    create_array(tmp_path / "probs.zarr", data.shape, (K, T, T), "float16")[:] = data
    return tmp_path / "probs.zarr", data


def test_geotiff_keeps_crs_and_transform(tmp_path, geotiff):
    source = geotiff((3, H, W), "uint16")
    with GdalReader(str(source)) as r:
        info = r.info
    probs_path, data = _probs(tmp_path)
    out = probabilities_path(tmp_path / "mask.tif")
    assert out.name == "mask.probabilities.tif"
    write_probabilities(probs_path, out, info, class_names=CLASSES)
    with rasterio.open(out) as ds:
        assert ds.crs == CRS.from_wkt(info.crs_wkt)
        assert tuple(ds.transform)[:6] == info.transform
        assert (ds.count, ds.dtypes[0]) == (K, "float32")
        assert ds.descriptions == tuple(CLASSES)
        np.testing.assert_array_equal(ds.read(), data.astype(np.float32))
    valid, errors, _ = cog_validate(str(out), strict=True)
    assert valid, errors
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_geotiff_scaled_uint8(tmp_path, geotiff):
    with GdalReader(str(geotiff((1, H, W), "uint8"))) as r:
        info = r.info
    probs_path, data = _probs(tmp_path)
    out = tmp_path / "p.tif"
    write_probabilities(probs_path, out, info, "geotiff", as_uint8=True)
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "uint8"
        assert ds.descriptions == ("class_0", "class_1", "class_2")
        np.testing.assert_array_equal(ds.read(), np.rint(data.astype(np.float32) * 255))


def _micro_info(pixel_size=(0.5, 0.5)):
    return RasterInfo(
        path="cells.ome.tif", format="ome-tiff", height=H, width=W, bands=1, dtype="uint16",
        pixel_size=pixel_size, pixel_unit="µm" if pixel_size else None,
    )


def test_ome_tiff(tmp_path):
    probs_path, data = _probs(tmp_path)
    out = tmp_path / "p.ome.tif"
    write_probabilities(probs_path, out, _micro_info(), OutputFormat.OME_TIFF, class_names=CLASSES)
    with tifffile.TiffFile(out) as tif:
        pixels = ome_types.from_xml(tif.ome_metadata, validate=True).images[0].pixels
        assert [c.name for c in pixels.channels] == CLASSES
        assert pixels.physical_size_x == 0.5
        series = tif.series[0]
        assert series.axes == "CYX"
        np.testing.assert_array_equal(series.asarray(), data.astype(np.float32))
        for i, level in enumerate(series.levels):
            np.testing.assert_array_equal(
                level.asarray(), data[:, :: 2**i, :: 2**i].astype(np.float32)
            )


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr(tmp_path, version):
    from segpipe.pipeline.io.omezarr import write_probabilities_ome_zarr

    probs_path, data = _probs(tmp_path)
    out = tmp_path / "p.ome.zarr"
    write_probabilities_ome_zarr(
        probs_path, out, _micro_info(None), class_names=CLASSES, ngff_version=version
    )
    ome_zarr_models.open_ome_zarr(str(out), version=version)  # raises unless valid
    with OmeZarrReader(str(out)) as r:
        assert (r.info.bands, r.info.dtype, r.info.pixel_size) == (K, "float16", None)
        assert r.info.channel_names == tuple(CLASSES)
        np.testing.assert_array_equal(r.read(r.info.window), data)
    with OmeZarrReader(str(out), level=1) as r:
        np.testing.assert_array_equal(r.read(r.info.window), data[:, ::2, ::2])
