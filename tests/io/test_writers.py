"""write_outputs: every format with probabilities, atomicity, the label COG.

The quicklook is not the export's: the report stage writes it (tests/pipeline/test_quicklook.py).
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import ome_types
import ome_zarr_models
import pytest
import rasterio
import rasterio.env
import rasterio.shutil
import tifffile
import zarr
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from segpipe.models.foundation import InputError, atomic_output
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.gdal import GDAL_CACHE_BYTES
from segpipe.pipeline.io.pyramid import info_at_level
from segpipe.pipeline.io.writers import ExportJob, write_outputs
from segpipe.pipeline.io.writers import geotiff as geotiff_writer
from segpipe.pipeline.io.writers import ometiff as ometiff_writer
from segpipe.pipeline.io.writers import omezarr as omezarr_writer
from segpipe.pipeline.io.writers.common import companion_path, probabilities_path
from segpipe.pipeline.io.zarrstore import create_array
from segpipe.pipeline.options import ExportOptions, OutputFormat

with warnings.catch_warnings():  # ome_zarr.writer (imported by ome_zarr.reader) deprecates Scaler
    warnings.simplefilter("ignore", DeprecationWarning)
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

H, W, T, K = 600, 530, 64, 3
CLASSES = ("background", "tumour", "stroma")
COLORS = ((0, 0, 0), (230, 25, 75), (60, 180, 75))
NODATA = 255
UTM = CRS.from_epsg(32621).to_wkt()
GEO = (30.0, 0.0, 300000.0, 0.0, -30.0, 5000000.0)
TAGS = {"SEGPIPE_MODEL_SHA256": "abc123", "SEGPIPE_TILE": "256"}


@pytest.fixture
def work(tmp_path):
    """The work directory: labels (H, W), probabilities (K, H, W), image (3, H, W)."""
    rng = np.random.default_rng(0)
    workdir = tmp_path / "work"
    workdir.mkdir()
    labels = rng.integers(0, K, (H, W)).astype(np.uint8)
    labels[:20, :30] = NODATA
    create_array(workdir / "labels.zarr", labels.shape, (T, T), "uint8")[:] = labels
    logits = rng.standard_normal((K, H, W)).astype(np.float32)
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float16)
    create_array(workdir / "probs.zarr", probs.shape, (K, T, T), "float16")[:] = probs
    image = rng.integers(0, 255, (3, H, W), dtype=np.uint8)
    create_array(workdir / "image.zarr", image.shape, (3, T, T), "uint8")[:] = image
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return workdir, out_dir, {"labels": labels, "probs": probs, "image": image}


def _info(fmt: OutputFormat) -> RasterInfo:
    if fmt is OutputFormat.GEOTIFF:
        return RasterInfo(
            path="/data/scene.tif", format="gdal", height=H, width=W, bands=3, dtype="uint8",
            crs_wkt=UTM, transform=GEO, levels=((H, W),),
        )
    return RasterInfo(
        path="/data/slide.ome.tif", format="ome-tiff", height=H, width=W, bands=3,
        dtype="uint8", pixel_size=(0.5, 0.25), pixel_unit="µm",
        channel_names=("red", "green", "blue"), levels=((H, W),),
    )


def _job(workdir, out, **kw) -> ExportJob:
    fmt = OutputFormat.from_path(out)
    defaults = {
        "labels_path": str(workdir / "labels.zarr"), "out": str(out), "info": _info(fmt),
        "class_names": CLASSES, "colors": COLORS, "nodata": NODATA, "tags": TAGS,
        "probabilities_path": str(workdir / "probs.zarr"),
        "probability_names": CLASSES, "image_path": str(workdir / "image.zarr"),
    }
    return ExportJob(**{**defaults, **kw})


def _hidden(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------ write_outputs


def test_write_outputs_geotiff(work):
    workdir, out_dir, data = work
    out = out_dir / "mask.tif"
    written = write_outputs(_job(workdir, out))
    probs_out = out_dir / "mask.probabilities.tif"
    assert written == [str(out), str(probs_out)]  # the quicklook comes with the report
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.rsplit("/", 1)[1] for p in written)
    for path in (out, probs_out):
        valid, errors, _ = cog_validate(str(path), strict=True)
        assert valid, errors
    with rasterio.open(out) as ds:
        assert ds.crs == CRS.from_wkt(UTM) and tuple(ds.transform)[:6] == GEO
        assert (ds.count, ds.dtypes[0], ds.nodata) == (1, "uint8", NODATA)
        np.testing.assert_array_equal(ds.read(1), data["labels"])
        assert ds.overviews(1) == [2]
    with rasterio.open(probs_out) as ds:
        assert ds.descriptions == CLASSES and ds.dtypes[0] == "float32"
        np.testing.assert_array_equal(ds.read(), data["probs"].astype(np.float32))
    assert not list(workdir.glob("*staging*"))


def test_write_outputs_ome_tiff(work):
    workdir, out_dir, data = work
    out = out_dir / "mask.ome.tif"
    written = write_outputs(_job(workdir, out))
    probs_out = out_dir / "mask.probabilities.ome.tif"
    assert written == [str(out), str(probs_out)]
    with tifffile.TiffFile(out) as tif:
        ome = ome_types.from_xml(tif.ome_metadata, validate=True)
        np.testing.assert_array_equal(tif.series[0].asarray(), data["labels"])
    assert ome.images[0].pixels.physical_size_x == 0.25
    maps = {a.namespace: dict(a.value) for a in ome.structured_annotations.map_annotations}
    assert maps[ometiff_writer.NS_PROVENANCE]["SEGPIPE_MODEL_SHA256"] == "abc123"
    with tifffile.TiffFile(probs_out) as tif:
        pixels = ome_types.from_xml(tif.ome_metadata, validate=True).images[0].pixels
        assert [c.name for c in pixels.channels] == list(CLASSES)
        np.testing.assert_array_equal(tif.series[0].asarray(), data["probs"].astype(np.float32))
    assert _hidden(out_dir) == []


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_write_outputs_ome_zarr(work, version, caplog):
    workdir, out_dir, data = work
    out = out_dir / "mask.ome.zarr"
    job = _job(workdir, out, options=ExportOptions(ngff_version=version))
    written = write_outputs(job)
    probs_out = out_dir / "mask.probabilities.ome.zarr"
    assert written == [str(out), str(probs_out)]
    assert _hidden(out_dir) == []
    fmt = FormatV04() if version == "0.4" else FormatV05()
    for path in (out, probs_out):
        ome_zarr_models.open_ome_zarr(str(path), version=version)  # raises unless valid
    with caplog.at_level(logging.ERROR):
        nodes = list(Reader(parse_url(str(out), fmt=fmt))())
        (probs_node,) = list(Reader(parse_url(str(probs_out), fmt=fmt))())
    label_node = next(n for n in nodes if any(isinstance(s, Label) for s in n.specs))
    image_node = nodes[0]
    for i, level in enumerate(label_node.data):
        np.testing.assert_array_equal(np.asarray(level)[0], data["labels"][:: 2**i, :: 2**i])
    np.testing.assert_array_equal(np.asarray(image_node.data[0]), data["image"])
    np.testing.assert_array_equal(np.asarray(probs_node.data[0]), data["probs"])
    np.testing.assert_array_equal(np.asarray(probs_node.data[1]), data["probs"][:, ::2, ::2])
    assert probs_node.metadata["channel_names"] == list(CLASSES)
    transforms = probs_node.metadata["coordinateTransformations"]
    assert transforms[1] == [{"type": "scale", "scale": [1.0, 1.0, 0.5]}]


def test_write_outputs_without_probabilities(work):
    workdir, out_dir, _ = work
    out = out_dir / "mask.tif"
    written = write_outputs(_job(workdir, out, probabilities_path=None))
    assert written == [str(out)]
    assert not probabilities_path(out).exists()


def test_write_outputs_bounds_the_gdal_cache(work, monkeypatch):
    workdir, out_dir, _ = work
    seen = []

    def spy(job):
        seen.append(rasterio.env.getenv().get("GDAL_CACHEMAX"))
        return [job.out]

    monkeypatch.setattr(geotiff_writer, "write", spy)
    write_outputs(_job(workdir, out_dir / "mask.tif"))
    assert seen == [GDAL_CACHE_BYTES] == [64 << 20]


def _fail_cog_copy(monkeypatch):
    def broken(src, dst, **kw):
        with open(dst, "wb") as f:
            f.write(b"II*\x00half a file")
        raise OSError("disk full")

    monkeypatch.setattr(rasterio.shutil, "copy", broken)


def _fail_tiles(monkeypatch):
    def broken(*args, **kwargs):
        yield np.zeros((T, T), np.uint8)
        raise OSError("disk full")

    monkeypatch.setattr(ometiff_writer, "iter_tiles", broken)


def _fail_pyramid(monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(omezarr_writer, "read_nearest", broken)


@pytest.mark.parametrize(
    ("name", "fail"),
    [("mask.tif", _fail_cog_copy), ("mask.ome.tif", _fail_tiles),
     ("mask.ome.zarr", _fail_pyramid)],
)
@pytest.mark.parametrize("existing", [False, True])
def test_a_failing_writer_publishes_nothing(work, monkeypatch, name, fail, existing):
    workdir, out_dir, _ = work
    out = out_dir / name
    if existing:  # an earlier output (being overwritten) is left as it was
        write_outputs(_job(workdir, out, probabilities_path=None))
        before = sorted(p.name for p in out_dir.iterdir())
    fail(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(_job(workdir, out))
    assert _hidden(out_dir) == []
    assert not list(workdir.glob("*staging*"))
    if existing:
        assert sorted(p.name for p in out_dir.iterdir()) == before
        assert out.exists()
    else:
        assert list(out_dir.iterdir()) == []


def test_ome_zarr_output_is_replaced_whole(work):
    workdir, out_dir, _ = work
    out = out_dir / "mask.ome.zarr"
    write_outputs(_job(workdir, out, probabilities_path=None))
    zarr.open_array(workdir / "labels.zarr", mode="r+")[:] = 1
    write_outputs(_job(workdir, out, probabilities_path=None, image_path=None))
    labels = zarr.open_array(out / "labels" / "labels" / "0", mode="r")
    assert (np.asarray(labels[:]) == 1).all()
    assert not [p for p in (out / "0").rglob("*") if p.is_file() and p.name[0].isdigit()]
    assert _hidden(out_dir) == []


def test_our_ome_zarr_levels_agree_with_info_at_level(work):
    from segpipe.pipeline.io.base import open_raster

    workdir, out_dir, _ = work
    out = out_dir / "m.ome.zarr"
    write_outputs(_job(workdir, out, probabilities_path=None))
    info0 = open_raster(out).info
    for k in range(len(info0.levels)):
        with open_raster(out, level=k) as r:
            assert info_at_level(info0, k) == r.info


# ------------------------------------------------------------------------ the label COG


def _majority_labels(workdir) -> np.ndarray:
    """Every 2x2 cell: three of one class, the top-left pixel another."""
    rng = np.random.default_rng(3)
    cells = rng.integers(0, K, (H // 2, W // 2)).astype(np.uint8)
    labels = np.repeat(np.repeat(cells, 2, 0), 2, 1)
    labels[::2, ::2] = (cells + 1) % K
    create_array(workdir / "maj.zarr", labels.shape, (T, T), "uint8")[:] = labels
    return labels


@pytest.mark.parametrize("resampling", ["nearest", "mode"])
def test_label_cog_tags_colors_and_overviews(work, resampling):
    workdir, out_dir, _ = work
    labels = _majority_labels(workdir)
    job = _job(
        workdir, out_dir / "m.tif", labels_path=str(workdir / "maj.zarr"),
        options=ExportOptions(overview_resampling=resampling),
    )
    out = geotiff_writer.write_labels(job)
    with rasterio.open(out) as ds:
        tags = ds.tags()
        assert tags["SEGPIPE_MODEL_SHA256"] == "abc123"
        assert json.loads(tags["CLASS_NAMES"]) == list(CLASSES)
        assert ds.tags(1)["CLASS_1"] == "tumour"
        assert ds.descriptions == ("labels",)
        assert ds.colormap(1)[1] == (230, 25, 75, 255)
        np.testing.assert_array_equal(ds.read(1), labels)
    with rasterio.open(out, overview_level=0) as ov:
        level1 = ov.read(1)
    majority = labels[1::2, 1::2]
    expected = labels[::2, ::2] if resampling == "nearest" else majority
    np.testing.assert_array_equal(level1, expected)


def test_uint16_labels_have_no_color_table(work):
    workdir, out_dir, _ = work
    labels = np.full((H, W), 2, np.uint16)
    labels[0, 0] = 65535
    create_array(workdir / "l16.zarr", labels.shape, (T, T), "uint16")[:] = labels
    job = _job(workdir, out_dir / "m.tif", labels_path=str(workdir / "l16.zarr"), nodata=65535)
    with rasterio.open(geotiff_writer.write_labels(job)) as ds:
        assert (ds.dtypes[0], ds.nodata) == ("uint16", 65535)
        with pytest.raises(ValueError):
            ds.colormap(1)
        np.testing.assert_array_equal(ds.read(1), labels)


# ----------------------------------------------------------------------- names and atomicity


def test_output_format_and_companion_paths():
    assert OutputFormat.from_path("a/mask.tif") is OutputFormat.GEOTIFF
    assert OutputFormat.from_path("mask.OME.TIFF") is OutputFormat.OME_TIFF
    assert OutputFormat.from_path("mask.ome.zarr/") is OutputFormat.OME_ZARR
    with pytest.raises(InputError, match=r"\.ome\.zarr"):
        OutputFormat.from_path("mask.png")
    assert probabilities_path("d/mask.tif").as_posix() == "d/mask.probabilities.tif"
    assert probabilities_path("mask.ome.tif").name == "mask.probabilities.ome.tif"
    assert probabilities_path("mask.ome.zarr").name == "mask.probabilities.ome.zarr"
    assert companion_path("d/mask.ome.zarr", "quicklook", ".png").name == "mask.quicklook.png"


def test_atomic_output_replaces_only_on_success(tmp_path):
    out = tmp_path / "mask.tif"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out) as partial:
        partial.write_text("half")
        raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]
    with atomic_output(out) as partial:
        assert partial.parent.parent == out.parent and partial.parent.name.startswith(".")
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
