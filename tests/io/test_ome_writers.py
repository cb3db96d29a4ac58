"""Label outputs: OME-TIFF and OME-Zarr, checked by independent readers and validators."""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace

import numpy as np
import ome_types
import ome_zarr_models
import pytest
import tifffile
import zarr
from ome_zarr_models.v04.image import Image as ImageV04
from ome_zarr_models.v04.image_label import ImageLabel as ImageLabelV04
from ome_zarr_models.v05.image import Image as ImageV05
from ome_zarr_models.v05.image_label import ImageLabel as ImageLabelV05

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.ometiff import OmeTiffReader
from segpipe.pipeline.io.omezarr import OmeZarrReader
from segpipe.pipeline.io.writers import ExportJob
from segpipe.pipeline.io.writers import ometiff as ometiff_writer
from segpipe.pipeline.io.writers import omezarr as omezarr_writer
from segpipe.pipeline.io.zarrstore import create_array
from segpipe.pipeline.options import ExportOptions

with warnings.catch_warnings():  # ome_zarr.writer (imported by ome_zarr.reader) deprecates Scaler
    warnings.simplefilter("ignore", DeprecationWarning)
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

H, W, T = 150, 203, 32
CLASSES = ["background", "tumour", "stroma"]
COLORS = [(0, 0, 0), (230, 25, 75), (60, 180, 75)]
NODATA = 255


def _labels(tmp_path, dtype="uint8"):
    rng = np.random.default_rng(0)
    data = rng.integers(0, len(CLASSES), (H, W)).astype(dtype)
    data[:7, :9] = NODATA if dtype == "uint8" else 65535
    array = create_array(tmp_path / "labels.zarr", data.shape, (T, T), dtype)
    array[:] = data
    return tmp_path / "labels.zarr", data


def _info(pixel_size=(0.5, 0.25), unit="µm") -> RasterInfo:
    return RasterInfo(
        path="/data/slide.ome.tif", format="ome-tiff", height=H, width=W, bands=3,
        dtype="uint8", pixel_size=pixel_size, pixel_unit=unit if pixel_size else None,
        channel_names=("red", "green", "blue"), levels=((H, W),),
    )


def _job(labels_path, out, info=None, *, nodata=NODATA, tags=None, image_path=None,
         version="0.4") -> ExportJob:
    return ExportJob(
        labels_path=str(labels_path), out=str(out), info=info or _info(),
        class_names=tuple(CLASSES), colors=tuple(COLORS), nodata=nodata, tags=tags or {},
        options=ExportOptions(ngff_version=version),
        image_path=None if image_path is None else str(image_path),
    )


