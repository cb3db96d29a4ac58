"""Bad or broken inputs: missing, empty, not a raster, cut short, impossible, unusable pixels.

Each input is made by code beside a valid model. Truncated and impossible TIFFs are refused
from their header at planning, before a reader trusts the sizes it declares: the
200 000 × 200 000 px case runs under a 8 GiB address-space limit, far below the 120 GB its
header declares, so an allocation proportional to the declared size would fail the run.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.corpus.harness import BadCase, Call, case_params, check_bad_case
from tests.corpus.makers import geotiff, pixels, tiny_model

TITLE = "Bad or broken inputs"
HELD = ("exit 2, one `error:` line naming the file, what is wrong with it and the fix, no "
        "traceback, nothing written (no work directory either)")
#: the address-space limit of the impossible-header case; its header declares 120 GB
LIMIT_AS = 8 << 30
DECLARED_SIDE = 200_000


def given(make_input):
    """A case maker: the input ``make_input(folder)`` names, and the tiny model."""

    def make(folder: Path, *extra: str) -> Call:
        name = make_input(folder)
        return Call(("run", "--input", name, "--output", "mask.tif", "--model",
                     tiny_model(folder), *extra))

    return make


def missing(folder: Path) -> str:
    return "nope.tif"


def a_folder(folder: Path) -> str:
    (folder / "empty").mkdir()
    return "empty"


def empty_file(folder: Path) -> str:
    (folder / "x.tif").write_bytes(b"")
    return "x.tif"


def text_file(folder: Path) -> str:
    (folder / "x.tif").write_text("this is not a raster\n")
    return "x.tif"


def zip_renamed(folder: Path) -> str:
    with zipfile.ZipFile(folder / "x.tif", "w") as archive:
        archive.writestr("scene.txt", "a zip archive, not a raster\n")
    return "x.tif"


def truncated(folder: Path) -> str:
    """A tiled GeoTIFF cut to a third: its header and tile index survive, its tiles do not."""
    full = geotiff(folder / "full.tif", tiled=True, blockxsize=16, blockysize=16)
    data = full.read_bytes()
    (folder / "cut.tif").write_bytes(data[: len(data) // 3])
    full.unlink()
    return "cut.tif"


def impossible_header(folder: Path) -> str:
    """A 64 px GeoTIFF in one strip whose header is edited to declare 200 000 × 200 000 px."""
    path = geotiff(folder / "huge.tif", blockysize=64)
    buf = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        entries = [tags[name].valueoffset - 8 for name in
                   ("ImageWidth", "ImageLength", "RowsPerStrip")]
    for entry in entries:  # each IFD entry: tag, type, count, value; made a LONG
        tag = struct.unpack_from("<H", buf, entry)[0]
        struct.pack_into("<HHII", buf, entry, tag, 4, 1, DECLARED_SIDE)
    path.write_bytes(bytes(buf))
    return "huge.tif"


def complex_pixels(folder: Path) -> str:
    return geotiff(folder / "x.tif", pixels().astype(np.complex64) * (1 + 1j)).name


def boolean_pixels(folder: Path) -> str:
    """A 3-channel boolean TIFF (tifffile writes it bilevel; it reads back as bool)."""
    tifffile.imwrite(folder / "x.tif", pixels() > 127, photometric="minisblack",
                     planarconfig="separate")
    return "x.tif"


def constant_band(folder: Path) -> str:
    data = pixels()
    data[1] = 7
    return geotiff(folder / "x.tif", data).name


def one_band(folder: Path) -> str:
    return geotiff(folder / "x.tif", pixels()[:1]).name


def huge_under_limit(folder: Path) -> Call:
    call = given(impossible_header)(folder)
    return Call(call.args, limit_as=LIMIT_AS)


def truncated_temporary_server(folder: Path) -> Call:
    call = given(truncated)(folder)
    return Call(call.args, api=False)


CASES = {
    "input-missing": BadCase("a path that does not exist", given(missing), ("not found",)),
    "input-a-folder": BadCase(
        "a folder with no raster in it", given(a_folder), ("no file", "--pattern")),
    "input-empty-file": BadCase("an empty file (0 bytes)", given(empty_file), ("empty",)),
    "input-text-file": BadCase(
        "a text file named `.tif`", given(text_file), ("cannot read", "give a raster file")),
    "input-zip-renamed-tif": BadCase(
        "a zip archive renamed `.tif`", given(zip_renamed), ("cannot read", "give a raster file")),
    "input-truncated-tiff": BadCase(
        "a tiled GeoTIFF cut to a third (header intact, tiles cut; Prefect's temporary server)",
        truncated_temporary_server, ("cut.tif is truncated", "copy it again")),
    "input-header-declares-200000-px": BadCase(
        f"a 12 KiB TIFF whose header declares {DECLARED_SIDE:,} × {DECLARED_SIDE:,} px "
        "(run under an 8 GiB address-space limit)",
        huge_under_limit, ("huge.tif is truncated or corrupt", "declares", "copy it again")),
    "input-complex-pixels": BadCase(
        "complex64 pixels", given(complex_pixels), ("complex64", "convert")),
    "input-boolean-pixels": BadCase(
        "boolean pixels (a bilevel TIFF)", given(boolean_pixels), ("bool", "uint8")),
    "input-constant-band-meanstd": BadCase(
        "a constant band with `--normalize meanstd`",
        lambda folder: given(constant_band)(folder, "--normalize", "meanstd"),
        ("band 2", "constant", "--normalize scale")),
    "input-bands-not-matching-model": BadCase(
        "a 1-band input for a 3-band model", given(one_band), ("1 band", "expects 3")),
}


#: the cases `make test` runs; the others are in the slow set
QUICK = {
    "input-missing",
    "input-text-file",
    "input-truncated-tiff",
    "input-complex-pixels",
    "input-bands-not-matching-model",
}


@pytest.mark.parametrize("case_id", case_params(CASES, QUICK))
def test_a_bad_input_exits_2_with_one_error_line_and_writes_nothing(
    case_id: str, tmp_path: Path, prefect_api: str
):
    check_bad_case(case_id, CASES[case_id], tmp_path, prefect_api)
