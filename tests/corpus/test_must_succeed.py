"""Awkward inputs that must work, and a model that fails in some blocks only.

Each output is read back with rasterio, the oracle: its size and georeferencing, and nodata
exactly where the input has nothing to segment. Non-finite values (NaN, +inf, -inf) count as
nodata, like the declared nodata value and the masks GDAL reports (an internal mask band, an
alpha band: nodata exactly where rasterio's ``read_masks()`` is 0); GCPs come back as they went
in; an input whose every pixel is nodata gives an
all-nodata mask and one warning. A model that returns NaN only for some pixels makes exactly
the blocks that meet them fail: they are nodata in the label array, listed in the summary, and
the run exits 1 without an output (labels never come from non-finite logits).
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from tests.corpus.harness import Call, case_params, documented, run_segpipe, shown, strip_tmp
from tests.corpus.makers import CRS_UTM_33N, TRANSFORM, gcp_geotiff, geotiff, pixels, tiny_model

TITLE = "Awkward inputs that must work"
HELD = ("exit 0 and an output checked with rasterio (size, georeferencing, nodata exactly "
        "where the input has none); the one exit-1 case leaves no output and names its blocks")
NODATA_LABEL = 255
COMMON = ("--workers", "0", "--quiet")


@dataclass(frozen=True)
class Awkward:
    """A call that must work: what was tried, how to make it, the exit code, the oracle.

    ``check(folder, result)`` asserts on the outcome and returns the stderr line to document
    (a warning or an error line; empty when there is none).
    """

    what: str
    make: Callable[[Path], Call]
    check: Callable[[Path, subprocess.CompletedProcess[str]], str]
    exit: int = 0


def call_on(name: str, *extra: str) -> Call:
    return Call(("run", "--input", name, "--output", "mask.tif", "--model", "tiny.pt", *extra))


def quiet(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a success said nothing on stderr (no warning, no Python warning, no traceback)."""
    assert result.returncode == 0, shown(result)
    assert not result.stderr.strip(), shown(result)
    return ""


