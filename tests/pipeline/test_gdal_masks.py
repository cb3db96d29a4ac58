"""Masks GDAL reports (a per-dataset mask band, an alpha band, a nodata value) mean nodata.

Inputs are written with rasterio (an internal mask with ``write_mask`` under
``GDAL_TIFF_INTERNAL_MASK``, an RGBA GeoTIFF with an alpha band, a declared nodata value); the
oracle for where the input has no image is rasterio's ``read_masks()`` of the input. Labels come
from the identity 1×1 model, so they are known in advance: the output must be exactly 255 where
the mask is 0 and the known labels elsewhere, declare nodata 255, and the areas must count only
the unmasked pixels (numpy counts times the 30 m pixel's 900 m²). Statistics are checked against
numpy percentiles of the unmasked pixels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags

from segpipe.flows.cli import main
from segpipe.flows.cmd_inspect import render
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import smooth_image
from tests.corpus.harness import assert_rejected, prefect_server, run_segpipe, snapshot
from tests.pipeline.labelmodel import argmax_model, blobs, one_hot
from tests.pipeline.test_exactness import tiny_unet

# runs of the CLI in subprocesses: minutes in all, in the slow set (make test stays < 15 min)
pytestmark = pytest.mark.slow

CLASSES = 3
SHAPE = (70, 90)
UTM_33N = CRS.from_epsg(32633)
GRID = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 5000000.0)
PIXEL_AREA = 900.0  # m², 30 m × 30 m
NODATA = 255
COMMON = ("--workers", "0", "--quiet", "--tile", "32", "--device", "cpu")


def hole(shape: tuple[int, int]) -> np.ndarray:
    """A uint8 mask (255 valid, 0 masked): a disc and a strip crossing tile and block borders."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    masked = ((yy - 30) ** 2 + (xx - 40) ** 2 < 15**2) | ((xx >= 70) & (yy < 50))
    return np.where(masked, 0, 255).astype(np.uint8)


def image_of(labels: np.ndarray) -> np.ndarray:
    """Bands of 1 and 2 whose argmax is ``labels`` (no 0: 0 may be a nodata value)."""
    return one_hot(labels, CLASSES) + 1


def profile(bands: int, dtype: str = "uint8", **extra: object) -> dict:
    return {"driver": "GTiff", "height": SHAPE[0], "width": SHAPE[1], "count": bands,
            "dtype": dtype, "crs": UTM_33N, "transform": GRID, "tiled": True,
            "blockxsize": 16, "blockysize": 16, **extra}


def with_internal_mask(path: Path, data: np.ndarray, mask: np.ndarray, *,
                       overviews: bool = False) -> Path:
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile(data.shape[0], str(data.dtype))) as dst:
            dst.write(data)
            dst.write_mask(mask)
        if overviews:
            with rasterio.open(path, "r+") as dst:
                dst.build_overviews([2])
    return path


def rgba(path: Path, rgb: np.ndarray, alpha: np.ndarray) -> Path:
    with rasterio.open(path, "w", **profile(4, photometric="RGB", alpha="YES")) as dst:
        dst.write(rgb, [1, 2, 3])
        dst.write(alpha, 4)
    return path


def with_nodata(path: Path, data: np.ndarray, mask: np.ndarray) -> Path:
    data = data.copy()
    data[:, mask == 0] = 0
    with rasterio.open(path, "w", **profile(data.shape[0], nodata=0)) as dst:
        dst.write(data)
    return path


def input_mask(path: Path, *, overview_level: int | None = None) -> np.ndarray:
    """rasterio's ``read_masks()`` of the input: the same for every image band (checked)."""
    kw = {} if overview_level is None else {"overview_level": overview_level}
    with rasterio.open(path, **kw) as src:
        bands = [i for i, c in enumerate(src.colorinterp, 1) if c.name != "alpha"]
        masks = src.read_masks(bands)
    assert (masks == masks[:1]).all()
    return masks[0]


def read_output(path: Path) -> tuple[np.ndarray, float | None]:
    with rasterio.open(path) as out:
        return out.read(1), out.nodata


def areas_table(output: Path) -> dict[int, dict[str, str]]:
    with open(output.with_name(output.stem + ".areas.csv"), newline="") as f:
        return {int(row["label"]): row for row in csv.DictReader(f)}


