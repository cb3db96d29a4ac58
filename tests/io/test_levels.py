"""choose_level, the nearest pyramid convention, atomic outputs, units and output formats."""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.models.errors import InputError
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.levels import (
    OutputFormat,
    atomic_output,
    choose_level,
    iter_tiles,
    level_pixel_sizes,
    level_scale,
    ngff_unit,
    normalize_unit,
    probabilities_path,
    pyramid_shapes,
    read_nearest,
)
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


def test_atomic_output_replaces_only_on_success(tmp_path):
    out = tmp_path / "mask.tif"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out) as partial:
        partial.write_text("half")
        raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]
    with atomic_output(out) as partial:
        assert partial.parent == out.parent and partial.name != out.name
        partial.write_text("new")
    assert out.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]


def test_atomic_output_directories(tmp_path):
    out = tmp_path / "mask.ome.zarr"
    for text in ("first", "second"):
        with atomic_output(out) as partial:
            partial.mkdir()
            (partial / "zarr.json").write_text(text)
        assert (out / "zarr.json").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.ome.zarr"]
    with pytest.raises(RuntimeError), atomic_output(out) as partial:
        partial.mkdir()
        raise RuntimeError("boom")
    assert (out / "zarr.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.ome.zarr"]


def test_units():
    for text in ("µm", "μm", "um", "micron", "micrometer", "MICROMETER", "\\u00B5m"):
        assert normalize_unit(text) == "µm"
    assert normalize_unit(None) is None and normalize_unit(" ") is None
    assert normalize_unit("parsec-ish") == "parsec-ish"  # unknown: kept, never guessed
    assert ngff_unit("µm") == "micrometer" and ngff_unit("nm") == "nanometer"
    assert ngff_unit("pixel") is None


def test_output_format_and_probability_paths(tmp_path):
    assert OutputFormat.from_path("a/mask.tif") is OutputFormat.GEOTIFF
    assert OutputFormat.from_path("mask.OME.TIFF") is OutputFormat.OME_TIFF
    assert OutputFormat.from_path("mask.ome.zarr/") is OutputFormat.OME_ZARR
    with pytest.raises(InputError, match=r"\.ome\.zarr"):
        OutputFormat.from_path("mask.png")
    assert probabilities_path("d/mask.tif").as_posix() == "d/mask.probabilities.tif"
    assert probabilities_path("mask.ome.tif").name == "mask.probabilities.ome.tif"
    assert probabilities_path("mask.ome.zarr").name == "mask.probabilities.ome.zarr"
