"""choose_level, info_at_level, the nearest pyramid convention and length units."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import rasterio
from iohelpers import write_ome_tiff
from rasterio.enums import Resampling

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo, open_raster
from segpipe.pipeline.io.pyramid import (
    choose_level,
    info_at_level,
    iter_tiles,
    level_pixel_sizes,
    level_scale,
    pyramid_shapes,
    read_nearest,
)
from segpipe.pipeline.io.units import ngff_unit, normalize_unit, unit_in_meters
from segpipe.pipeline.io.zarrstore import create_array

LEVELS = ((4000, 3000), (2000, 1500), (1000, 750), (500, 375))


def _slide(level: int = 0, pixel_size=(0.25, 0.25)) -> RasterInfo:
    info = RasterInfo(
        path="slide.svs", format="tiff", height=4000, width=3000, bands=3, dtype="uint8",
        pixel_size=pixel_size, pixel_unit="µm" if pixel_size else None, levels=LEVELS,
    )
    if level:
        h, w = LEVELS[level]
        info = info.with_level(level, h, w, 2**level)
    return info


def test_explicit_level():
    assert choose_level(_slide(), level=2, pixel_size=None) == 2
    assert choose_level(_slide(), level=None, pixel_size=None) == 0


def test_missing_level_lists_levels_with_pixel_sizes():
    with pytest.raises(InputError) as exc:
        choose_level(_slide(), level=4, pixel_size=None)
    message = str(exc.value)
    assert "--level 4" in message
    assert "0: 3000x4000 (0.25 µm/px)" in message
    assert "3: 375x500 (2 µm/px)" in message


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(0.25, 0), (0.3, 0), (0.5, 1), (0.7, 1), (0.9, 2), (1.0, 2), (100.0, 3), (0.01, 0)],
)
def test_closest_pixel_size(requested, expected):
    assert choose_level(_slide(), level=None, pixel_size=requested) == expected


def test_tie_goes_to_the_finer_level():
    # sqrt(0.25 * 0.5): equally far (on a log scale) from levels 0 and 1
    assert choose_level(_slide(), level=None, pixel_size=(0.25 * 0.5) ** 0.5) == 0


def test_pixel_size_from_an_info_of_another_level():
    assert level_pixel_sizes(_slide(level=2)) == level_pixel_sizes(_slide())
    assert choose_level(_slide(level=3), level=None, pixel_size=0.5) == 1


def test_pixel_size_of_georeferenced_rasters_comes_from_the_transform():
    info = RasterInfo(
        path="scene.tif", format="gdal", height=1000, width=800, bands=3, dtype="uint16",
        transform=(30.0, 0.0, 300000.0, 0.0, -30.0, 5000000.0),
        levels=((1000, 800), (500, 400), (250, 200)),
    )
    assert level_pixel_sizes(info) == ((30.0, 30.0), (60.0, 60.0), (120.0, 120.0))
    assert choose_level(info, level=None, pixel_size=100) == 2


def test_impossible_requests():
    with pytest.raises(InputError, match=r"no pixel size.*--level"):
        choose_level(_slide(pixel_size=None), level=None, pixel_size=0.5)
    with pytest.raises(InputError, match="not both"):
        choose_level(_slide(), level=1, pixel_size=0.5)
    with pytest.raises(InputError, match="positive"):
        choose_level(_slide(), level=None, pixel_size=-1.0)


def test_level_scale_is_exact_for_ceil_and_floor_pyramids():
    assert level_scale((150, 101), (38, 26)) == (4.0, 4.0)  # ceil
    assert level_scale((150, 101), (37, 25)) == (4.0, 4.0)  # floor
    assert level_scale((100, 100), (30, 40)) == (100 / 30, 100 / 40)


def test_pyramid_shapes_halve_until_one_tile():
    assert pyramid_shapes(1000, 700, 128) == ((1000, 700), (500, 350), (250, 175), (125, 88))
    assert pyramid_shapes(100, 100, 128) == ((100, 100),)
    assert pyramid_shapes(129, 10, 128) == ((129, 10), (65, 5))
    with pytest.raises(InputError):
        pyramid_shapes(10, 10, 0)


@pytest.mark.parametrize("factor", [1, 2, 4, 8, 64])
def test_read_nearest_is_numpy_step_slicing(tmp_path, factor):
    data = np.random.default_rng(factor).integers(0, 250, (3, 101, 77), dtype=np.uint8)
    array = create_array(tmp_path / "a.zarr", data.shape, (3, 16, 16), "uint8")
    array[:] = data
    level = data[:, ::factor, ::factor]
    for start, stop in [(0, 1), (0, level.shape[1]), (1, max(2, level.shape[1] - 1))]:
        stop = min(stop, level.shape[1])
        np.testing.assert_array_equal(
            read_nearest(array, factor, start, stop), level[:, start:stop]
        )
    plane = create_array(tmp_path / "p.zarr", data.shape[1:], (16, 16), "uint8")
    plane[:] = data[0]
    tiles = list(iter_tiles(plane, factor, level.shape[1:], 16))
    rows = [np.hstack(tiles[i : i + -(-level.shape[2] // 16)]) for i in
            range(0, len(tiles), -(-level.shape[2] // 16))]
    np.testing.assert_array_equal(np.vstack(rows), level[0])


def test_units():
    for text in ("µm", "μm", "um", "micron", "micrometer", "MICROMETER", "\\u00B5m"):
        assert normalize_unit(text) == "µm"
    assert normalize_unit(None) is None and normalize_unit(" ") is None
    assert normalize_unit("parsec-ish") == "parsec-ish"  # unknown: kept, never guessed
    assert ngff_unit("µm") == "micrometer" and ngff_unit("nm") == "nanometer"
    assert ngff_unit("pixel") is None
    assert unit_in_meters("mm") == 1e-3 and unit_in_meters("pixel") is None


# ---------------------------------------------------------------------------- info_at_level

FIELDS = ("height", "width", "transform", "pixel_size", "pixel_unit", "level", "levels")


def _fields(info: RasterInfo) -> dict:
    return {name: getattr(info, name) for name in FIELDS}


@pytest.mark.parametrize("shape", [(3, 200, 260), (1, 75, 101)], ids=["even", "odd"])
def test_info_at_level_matches_the_gdal_reader(tmp_path, geotiff, shape):
    path = geotiff(shape, "uint8")
    with rasterio.open(path, "r+") as ds:  # GDAL's own overviews, as a GIS would add them
        ds.build_overviews([2, 4], Resampling.nearest)
    info0 = open_raster(path).info
    assert len(info0.levels) == 3
    for k in range(3):
        with open_raster(path, level=k) as r, rasterio.open(
            path, overview_level=k - 1
        ) if k else rasterio.open(path) as ds:
            derived = info_at_level(info0, k)
            assert _fields(derived) == _fields(r.info)
            assert (derived.height, derived.width) == (ds.height, ds.width)  # GDAL's own sizes
            assert derived.transform[4] == pytest.approx(ds.transform.e)


@pytest.mark.parametrize("shape", [(128, 96), (130, 151)], ids=["even", "odd"])
def test_info_at_level_matches_the_ome_tiff_reader(tmp_path, shape):
    data = np.random.default_rng(0).integers(0, 255, (2, *shape), dtype=np.uint8)
    path = write_ome_tiff(
        tmp_path / "p.ome.tif", data, "CYX", pixel_size=(0.5, 0.25), sublevels=2, tile=16
    )
    info0 = open_raster(path).info
    assert len(info0.levels) == 3
    for k in range(3):
        with open_raster(path, level=k) as r:
            derived = info_at_level(info0, k)
            assert _fields(derived) == _fields(r.info)
            assert derived.pixel_size == (0.5 * 2**k, 0.25 * 2**k)
            assert derived == r.info  # every compared field, extras aside


def test_info_at_level_refuses_missing_levels_and_non_base_infos():
    with pytest.raises(InputError, match=r"--level 4 does not exist .* levels 0\.\.3"):
        info_at_level(_slide(), 4)
    with pytest.raises(ValueError, match="level-0"):
        info_at_level(_slide(level=1), 2)
    assert info_at_level(_slide(), 0) == _slide()
    assert info_at_level(replace(_slide(), levels=()), 0).level == 0


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_info_at_level_matches_the_ome_zarr_reader_with_declared_scales(tmp_path, version):
    import warnings

    import zarr

    with warnings.catch_warnings():  # ome_zarr.writer deprecates its Scaler at import time
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.format import FormatV04, FormatV05
        from ome_zarr.scale import Methods
        from ome_zarr.writer import write_image

    fmt = FormatV04() if version == "0.4" else FormatV05()
    path = tmp_path / "odd.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    data = np.zeros((1, 150, 110), np.uint8)
    write_image(  # odd sizes: ome-zarr declares the size ratios, not exact factors of 2
        data, group, fmt=fmt, axes="cyx", scale={"c": 1.0, "y": 0.5, "x": 0.25},
        axes_units={"y": "micrometer", "x": "micrometer"}, scale_factors=(2, 4),
        method=Methods.NEAREST, storage_options={"chunks": (1, 32, 32)},
    )
    info0 = open_raster(path).info
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    datasets = attrs.get("ome", attrs)["multiscales"][0]["datasets"]
    for k in range(len(info0.levels)):
        declared = datasets[k]["coordinateTransformations"][0]["scale"][1:]
        with open_raster(path, level=k) as r:
            assert _fields(info_at_level(info0, k)) == _fields(r.info)
            assert info_at_level(info0, k).pixel_size == pytest.approx(tuple(declared))


def test_overview_transform_of_an_uneven_geotiff_is_gdals(tmp_path):
    """300 × 250 px with overviews 2 and 4: 150 × 125 and 75 × 63. GDAL scales each axis by its
    own size ratio (x: 250 / 63 × 30 m, not 4 × 30 m); rasterio's overview dataset is the oracle."""
    from affine import Affine

    path = tmp_path / "uneven.tif"
    profile = {"driver": "GTiff", "height": 300, "width": 250, "count": 1, "dtype": "uint8",
               "crs": "EPSG:32621", "transform": Affine(30.0, 0, 300000.0, 0, -30.0, 5e6)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.arange(300 * 250, dtype=np.uint8).reshape(1, 300, 250))
        ds.build_overviews([2, 4], Resampling.nearest)
    for level in (1, 2):
        with open_raster(str(path), level=level) as reader, \
                rasterio.open(path, overview_level=level - 1) as gdal:
            assert reader.info.shape == gdal.shape
            assert np.allclose(reader.info.transform, tuple(gdal.transform)[:6], rtol=1e-12)