def check_labels_and_areas(out: Path, expected: np.ndarray, mask: np.ndarray) -> None:
    """Nodata exactly where ``mask`` is 0, ``expected`` elsewhere; areas of the unmasked only."""
    got, nodata = read_output(out)
    assert nodata == NODATA
    np.testing.assert_array_equal(got == NODATA, mask == 0)
    np.testing.assert_array_equal(got[mask != 0], expected[mask != 0])
    table = areas_table(out)
    for k in range(CLASSES):
        count = int(((expected == k) & (mask != 0)).sum())
        assert int(table[k]["pixels"]) == count, k
        assert float(table[k]["area"]) == pytest.approx(count * PIXEL_AREA, rel=1e-12), k


def segpipe_run(src: Path, out: Path, model: Path, *extra: str) -> int:
    """``segpipe run`` through the command line's entry point, in this process."""
    return main(["run", "--input", str(src), "--output", str(out), "--model", str(model),
                 *COMMON, *extra])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("models")
    return {k: argmax_model(d / f"argmax{k}.pt2", k) for k in (3, 4)}


# ------------------------------------------------------------------------ the three kinds


def test_a_per_dataset_mask_is_nodata_in_labels_probabilities_and_areas(
    tmp_path: Path, models: dict[int, Path], capsys: pytest.CaptureFixture[str]
):
    labels, mask = blobs(SHAPE, CLASSES, seed=11), hole(SHAPE)
    src = with_internal_mask(tmp_path / "masked.tif", image_of(labels), mask)
    with rasterio.open(src) as ds:
        assert ds.mask_flag_enums[0] == [MaskFlags.per_dataset] and ds.nodata is None
    assert (input_mask(src) == mask).all()
    out = tmp_path / "out.tif"
    assert segpipe_run(src, out, models[3], "--probabilities") == 0, capsys.readouterr().err
    check_labels_and_areas(out, labels, mask)
    with rasterio.open(tmp_path / "out.probabilities.tif") as probs:
        p = probs.read()
    assert (p[:, mask == 0] == 0).all() and (p[:, mask != 0].sum(axis=0) > 0.99).all()


def test_an_alpha_band_is_a_mask_not_a_model_band(
    tmp_path: Path, models: dict[int, Path], capsys: pytest.CaptureFixture[str]
):
    labels, mask = blobs(SHAPE, CLASSES, seed=12), hole(SHAPE)
    alpha = np.where(mask == 0, 0, 128 + (labels * 40)).astype(np.uint8)  # partial alpha: image
    src = rgba(tmp_path / "rgba.tif", image_of(labels), alpha)
    with rasterio.open(src) as ds:
        assert ds.count == 4 and MaskFlags.alpha in ds.mask_flag_enums[0]
    assert ((input_mask(src) == 0) == (mask == 0)).all()
    out = tmp_path / "out.tif"
    # a 3-band model on a 4-band RGBA file: the alpha band is not an image band
    assert segpipe_run(src, out, models[3]) == 0, capsys.readouterr().err
    check_labels_and_areas(out, labels, input_mask(src))


def test_a_model_sees_the_alpha_band_only_when_bands_names_it(
    tmp_path: Path, models: dict[int, Path], capsys: pytest.CaptureFixture[str]
):
    labels, mask = blobs(SHAPE, CLASSES, seed=13), hole(SHAPE)
    src = rgba(tmp_path / "rgba.tif", image_of(labels), mask)
    out = tmp_path / "out.tif"
    assert segpipe_run(src, out, models[4], "--bands", "1,2,3,4") == 0, capsys.readouterr().err
    got, nodata = read_output(out)
    # the identity model's class 3 is the alpha band (255 where opaque): it wins where it is
    # image; transparent pixels are still nodata
    assert nodata == NODATA
    np.testing.assert_array_equal(got, np.where(mask == 0, NODATA, 3))


def test_without_bands_a_model_of_four_is_refused_naming_the_alpha_band(
    tmp_path: Path, models: dict[int, Path]
):
    labels, mask = blobs(SHAPE, CLASSES, seed=14), hole(SHAPE)
    rgba(tmp_path / "rgba.tif", image_of(labels), mask)
    (tmp_path / "m.pt2").write_bytes(models[4].read_bytes())
    before = snapshot(tmp_path)
    result = run_segpipe(["run", "--input", "rgba.tif", "--output", "out.tif", "--model",
                          "m.pt2", *COMMON], tmp_path, api=prefect_server())
    assert_rejected(result, tmp_path, before, tmp_path / "out.tif")
    line = result.stderr.strip()
    assert "3 image bands (and the alpha band 4, a mask" in line, line
    assert "--bands 1,2,3,4" in line, line


