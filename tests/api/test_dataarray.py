"""segpipe.segment and segpipe.open on xarray DataArrays: the CLI's labels, its grid, lazily."""

from __future__ import annotations

import json
import warnings

import dask.array as da
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from rasterio.enums import Resampling

import segpipe
from segpipe.dataarray import band_first, grid_info, spatial_input
from segpipe.models.foundation import InputError
from segpipe.pipeline.io.pyramid import pixel_size_in_meters
from segpipe.pipeline.tiling import TilePlan
from tests.api.helpers import cli_labels, read_image
from tests.api.test_dask import PixelsRead, refusing_array
from tests.conftest import UTM_21N, smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet

OPTIONS = dict(tile=16, normalize="meanstd", block_pixels=32)


def open_rasterio(path, **options) -> xr.DataArray:
    """rioxarray's reading of a one-variable GeoTIFF (always a DataArray)."""
    opened = rioxarray.open_rasterio(path, **options)
    assert isinstance(opened, xr.DataArray)
    return opened


def block_chunks(height: int, width: int, halo: int) -> tuple[tuple[int, ...], ...]:
    """The block cores of the run's tile plan (``block_pixels // tile`` = 2 tiles a side)."""
    plan = TilePlan(height, width, OPTIONS["tile"], halo, block=2)
    rows = tuple(plan.block_core(bi, 0).height for bi in range(plan.block_grid[0]))
    cols = tuple(plan.block_core(0, bj).width for bj in range(plan.block_grid[1]))
    return rows, cols


def test_rioxarray_scene_gives_the_cli_labels_on_its_grid(tmp_path, geotiff):
    src = geotiff((3, 75, 101), "uint8", seed=11)
    model = tiny_unet(tmp_path / "unet.pt", 3, "valid")
    cli_out = tmp_path / "cli.tif"
    expected, _ = cli_labels(src, model, cli_out, **OPTIONS)
    scene = open_rasterio(src)

    labels = segpipe.segment(scene, str(model), device="cpu", **OPTIONS)
    labels.rio.to_raster(tmp_path / "xr.tif")

    assert isinstance(labels, xr.DataArray) and labels.dims == ("y", "x")
    np.testing.assert_array_equal(labels.values, expected)
    assert len(np.unique(expected)) > 1
    for dim in ("y", "x"):
        np.testing.assert_array_equal(labels[dim].values, scene[dim].values)
    assert "spatial_ref" in labels.coords
    with rasterio.open(cli_out) as cli, rasterio.open(tmp_path / "xr.tif") as written:
        assert labels.rio.crs == cli.crs == written.crs
        assert labels.rio.transform() == cli.transform == written.transform
        np.testing.assert_array_equal(written.read(1), cli.read(1))
        assert labels.attrs["class_names"] == json.loads(cli.tags()["CLASS_NAMES"])
        colormap = cli.colormap(1)
        assert [tuple(c) for c in labels.attrs["class_colors"]] == [
            colormap[i][:3] for i in range(len(labels.attrs["class_names"]))
        ]
        assert written.nodata == labels.rio.nodata == 255


def test_chunked_scene_is_lazy_with_the_run_blocks_as_chunks(tmp_path, geotiff):
    src = geotiff((3, 75, 101), "uint8", seed=11)
    model = tiny_unet(tmp_path / "unet.pt", 3, "valid")
    expected, summary = cli_labels(src, model, tmp_path / "cli.tif", **OPTIONS)
    scene = open_rasterio(src, chunks={"band": 3, "y": 17, "x": 23})

    labels = segpipe.segment(scene, str(model), device="cpu", **OPTIONS)

    assert isinstance(labels.data, da.Array) and labels.dtype == np.uint8
    assert labels.data.chunks == block_chunks(75, 101, summary["halo"])
    assert labels.rio.crs == scene.rio.crs
    np.testing.assert_array_equal(labels.compute(scheduler="threads").values, expected)


