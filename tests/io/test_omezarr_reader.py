"""OME-Zarr images (NGFF 0.4 and 0.5) written by ome-zarr's own writer, read back."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr
from iohelpers import reader_class

from segpipe.models.foundation import InputError, RasterError
from segpipe.pipeline.io.omezarr import OmeZarrReader, is_ome_zarr
from segpipe.pipeline.io.zarrstore import ZarrReader, create_array, is_zarr
from segpipe.pipeline.tiling import Window

with warnings.catch_warnings():  # ome_zarr.writer deprecates its Scaler at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image

FORMATS = {"0.4": FormatV04(), "0.5": FormatV05()}


def _write(path, data, axes, version, *, scale=None, units=None, names=None, factors=(2, 4)):
    fmt = FORMATS[version]
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    kwargs = {}
    if names:
        window = {"min": 0, "max": 255, "start": 0, "end": 255}
        kwargs["omero"] = {
            "channels": [{"label": n, "color": "FFFFFF", "window": window} for n in names]
        }
    chunks = tuple(1 if a in "tcz" else 32 for a in axes)
    if scale is not None:
        scale = {**{a: 1.0 for a in axes}, **scale}
    write_image(
        data, group, fmt=fmt, axes=axes, scale=scale, axes_units=units,
        scale_factors=factors, method=Methods.NEAREST, storage_options={"chunks": chunks},
        **kwargs,
    )
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_cyx_levels_pixel_sizes_and_channels(tmp_path, version):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (2, 150, 110), dtype=np.uint8)
    path = _write(
        tmp_path / "img.ome.zarr", data, "cyx", version, scale={"y": 0.5, "x": 0.25},
        units={"y": "micrometer", "x": "micrometer"}, names=["DAPI", "GFP"],
    )
    assert is_ome_zarr(str(path)) and not is_zarr(str(path))
    assert reader_class(path) is OmeZarrReader
    group = zarr.open_group(str(path), mode="r")
    attrs = group.attrs.asdict()
    datasets = (attrs.get("ome", attrs))["multiscales"][0]["datasets"]
    arrays = [np.asarray(group[d["path"]][:]) for d in datasets]
    with OmeZarrReader(str(path)) as r:
        info = r.info
        assert (info.format, info.bands, info.dtype) == ("ome-zarr", 2, "uint8")
        assert info.levels == tuple(a.shape[1:] for a in arrays)
        assert info.pixel_size == (0.5, 0.25)
        assert info.pixel_unit == "µm"
        assert info.channel_names == ("DAPI", "GFP")
        assert info.extra["ngff_version"] == version
        for w in (Window(0, 0, 150, 110), Window(31, 17, 40, 60), Window(149, 109, 1, 1)):
            expected = data[:, w.row : w.row_stop, w.col : w.col_stop]
            np.testing.assert_array_equal(r.read(w), expected)
    for level in (1, 2):
        with OmeZarrReader(str(path), level=level) as r:
            assert r.info.shape == arrays[level].shape[1:]
            # the level's own scale transform, as written (ome-zarr derives it from the shapes)
            scale = datasets[level]["coordinateTransformations"][0]["scale"]
            assert r.info.pixel_size == pytest.approx((scale[1], scale[2]))
            assert r.info.pixel_size == pytest.approx((0.5 * 2**level, 0.25 * 2**level), rel=0.03)
            np.testing.assert_array_equal(r.read(r.info.window), arrays[level])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_tczyx_with_singleton_time_and_z(tmp_path, version):
    data = np.arange(2 * 40 * 50, dtype=np.uint16).reshape(1, 2, 1, 40, 50)
    path = _write(
        tmp_path / "5d.ome.zarr", data, "tczyx", version, scale={"y": 2.0, "x": 2.0},
        units={"y": "nanometer", "x": "nanometer"}, factors=(2,),
    )
    with OmeZarrReader(str(path)) as r:
        assert r.info.bands == 2
        assert r.info.pixel_size == (2.0, 2.0)
        assert r.info.pixel_unit == "nm"
        assert r.info.extra["axes"] == "TCZYX"
        np.testing.assert_array_equal(r.read(Window(3, 4, 10, 20)), data[0, :, 0, 3:13, 4:24])


def test_z_stack_is_refused(tmp_path):
    path = _write(tmp_path / "z.ome.zarr", np.zeros((3, 40, 40), np.uint8), "zyx", "0.4")
    with pytest.raises(RasterError, match="axis Z has 3 planes"):
        OmeZarrReader(str(path))


def test_without_units_there_is_no_pixel_size(tmp_path):
    data = np.ones((64, 48), np.float32)
    path = _write(tmp_path / "yx.ome.zarr", data, "yx", "0.5", factors=(2,))
    with OmeZarrReader(str(path)) as r:
        assert r.info.bands == 1
        assert r.info.pixel_size is None and r.info.pixel_unit is None
        assert r.info.channel_names is None
        np.testing.assert_array_equal(r.read(r.info.window), data[None])


def test_bioformats2raw_layout_opens_series_0(tmp_path):
    root = tmp_path / "b2r.ome.zarr"
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    group.attrs["bioformats2raw.layout"] = 3
    data = np.arange(30 * 20, dtype=np.uint16).reshape(1, 30, 20)
    _write(root / "0", data, "cyx", "0.4", factors=(2,))
    assert is_ome_zarr(str(root))
    with OmeZarrReader(str(root)) as r:
        np.testing.assert_array_equal(r.read(r.info.window), data)


def test_missing_level_and_non_ome_groups(tmp_path):
    data = np.zeros((1, 32, 32), np.uint8)
    path = _write(tmp_path / "a.ome.zarr", data, "cyx", "0.4", factors=(2,))
    with pytest.raises(InputError, match=r"levels 0\.\.1"):
        OmeZarrReader(str(path), level=5)
    plain_group = tmp_path / "plain.zarr"
    zarr.open_group(str(plain_group), mode="w")
    assert not is_ome_zarr(str(plain_group))
    with pytest.raises(RasterError, match="not an OME-Zarr image"):
        OmeZarrReader(str(plain_group))
    array = tmp_path / "array.zarr"
    create_array(array, (1, 8, 8), (1, 8, 8), "uint8")
    assert not is_ome_zarr(str(array)) and is_zarr(str(array))
    assert reader_class(array) is ZarrReader