def one_warning(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Assert a success printed exactly one warning line holding ``words``; return it."""
    assert result.returncode == 0, shown(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("WARNING: "), shown(result)
    assert all(w in lines[0] for w in words), shown(result)
    return lines[0]


def labels(folder: Path) -> tuple[np.ndarray, rasterio.profiles.Profile]:
    """The output's labels and profile (a PNG input gives one without georeferencing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(folder / "mask.tif") as out:
            return out.read(1), out.profile


# ------------------------------------------------------------------------------- the cases


def png_renamed(folder: Path) -> Call:
    tiny_model(folder)
    Image.fromarray(np.moveaxis(pixels(), 0, -1)).save(folder / "x.tif", format="PNG")
    return call_on("x.tif")


def png_check(folder: Path, result: subprocess.CompletedProcess[str]) -> str:
    line = quiet(result)
    values, profile = labels(folder)
    assert values.shape == (64, 64) and profile["crs"] is None
    assert set(np.unique(values)) <= {0, 1, 2}  # classes everywhere: a PNG declares no nodata
    return line


def one_pixel(folder: Path) -> Call:
    tiny_model(folder)
    geotiff(folder / "x.tif", pixels()[:, :1, :1])
    return call_on("x.tif")


def one_pixel_check(folder: Path, result: subprocess.CompletedProcess[str]) -> str:
    line = quiet(result)
    values, profile = labels(folder)
    assert values.shape == (1, 1) and int(values[0, 0]) in (0, 1, 2)
    assert profile["crs"] == CRS_UTM_33N and profile["transform"] == TRANSFORM
    return line


def all_nodata(folder: Path) -> Call:
    tiny_model(folder)
    geotiff(folder / "x.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    return call_on("x.tif")


def non_finite(fill: tuple[float, float, float]) -> Callable[[Path], Call]:
    """Float bands filled with ``fill`` (one value per band) everywhere."""

    def make(folder: Path) -> Call:
        tiny_model(folder)
        data = np.empty((3, 64, 64), np.float32)
        data[:] = np.asarray(fill, np.float32)[:, None, None]
        geotiff(folder / "x.tif", data)
        return call_on("x.tif")

    return make


def all_nodata_check(folder: Path, result: subprocess.CompletedProcess[str]) -> str:
    line = one_warning(result, "every pixel of x.tif is nodata")
    values, profile = labels(folder)
    assert values.shape == (64, 64) and profile["nodata"] == NODATA_LABEL
    assert (values == NODATA_LABEL).all()
    return line


#: the right half of the image: NaN, +inf and -inf, one per band
HALF = (slice(None), slice(32, None))


def half_non_finite(folder: Path) -> Call:
    tiny_model(folder)
    data = pixels(dtype="float32")
    for band, value in enumerate((np.nan, np.inf, -np.inf)):
        data[band][HALF] = value
    geotiff(folder / "x.tif", data)
    return call_on("x.tif")


def half_check(folder: Path, result: subprocess.CompletedProcess[str]) -> str:
    line = quiet(result)
    values, _ = labels(folder)
    empty = np.zeros(values.shape, bool)
    empty[HALF] = True
    assert (values[empty] == NODATA_LABEL).all()
    assert np.isin(values[~empty], [0, 1, 2]).all()
    return line


def halo_zero(folder: Path) -> Call:
    tiny_model(folder, padding="same")
    geotiff(folder / "x.tif")
    return call_on("x.tif", "--halo", "0")


def halo_zero_check(folder: Path, result: subprocess.CompletedProcess[str]) -> str:
    line = quiet(result)
    values, _ = labels(folder)
    assert values.shape == (64, 64) and np.isin(values, [0, 1, 2]).all()
    with rasterio.open(folder / "mask.tif") as out:
        assert out.tags()["SEGPIPE_HALO"] == "0"
    return line


def gcp_only(folder: Path) -> Call:
    tiny_model(folder)
    gcp_geotiff(folder / "x.tif")
    return call_on("x.tif")


def gcp_check(folder: Path, result: subprocess.CompletedProcess[str]) -> str:
    line = quiet(result)
    values, _ = labels(folder)
    assert values.shape == (64, 64) and np.isin(values, [0, 1, 2]).all()
    with rasterio.open(folder / "x.tif") as src, rasterio.open(folder / "mask.tif") as out:
        (want, want_crs), (got, got_crs) = src.gcps, out.gcps
        assert [(g.row, g.col, g.x, g.y, g.z) for g in got] == [
            (g.row, g.col, g.x, g.y, g.z) for g in want]
        assert got_crs == want_crs == CRS_UTM_33N and out.transform.is_identity
    return line


#: the masked part of the masked inputs: a square across the four 32 px tiles
MASKED = (slice(16, 48), slice(16, 48))


def internal_mask(folder: Path) -> Call:
    tiny_model(folder)
    mask = np.full((64, 64), 255, np.uint8)
    mask[MASKED] = 0
    path = geotiff(folder / "x.tif")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    return call_on("x.tif")


def rgba_alpha(folder: Path) -> Call:
    tiny_model(folder)
    alpha = np.full((1, 64, 64), 255, np.uint8)
    alpha[(0, *MASKED)] = 0
    geotiff(folder / "x.tif", np.concatenate([pixels(), alpha]), photometric="RGB",
            alpha="YES")
    return call_on("x.tif")


def masked_check(folder: Path, result: subprocess.CompletedProcess[str]) -> str:
    line = quiet(result)
    values, profile = labels(folder)
    with rasterio.open(folder / "x.tif") as src:
        masked = src.read_masks(1) == 0
    assert masked.sum() == 32 * 32 and profile["nodata"] == NODATA_LABEL
    np.testing.assert_array_equal(values == NODATA_LABEL, masked)
    assert np.isin(values[~masked], [0, 1, 2]).all()
    return line


def nan_in_one_block(folder: Path) -> Call:
    """A 1-band image whose block 1_1 is bright, and a model that returns NaN where bright."""
    from segpipe.models.saving import export_program
    from tests.pipeline.test_nonfinite_logits import NanWhereBright

    export_program(NanWhereBright(limit=100.0), folder / "nan_bright.pt2", card=None,
                   in_channels=1)
    image = np.random.default_rng(0).integers(0, 90, (1, 64, 96), dtype=np.uint8)
    image[0, 32:64, 32:64] = 200
    geotiff(folder / "x.tif", image)
    return Call(("run", "--input", "x.tif", "--output", "mask.tif", "--model", "nan_bright.pt2",
                 "--tile", "32", "--halo", "0", "--block-pixels", "32"))


def nan_block_check(folder: Path, result: subprocess.CompletedProcess[str]) -> str:
    from segpipe.pipeline.io.zarrstore import open_array

    assert result.returncode == 1, shown(result)
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "1 of 6 blocks" in errors[0] and "1_1" in errors[0], shown(result)
    assert "Traceback" not in result.stderr
    assert not (folder / "mask.tif").exists()
    workdir = folder / ".mask.tif.segpipe"
    summary = json.loads((workdir / "summary.json").read_text())
    assert list(summary["failed_blocks"]) == ["1_1"] and "NaN" in summary["failed_blocks"]["1_1"]
    values = np.asarray(open_array(workdir / "labels.zarr", mode="r")[:])
    with rasterio.open(folder / "x.tif") as src:
        image = src.read(1)
    bright = image > 100
    assert (values[bright] == NODATA_LABEL).all()
    expected = np.where(image >= 50, 0, 1)  # the model's rule (a tie is class 0), in numpy
    np.testing.assert_array_equal(values[~bright], expected[~bright])
    return errors[0]


CASES = {
    "png-renamed-tif": Awkward("a PNG renamed `.tif` (read by its content)", png_renamed,
                               png_check),
    "one-pixel-image": Awkward("a 1 × 1 px GeoTIFF", one_pixel, one_pixel_check),
    "all-nodata": Awkward("a GeoTIFF whose every pixel is its declared nodata", all_nodata,
                          all_nodata_check),
    "nan-filled-bands": Awkward("float32 bands filled with NaN",
                                non_finite((np.nan, np.nan, np.nan)), all_nodata_check),
    "inf-filled-bands": Awkward("float32 bands filled with +inf, -inf and +inf",
                                non_finite((np.inf, -np.inf, np.inf)), all_nodata_check),
    "non-finite-half": Awkward(
        "float32 bands whose right half is NaN, +inf and -inf (one per band)", half_non_finite,
        half_check),
    "halo-0-same-padding": Awkward("`--halo 0` for a same-padding model", halo_zero,
                                   halo_zero_check),
    "gcp-only-geotiff": Awkward("a GeoTIFF georeferenced by ground control points only",
                                gcp_only, gcp_check),
    "internal-mask": Awkward("a GeoTIFF with an internal mask band (GDAL's per-dataset mask)",
                             internal_mask, masked_check),
    "rgba-alpha-band": Awkward("an RGBA GeoTIFF (an alpha band) for a 3-band model",
                               rgba_alpha, masked_check),
    "nan-logits-in-one-block": Awkward(
        "a model returning NaN only where the image is bright (one block of six)",
        nan_in_one_block, nan_block_check, exit=1),
}


#: the cases `make test` runs; the others are in the slow set
QUICK = {"png-renamed-tif", "nan-filled-bands", "nan-logits-in-one-block"}


@pytest.mark.parametrize("case_id", case_params(CASES, QUICK))
def test_an_awkward_input_works_and_its_output_is_right(
    case_id: str, tmp_path: Path, prefect_api: str
):
    case = CASES[case_id]
    call = case.make(tmp_path)
    result = run_segpipe([call.args[0], *COMMON, *call.args[1:]], tmp_path, api=prefect_api)
    line = case.check(tmp_path, result)
    assert result.returncode == case.exit
    documented(case_id, case.exit, strip_tmp(line, tmp_path))