def test_building_a_dataarray_graph_reads_no_pixels(tmp_path):
    model = tiny_unet(tmp_path / "unet.pt", 2, "valid")
    height, width = 90, 70
    scene = xr.DataArray(
        refusing_array(2, height, width, 25), dims=("band", "y", "x"),
        coords={"y": 5e6 - 30 * (np.arange(height) + 0.5),
                "x": 3e5 + 30 * (np.arange(width) + 0.5)},
    ).rio.write_crs(UTM_21N)

    labels = segpipe.segment(scene, str(model), device="cpu", **OPTIONS)  # reads nothing

    halo = labels.attrs["segpipe_halo"]
    assert labels.data.chunks == block_chunks(height, width, halo)
    assert labels.rio.crs == UTM_21N
    with pytest.raises(PixelsRead):
        labels.compute(scheduler="sync")


def test_plain_coords_give_the_transform_rioxarray_computes():
    y = 200.0 - 0.5 * (np.arange(40) + 0.5)
    x = 10.0 + 0.25 * (np.arange(30) + 0.5)
    plain = xr.DataArray(np.zeros((40, 30), np.uint8), dims=("y", "x"), coords={"y": y, "x": x})

    described = spatial_input(band_first(plain))

    assert described.crs_wkt is None and described.bands == 1
    assert described.transform == pytest.approx(tuple(plain.rio.transform())[:6], rel=1e-12)
    irregular = plain.assign_coords(x=x ** 2)
    assert spatial_input(band_first(irregular)).transform is None


def landsat_like(seed: int) -> np.ndarray:
    """Three uint16 bands in Landsat 8's digital-number range (so the land cover varies)."""
    image = smooth_image((3, 120, 140), "float32", seed)
    return (6000 + (image + 20) / 100 * 6000).astype("uint16")