def test_a_nodata_value_masks_as_before(
    tmp_path: Path, models: dict[int, Path], capsys: pytest.CaptureFixture[str]
):
    labels, mask = blobs(SHAPE, CLASSES, seed=15), hole(SHAPE)
    src = with_nodata(tmp_path / "nodata.tif", image_of(labels), mask)
    with rasterio.open(src) as ds:
        assert ds.mask_flag_enums[0] == [MaskFlags.nodata]
    assert (input_mask(src) == mask).all()
    out = tmp_path / "out.tif"
    assert segpipe_run(src, out, models[3]) == 0, capsys.readouterr().err
    check_labels_and_areas(out, labels, mask)


# ---------------------------------------------------------------- statistics and levels


def test_masked_pixels_are_left_out_of_the_statistics(tmp_path: Path):
    image = smooth_image((3, *SHAPE), "uint16", seed=16)
    mask = hole(SHAPE)
    image[:, mask == 0] = 65535  # bright under the mask: it would move the 99th percentile
    src = with_internal_mask(tmp_path / "masked.tif", image, mask)
    model = tiny_unet(tmp_path / "m.pt", 3, "valid")
    summary = run_one(RunOptions.of(str(src), str(tmp_path / "out.tif"), model=str(model),
                                    tile=32, device="cpu", normalize="percentile"))
    valid = mask != 0
    low = [np.percentile(band[valid], 1) for band in image]
    high = [np.percentile(band[valid], 99) for band in image]
    np.testing.assert_allclose(summary["normalizer"]["offset"], low, rtol=1e-12)
    np.testing.assert_allclose(summary["normalizer"]["scale"],
                               [1 / (h - lo) for lo, h in zip(low, high)], rtol=1e-9)
    assert summary["nodata_pixels"] == int((~valid).sum())
    labels, _ = read_output(tmp_path / "out.tif")
    np.testing.assert_array_equal(labels == NODATA, ~valid)


def test_at_an_overview_level_the_mask_is_the_overviews(
    tmp_path: Path, models: dict[int, Path]
):
    labels, mask = blobs(SHAPE, CLASSES, seed=17), hole(SHAPE)
    src = with_internal_mask(tmp_path / "masked.tif", image_of(labels), mask, overviews=True)
    level_mask = input_mask(src, overview_level=0)
    assert 0 < (level_mask == 0).sum() < level_mask.size
    with rasterio.open(src, overview_level=0) as level1:
        expected = level1.read().argmax(axis=0)  # the identity model on the overview's pixels
    out = tmp_path / "out.tif"
    run_one(RunOptions.of(str(src), str(out), model=str(models[3]), tile=32, device="cpu",
                          level=1))
    got, _ = read_output(out)
    assert got.shape == level_mask.shape
    np.testing.assert_array_equal(got == NODATA, level_mask == 0)
    np.testing.assert_array_equal(got[level_mask != 0], expected[level_mask != 0])


# ------------------------------------------------------------------------------ inspect


def test_inspect_shows_each_kind_of_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    labels, mask = blobs(SHAPE, CLASSES, seed=18), hole(SHAPE)
    inputs = {
        "per_dataset": with_internal_mask(tmp_path / "a.tif", image_of(labels), mask),
        "alpha": rgba(tmp_path / "b.tif", image_of(labels), mask),
        "nodata": with_nodata(tmp_path / "c.tif", image_of(labels), mask),
    }
    shown = {
        "per_dataset": "per-dataset mask band",
        "alpha": "alpha band 4: transparent pixels are nodata",
        "nodata": "nodata value 0",
    }
    for kind, path in inputs.items():
        capsys.readouterr()
        assert main(["inspect", str(path), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["input"]["mask"] == {"kind": kind, "band": 4 if kind == "alpha" else None}
        rows = [line for line in render(report).splitlines() if line.startswith("  mask")]
        assert len(rows) == 1 and shown[kind] in rows[0], rows


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_a_plain_tiff_with_an_internal_mask_is_read_with_its_mask(tmp_path: Path):
    """No georeferencing, no GDAL tags: the mask IFD alone sends it to GDAL's reader."""
    from segpipe.pipeline.io.base import open_raster
    from segpipe.pipeline.tiling import Window

    labels, mask = blobs(SHAPE, CLASSES, seed=19), hole(SHAPE)
    path = tmp_path / "plain.tif"
    plain = {k: v for k, v in profile(CLASSES).items() if k not in ("crs", "transform")}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **plain) as dst:
        dst.write(image_of(labels))
        dst.write_mask(mask)
    with open_raster(path) as reader:
        assert reader.info.mask == "per_dataset"
        window = Window(5, 7, 50, 60)
        got = reader.read_mask(window)
    assert got is not None
    np.testing.assert_array_equal(got, input_mask(path)[window.slices] != 0)