class _CountingArray:
    """A Zarr array that remembers the largest block read from it."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype, self.chunks, self.ndim = (
            array.shape, array.dtype, array.chunks, array.ndim,
        )
        self.largest = 0

    def __getitem__(self, key):
        block = np.asarray(self._array[key])
        self.largest = max(self.largest, block.size)
        return block


# ------------------------------------------------------------------------------ OME-TIFF


def test_label_ome_tiff_pyramid_metadata_and_validation(tmp_path):
    labels_path, data = _labels(tmp_path)
    out = tmp_path / "mask.ome.tif"
    written = ometiff_writer.write_labels(
        _job(labels_path, out, tags={"model_sha256": "abc123", "tile": "256"}), tile=T
    )
    assert written == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr", "mask.ome.tif"]
    with tifffile.TiffFile(out) as tif:
        ome = ome_types.from_xml(tif.ome_metadata, validate=True)
        page = tif.pages.first
        assert page.is_tiled and page.tilewidth == T
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        series = tif.series[0]
        assert len(page.subifds) == len(series.levels) - 1 == 3
        for i, level in enumerate(series.levels):
            np.testing.assert_array_equal(level.asarray(), data[:: 2**i, :: 2**i])
        assert series.levels[-1].shape == (19, 26)  # fits in one tile
    pixels = ome.images[0].pixels
    assert (pixels.physical_size_y, pixels.physical_size_x) == (0.5, 0.25)
    assert pixels.physical_size_x_unit.value == pixels.physical_size_y_unit.value == "µm"
    assert [c.name for c in pixels.channels] == ["labels"]
    maps = {a.namespace: dict(a.value) for a in ome.structured_annotations.map_annotations}
    assert maps[ometiff_writer.NS_CLASSES] == {"0": "background", "1": "tumour", "2": "stroma"}
    assert maps[ometiff_writer.NS_COLORS] == {"0": "#000000", "1": "#e6194b", "2": "#3cb44b"}
    assert maps[ometiff_writer.NS_PROVENANCE]["model_sha256"] == "abc123"
    assert maps[ometiff_writer.NS_PROVENANCE]["nodata"] == "255"
    with OmeTiffReader(str(out), level=2) as r:  # and segpipe reads its own output
        assert r.info.pixel_size == (2.0, 1.0)
        np.testing.assert_array_equal(r.read(r.info.window)[0], data[::4, ::4])


def test_label_ome_tiff_without_pixel_size_has_no_physical_size(tmp_path):
    labels_path, data = _labels(tmp_path, "uint16")
    out = tmp_path / "mask.ome.tiff"
    ometiff_writer.write_labels(_job(labels_path, out, _info(pixel_size=None), nodata=65535))
    with tifffile.TiffFile(out) as tif:
        xml = tif.ome_metadata
        np.testing.assert_array_equal(tif.series[0].asarray(), data)
        assert tif.pages.first.dtype == np.uint16
        assert tif.pages.first.resolutionunit == tifffile.RESUNIT.NONE  # no resolution either
    assert "PhysicalSize" not in xml
    pixels = ome_types.from_xml(xml, validate=True).images[0].pixels
    assert pixels.physical_size_x is None and pixels.physical_size_y is None


def test_label_ome_tiff_streams_tile_rows(tmp_path, monkeypatch):
    labels_path, _ = _labels(tmp_path)
    counting = _CountingArray(zarr.open_array(labels_path, mode="r"))
    monkeypatch.setattr(ometiff_writer, "open_stored", lambda *a, **k: counting)
    ometiff_writer.write_labels(_job(labels_path, tmp_path / "m.ome.tif"), tile=T)
    assert 0 < counting.largest <= T * W  # one tile row of level 0 at most


def test_label_ome_tiff_failure_leaves_nothing(tmp_path, monkeypatch):
    labels_path, _ = _labels(tmp_path)

    def broken(*args, **kwargs):
        yield np.zeros((T, T), np.uint8)
        raise OSError("disk full")

    monkeypatch.setattr(ometiff_writer, "iter_tiles", broken)
    with pytest.raises(OSError, match="disk full"):
        ometiff_writer.write_labels(_job(labels_path, tmp_path / "m.ome.tif"), tile=T)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


def test_labels_of_another_image_are_refused(tmp_path):
    labels_path, _ = _labels(tmp_path)
    with pytest.raises(InputError, match="do not belong"):
        ometiff_writer.write_labels(
            _job(labels_path, tmp_path / "m.ome.tif", replace(_info(), height=H + 1))
        )
    with pytest.raises(InputError, match="3 class names but 2 colors"):
        replace(_job(labels_path, tmp_path / "m.ome.tif"), colors=tuple(COLORS[:2]))


# ------------------------------------------------------------------------------- OME-Zarr


def _ome_zarr_nodes(path, version):
    fmt = FormatV04() if version == "0.4" else FormatV05()
    return list(Reader(parse_url(str(path), fmt=fmt))())


@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize("with_image", [True, False])
def test_label_ome_zarr(tmp_path, version, with_image, caplog):
    labels_path, data = _labels(tmp_path)
    image = np.random.default_rng(1).integers(0, 255, (3, H, W), dtype=np.uint8)
    image_path = None
    if with_image:
        image_path = tmp_path / "image.zarr"
        create_array(image_path, image.shape, (3, T, T), "uint8")[:] = image
    out = tmp_path / "mask.ome.zarr"
    omezarr_writer.write_labels(_job(labels_path, out, image_path=image_path, version=version))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # independent validation: ome-zarr-models
    model = ome_zarr_models.open_ome_zarr(str(out), version=version)
    assert isinstance(model, ImageV04 if version == "0.4" else ImageV05)
    label_group = zarr.open_group(str(out / "labels" / "labels"), mode="r")
    label_model = ome_zarr_models.open_ome_zarr(label_group, version=version)
    assert isinstance(label_model, ImageLabelV04 if version == "0.4" else ImageLabelV05)

    # independent reading: ome-zarr's Reader
    with caplog.at_level(logging.ERROR):
        nodes = _ome_zarr_nodes(out, version)
    image_node = next(n for n in nodes if any(isinstance(s, Multiscales) for s in n.specs)
                      and not any(isinstance(s, Label) for s in n.specs))
    label_node = next(n for n in nodes if any(isinstance(s, Label) for s in n.specs))
    assert len(image_node.data) == len(label_node.data) == 4
    meta = label_node.metadata
    assert meta["color"][1] == pytest.approx([230 / 255, 25 / 255, 75 / 255, 1.0])
    assert meta["color"][NODATA][3] == 0  # nodata is transparent
    assert {k: v["class"] for k, v in meta["properties"].items()} == {
        0: "background", 1: "tumour", 2: "stroma", 255: "nodata",
    }
    for i, level in enumerate(label_node.data):
        np.testing.assert_array_equal(np.asarray(level)[0], data[:: 2**i, :: 2**i])
    for i, level in enumerate(image_node.data):
        expected = image[:, :: 2**i, :: 2**i] if with_image else 0
        np.testing.assert_array_equal(np.asarray(level), expected)
    axes = [a["name"] for a in meta["axes"]]
    assert axes == ["c", "y", "x"]
    assert {a.get("unit") for a in meta["axes"][1:]} == {"micrometer"}
    transforms = label_node.metadata["coordinateTransformations"]
    for i, t in enumerate(transforms):
        assert t == [{"type": "scale", "scale": [1.0, 0.5 * 2**i, 0.25 * 2**i]}]

    # segpipe reads it back too
    with OmeZarrReader(str(out), level=1) as r:
        assert r.info.pixel_size == (1.0, 0.5) and r.info.pixel_unit == "µm"
        if with_image:
            assert r.info.channel_names == ("red", "green", "blue")
    if not with_image:  # the placeholder costs no disk: no chunk was ever written
        chunk_files = [p for p in (out / "0").rglob("*") if p.is_file()]
        assert all(p.name in {".zarray", ".zattrs", "zarr.json"} for p in chunk_files)


def test_label_ome_zarr_without_pixel_size_is_unitless(tmp_path):
    labels_path, _ = _labels(tmp_path)
    out = tmp_path / "m.ome.zarr"
    omezarr_writer.write_labels(_job(labels_path, out, _info(pixel_size=None)))
    attrs = zarr.open_group(str(out / "labels" / "labels"), mode="r").attrs.asdict()
    multiscale = attrs["multiscales"][0]
    assert all("unit" not in a for a in multiscale["axes"])
    assert multiscale["datasets"][2]["coordinateTransformations"][0]["scale"] == [1.0, 4.0, 4.0]
    assert [c["label-value"] for c in attrs["image-label"]["colors"]] == [0, 1, 2, NODATA]
    with OmeZarrReader(str(out)) as r:
        assert r.info.pixel_size is None


def test_label_ome_zarr_streams_chunk_rows(tmp_path, monkeypatch):
    labels_path, _ = _labels(tmp_path)
    counting = _CountingArray(zarr.open_array(labels_path, mode="r"))
    monkeypatch.setattr(omezarr_writer, "open_stored", lambda *a, **k: counting)
    omezarr_writer.write_labels(_job(labels_path, tmp_path / "m.ome.zarr"))
    assert 0 < counting.largest <= T * W


def test_unknown_ngff_version():
    with pytest.raises(InputError, match=r"--ngff-version '0\.3' is not one of 0\.4, 0\.5"):
        ExportOptions(ngff_version="0.3")
