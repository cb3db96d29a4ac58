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

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.gdal import GdalReader
from segpipe.pipeline.io.omezarr import OmeZarrReader
from segpipe.pipeline.io.writers import ExportJob
from segpipe.pipeline.io.writers import geotiff as geotiff_writer
from segpipe.pipeline.io.writers import ometiff as ometiff_writer
from segpipe.pipeline.io.writers import omezarr as omezarr_writer
from segpipe.pipeline.io.writers.common import probabilities_path
from segpipe.pipeline.io.zarrstore import create_array
from segpipe.pipeline.options import ExportOptions

K, H, W, T = 3, 70, 90, 32
CLASSES = ("water", "forest", "urban")


def _probs(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((K, H, W)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(0)
    data = p.astype(np.float16)
    create_array(tmp_path / "probs.zarr", data.shape, (K, T, T), "float16")[:] = data
    return tmp_path / "probs.zarr", data


def _job(tmp_path, out, info, *, names=CLASSES, uint8=False, version="0.4", probs=True):
    probs_path = _probs(tmp_path)[0] if probs else None
    return ExportJob(
        labels_path=str(tmp_path / "labels.zarr"), out=str(out), info=info,
        class_names=("a", "b"), colors=((0, 0, 0), (255, 255, 255)), nodata=255, tags={},
        options=ExportOptions(
            probabilities_dtype="uint8" if uint8 else "float", ngff_version=version
        ),
        probabilities_path=None if probs_path is None else str(probs_path),
        probability_names=names,
    )


def test_geotiff_keeps_crs_and_transform(tmp_path, geotiff):
    source = geotiff((3, H, W), "uint16")
    with GdalReader(str(source)) as r:
        info = r.info
    data = _probs(tmp_path)[1]
    out = geotiff_writer.write_probabilities(_job(tmp_path, tmp_path / "mask.tif", info))
    assert out == probabilities_path(tmp_path / "mask.tif")
    assert out.name == "mask.probabilities.tif"
    with rasterio.open(out) as ds:
        assert ds.crs == CRS.from_wkt(info.crs_wkt)
        assert tuple(ds.transform)[:6] == info.transform
        assert (ds.count, ds.dtypes[0]) == (K, "float32")
        assert ds.descriptions == CLASSES
        assert ds.tags()["SCALE"] == "1"
        np.testing.assert_array_equal(ds.read(), data.astype(np.float32))
    valid, errors, _ = cog_validate(str(out), strict=True)
    assert valid, errors
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not list(tmp_path.glob("*staging*"))


def test_geotiff_scaled_uint8(tmp_path, geotiff):
    with GdalReader(str(geotiff((1, H, W), "uint8"))) as r:
        info = r.info
    data = _probs(tmp_path)[1]
    # names that do not match the channels: class_<i>
    out = geotiff_writer.write_probabilities(
        _job(tmp_path, tmp_path / "p.tif", info, names=("only",), uint8=True)
    )
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "uint8"
        assert ds.descriptions == ("class_0", "class_1", "class_2")
        assert ds.tags()["SCALE"] == "1/255"
        np.testing.assert_array_equal(ds.read(), np.rint(data.astype(np.float32) * 255))


def _micro_info(pixel_size=(0.5, 0.5)):
    return RasterInfo(
        path="cells.ome.tif", format="ome-tiff", height=H, width=W, bands=1, dtype="uint16",
        pixel_size=pixel_size, pixel_unit="µm" if pixel_size else None,
    )


def test_ome_tiff(tmp_path):
    data = _probs(tmp_path)[1]
    out = ometiff_writer.write_probabilities(
        _job(tmp_path, tmp_path / "p.ome.tif", _micro_info()), tile=T
    )
    assert out.name == "p.probabilities.ome.tif"
    with tifffile.TiffFile(out) as tif:
        pixels = ome_types.from_xml(tif.ome_metadata, validate=True).images[0].pixels
        assert [c.name for c in pixels.channels] == list(CLASSES)
        assert pixels.physical_size_x == 0.5
        series = tif.series[0]
        assert series.axes == "CYX"
        assert len(series.levels) == 3
        np.testing.assert_array_equal(series.asarray(), data.astype(np.float32))
        for i, level in enumerate(series.levels):
            np.testing.assert_array_equal(
                level.asarray(), data[:, :: 2**i, :: 2**i].astype(np.float32)
            )


def test_ome_tiff_uint8(tmp_path):
    data = _probs(tmp_path)[1]
    out = ometiff_writer.write_probabilities(
        _job(tmp_path, tmp_path / "p.ome.tif", _micro_info(), uint8=True)
    )
    with tifffile.TiffFile(out) as tif:
        ome = ome_types.from_xml(tif.ome_metadata, validate=True)
        assert tif.series[0].dtype == np.uint8
        np.testing.assert_array_equal(
            tif.series[0].asarray(), np.rint(data.astype(np.float32) * 255)
        )
    maps = {a.namespace: dict(a.value) for a in ome.structured_annotations.map_annotations}
    assert maps[ometiff_writer.NS_PROVENANCE]["scale"] == "1/255"


@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize("uint8", [False, True])
def test_ome_zarr(tmp_path, version, uint8):
    data = _probs(tmp_path)[1]
    out = omezarr_writer.write_probabilities(
        _job(tmp_path, tmp_path / "p.ome.zarr", _micro_info(None), version=version, uint8=uint8)
    )
    assert out.name == "p.probabilities.ome.zarr"
    ome_zarr_models.open_ome_zarr(str(out), version=version)  # raises unless valid
    expected = np.rint(data.astype(np.float32) * 255) if uint8 else data
    with OmeZarrReader(str(out)) as r:
        dtype = "uint8" if uint8 else "float16"
        assert (r.info.bands, r.info.dtype, r.info.pixel_size) == (K, dtype, None)
        assert r.info.channel_names == CLASSES
        assert r.info.extra["ngff_version"] == version
        np.testing.assert_array_equal(r.read(r.info.window), expected)
    with OmeZarrReader(str(out), level=1) as r:
        np.testing.assert_array_equal(r.read(r.info.window), expected[:, ::2, ::2])


def test_without_probabilities_there_is_nothing_to_write(tmp_path):
    job = _job(tmp_path, tmp_path / "p.tif", _micro_info(), probs=False)
    with pytest.raises(InputError, match="no probabilities"):
        geotiff_writer.write_probabilities(job)
