"""Bad input exits 2 with one ``error:`` line, no traceback, and leaves no output behind."""

from __future__ import annotations

import pytest

from segpipe.flows.cli import main
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    src = write_geotiff(d / "scene.tif", smooth_image((3, 40, 50), "uint8"))
    model = tiny_unet(d / "unet.pt", 3, "valid")
    return d, src, model


def run_cli(capsys, *args):
    code = main(["run", *map(str, args), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    return code, err


def assert_one_error_line(err: str, *needles: str):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def leftovers(folder, out_name):
    return sorted(p.name for p in folder.iterdir() if out_name in p.name)


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("missing", ["not found"]),
        ("not-a-raster", ["cannot read"]),
        ("bad-tile", ["--tile 30", "stride 4", "28", "32"]),
        ("bad-bands", ["--bands", "expects 3"]),
        ("band-count", ["has 1 band", "expects 3"]),
        ("bad-model", ["model"]),
        ("small-halo", ["--halo 3", "margin"]),
        ("bad-extension", ["--output", "extension"]),
    ],
)
def test_bad_input_exits_2_with_one_line(setup, capsys, tmp_path, case, needles):
    _, src, model = setup
    out = tmp_path / "mask.tif"
    args = ["--input", src, "--output", out, "--model", model, "--tile", "32"]
    if case == "missing":
        args[1] = tmp_path / "nope.tif"
    elif case == "not-a-raster":
        junk = tmp_path / "junk.tif"
        junk.write_text("this is not a TIFF")
        args[1] = junk
    elif case == "bad-tile":
        args[-1] = "30"
    elif case == "bad-bands":
        args += ["--bands", "1,2"]
    elif case == "band-count":
        args[1] = write_geotiff(tmp_path / "one.tif", smooth_image((1, 40, 50), "uint8"))
    elif case == "bad-model":
        bad = tmp_path / "model.pt"
        bad.write_bytes(b"\x00garbage")
        args[5] = bad
    elif case == "small-halo":
        args += ["--halo", "3"]
    elif case == "bad-extension":
        out = tmp_path / "mask.png"
        args[3] = out
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_error_line(err, *needles)
    assert leftovers(tmp_path, out.name) == []


def test_existing_output_is_kept_without_overwrite(setup, capsys, tmp_path):
    _, src, model = setup
    out = tmp_path / "mask.tif"
    out.write_bytes(b"precious")
    code, err = run_cli(capsys, "--input", src, "--output", out, "--model", model, "--tile", 32)
    assert code == 2
    assert_one_error_line(err, "exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    code, err = run_cli(capsys, "--input", src, "--output", out, "--model", model, "--tile", 32,
                        "--overwrite")
    assert code == 0, err
    assert out.read_bytes()[:2] in (b"II", b"MM")


def test_same_padding_model_without_halo_warns_how_to_set_it(setup, capsys, caplog, tmp_path):
    _, src, _ = setup
    model = tiny_unet(tmp_path / "same.pt", 3, "same")
    out = tmp_path / "mask.tif"
    code, _ = run_cli(capsys, "--input", src, "--output", out, "--model", model, "--tile", 32)
    assert code == 0
    assert any("--halo" in r.message and "32 px" in r.message for r in caplog.records)