def test_no_model_chooses_the_bundled_model_as_the_cli_does(tmp_path):
    image = landsat_like(5)
    src = write_geotiff(tmp_path / "scene.tif", image)
    with rasterio.open(src, "r+") as ds:
        ds.descriptions = ("red", "green", "blue")  # not the card's order: read by names
    expected, summary = cli_labels(src, None, tmp_path / "cli.tif", sensor="landsat8")
    scene = xr.DataArray(  # no rioxarray metadata: a CRS attribute and pixel-centre coords
        image, dims=("band", "y", "x"), attrs={"crs": "EPSG:32621"},
        coords={"band": ["red", "green", "blue"], "y": 5e6 - 30 * (np.arange(120) + 0.5),
                "x": 3e5 + 30 * (np.arange(140) + 0.5)},
    )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = segpipe.segment(scene, device="cpu", sensor="landsat8")

    assert summary["model"]["name"] == labels.attrs["segpipe_model"] == "landcover_rgb"
    assert any("'landcover_rgb'" in str(w.message) for w in caught)
    np.testing.assert_array_equal(labels.values, expected)
    assert len(np.unique(expected)) > 1
    stac_like = scene.assign_coords(  # stackstac: asset keys, and common names beside them
        band=["B4", "B3", "B2"], common_name=("band", ["red", "green", "blue"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_common_names = segpipe.segment(stac_like, device="cpu", sensor="landsat8")
    np.testing.assert_array_equal(by_common_names.values, expected)
    coarse = scene.assign_coords(y=scene.y * 100, x=scene.x * 100)  # 3 km pixels
    with pytest.raises(InputError, match=r"no bundled model fits .*3 km pixels"):
        segpipe.segment(coarse, device="cpu", sensor="landsat8")


def test_microscopy_array_in_micrometres_gets_the_bundled_nuclei_model_as_the_cli(tmp_path):
    image = smooth_image((1, 90, 80), "uint8", seed=2)
    src = write_geotiff(tmp_path / "cells.tif", image, crs=None,
                        transform=rasterio.Affine.identity())  # no georeferencing at all
    expected, summary = cli_labels(src, None, tmp_path / "cli.tif")
    micrometres = {"units": "µm"}
    cells = xr.DataArray(  # (y, x), 0.5 µm pixels, no CRS
        image[0], dims=("y", "x"),
        coords={"y": ("y", 0.5 * (np.arange(90) + 0.5), micrometres),
                "x": ("x", 0.5 * (np.arange(80) + 0.5), micrometres)},
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = segpipe.segment(cells, device="cpu")

    assert summary["model"]["name"] == labels.attrs["segpipe_model"] == "nuclei"
    np.testing.assert_array_equal(labels.values, expected)
    assert len(np.unique(expected)) > 1
    grid = band_first(cells)
    assert pixel_size_in_meters(grid_info(grid, spatial_input(grid))) == pytest.approx(0.5e-6)


def test_nodata_of_the_file_is_nodata_of_the_dataarray(tmp_path):
    image = smooth_image((2, 60, 70), "uint16", seed=4)
    image[:, :20, :30] = 0
    src = write_geotiff(tmp_path / "holes.tif", image, nodata=0)
    model = tiny_unet(tmp_path / "unet.pt", 2, "valid")
    options = dict(tile=16, normalize="percentile")
    expected, _ = cli_labels(src, model, tmp_path / "cli.tif", **options)
    assert (expected == 255).sum() == 20 * 30

    for scene in (segpipe.open(str(src)), open_rasterio(src)):
        labels = segpipe.segment(scene, str(model), device="cpu", **options)
        np.testing.assert_array_equal(labels.values, expected)


def test_bare_arrays_without_model_are_refused_naming_model(tmp_path):
    image = np.zeros((3, 20, 20), np.uint16)
    for bare in (image, da.from_array(image)):
        with pytest.raises(InputError, match="model="):
            segpipe.segment(bare, device="cpu")


@pytest.fixture
def pyramid(tmp_path):
    """A 2-band GeoTIFF with band names and two overviews (sizes divisible by their factor)."""
    src = write_geotiff(tmp_path / "pyramid.tif", smooth_image((2, 256, 320), "uint16", 3))
    with rasterio.open(src, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.average)
        ds.descriptions = ("red", "nir")
    return src


def test_open_levels_read_what_rasterio_reads(pyramid):
    levels = segpipe.open_levels(str(pyramid))

    assert sorted(levels) == [0, 1, 2]
    for level, array in levels.items():
        overview = {} if level == 0 else {"overview_level": level - 1}
        with rasterio.open(pyramid, **overview) as ds:
            assert isinstance(array.data, da.Array) and array.dims == ("band", "y", "x")
            assert array.rio.crs == ds.crs and array.rio.transform() == ds.transform
            assert list(array.band.values) == ["red", "nir"]
            np.testing.assert_array_equal(array.values, ds.read())
            reference = open_rasterio(pyramid, **overview)
            np.testing.assert_allclose(array.x.values, reference.x.values, rtol=1e-12)
            np.testing.assert_allclose(array.y.values, reference.y.values, rtol=1e-12)
    single = segpipe.open(str(pyramid), level=1)
    np.testing.assert_array_equal(single.values, levels[1].values)


def test_opened_level_segments_as_the_cli_reads_that_level(tmp_path, pyramid):
    model = tiny_unet(tmp_path / "unet.pt", 2, "valid")
    cli_out = tmp_path / "cli.tif"
    expected, _ = cli_labels(pyramid, model, cli_out, level=1, **OPTIONS)

    labels = segpipe.segment(segpipe.open(str(pyramid), level=1), str(model), device="cpu",
                             **OPTIONS)
    labels.rio.to_raster(tmp_path / "xr.tif")

    assert isinstance(labels.data, da.Array)
    with rasterio.open(cli_out) as cli, rasterio.open(tmp_path / "xr.tif") as written:
        np.testing.assert_array_equal(written.read(1), expected)
        assert written.crs == cli.crs and written.transform == cli.transform
    np.testing.assert_array_equal(read_image(tmp_path / "xr.tif")[0], labels.values)
