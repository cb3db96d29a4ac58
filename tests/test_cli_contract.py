"""The command-line contract, checked the way a user meets it: the installed ``segpipe`` script.

Bad usage or bad input exits 2 with exactly one stderr line ``error: ...``, never a traceback,
and leaves the folder it was asked to write into as it was: no output, no hidden work folder,
nothing overwritten. Each case runs the console script in a fresh process, in a folder that
holds only the inputs the case needs.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

SEGPIPE = Path(sys.executable).parent / "segpipe"
TIMEOUT_S = 120
#: How every case names its model: an architecture name needs --random-weights.
MODEL = ["--model", "unet", "--random-weights"]
#: Every case segments in this process, without a progress display.
COMMON = ["--workers", "0", "--quiet"]
#: The default U-Net (models/registry.py) has depth 4, so its stride is 2**4 = 16. 24 is a
#: multiple of 8 but not of 16: it also catches a check against a wrong, smaller stride.
UNET_STRIDE = 16
OFF_STRIDE_TILE = 24
assert OFF_STRIDE_TILE % UNET_STRIDE and OFF_STRIDE_TILE % (UNET_STRIDE // 2) == 0

SHAPE = (3, 64, 64)
CRS_UTM_33N = CRS.from_epsg(32633)
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)  # 10 m pixels
SEED = 20240613
#: The mtime given to an existing output (2001-09-09): a rewrite cannot keep it by chance.
OLD_MTIME_NS = 1_000_000_000 * 10**9


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """A small seeded 3-band uint8 GeoTIFF, ``scene.tif``, alone in a fresh folder."""
    data = np.random.default_rng(SEED).integers(0, 256, SHAPE, dtype=np.uint8)
    path = tmp_path / "scene.tif"
    profile = {
        "driver": "GTiff", "count": SHAPE[0], "height": SHAPE[1], "width": SHAPE[2],
        "dtype": "uint8", "crs": CRS_UTM_33N, "transform": TRANSFORM,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def run_segpipe(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed console script in ``cwd``, as a user would from a shell."""
    env = {k: v for k, v in os.environ.items() if k != "SEGPIPE_DEBUG"}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return subprocess.run(
        [str(SEGPIPE), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False,
    )


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Everything under ``folder`` (hidden entries too): files with their size and mtime."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        if path.is_file():
            entries[str(path.relative_to(folder))] = ("file", stat.st_size, stat.st_mtime_ns)
        else:
            entries[str(path.relative_to(folder))] = ("other", 0, 0)
    return entries


def assert_rejected(
    result: subprocess.CompletedProcess[str], folder: Path, before: dict, output: Path,
    previous: bytes | None = None,
) -> None:
    """The contract for bad usage or bad input (``previous``: bytes of an existing output)."""
    shown = f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 2, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert lines[0].startswith("error:"), shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    if previous is None:
        assert not os.path.lexists(output), f"{output} was created\n{shown}"
    else:
        assert output.read_bytes() == previous, f"{output} was overwritten\n{shown}"
    assert snapshot(folder) == before, f"the folder changed\n{shown}"


class Case(NamedTuple):
    """One bad call: extra arguments, and which input, output and model it names."""

    extra: tuple[str, ...] = ()
    input: str = "image"  # image | missing | empty-folder | empty-file | text-file
    output: str = "mask.tif"  # relative to the folder the command runs in
    existing_output: bool = False
    model: str = "builtin"  # builtin (MODEL) | architecture | corrupt-file | unknown-name


CASES = {
    "device-cuda-absent": Case(extra=("--device", "cuda")),
    "batch-size-0": Case(extra=("--batch-size", "0")),
    "batch-size-negative": Case(extra=("--batch-size", "-1")),
    "tile-0": Case(extra=("--tile", "0")),
    "tile-negative": Case(extra=("--tile", "-8")),
    "tile-not-a-number": Case(extra=("--tile", "abc")),
    "halo-negative": Case(extra=("--halo", "-1")),
    "workers-negative": Case(extra=("--workers", "-1")),
    "precision-fp16": Case(extra=("--precision", "fp16")),
    "blend-average": Case(extra=("--blend", "average")),
    "input-missing": Case(input="missing"),
    "input-empty-folder": Case(input="empty-folder"),
    "input-empty-file": Case(input="empty-file"),
    "input-text-file": Case(input="text-file"),
    "output-unknown-extension": Case(output="mask.png"),
    "output-folder-missing": Case(output="no-such-folder/mask.tif"),
    "output-exists-no-overwrite": Case(existing_output=True),
    "bands-0": Case(extra=("--bands", "0")),
    "bands-beyond-count": Case(extra=("--bands", "9")),
    "model-corrupt-file": Case(model="corrupt-file"),
    "model-unknown-name": Case(model="unknown-name"),
    "model-architecture-without-random-weights": Case(model="architecture"),
    "random-weights-without-model": Case(model="none", extra=("--random-weights",)),
    "ngff-version-0.3": Case(extra=("--ngff-version", "0.3"), output="mask.ome.zarr"),
    "tile-not-multiple-of-stride": Case(extra=("--tile", str(OFF_STRIDE_TILE))),
}


def make_input(kind: str, scene: Path) -> Path:
    """The ``--input`` path of a case, made beside ``scene``."""
    folder = scene.parent
    if kind == "image":
        return scene
    if kind == "missing":
        return folder / "nope.tif"
    if kind == "empty-folder":
        (folder / "empty").mkdir()
        return folder / "empty"
    path = folder / "x.tif"
    if kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "text-file":
        path.write_text("this is not a raster\n")
    else:
        raise AssertionError(f"unknown input kind {kind!r}")
    return path


def make_model(kind: str, folder: Path) -> list[str]:
    """The model arguments of a case."""
    if kind == "builtin":
        return list(MODEL)
    if kind == "unknown-name":
        return ["--model", "nosuchnet"]
    if kind == "architecture":
        return ["--model", "unet"]
    if kind == "none":
        return []
    if kind == "corrupt-file":
        path = folder / "model.pt"
        path.write_bytes(np.random.default_rng(SEED).bytes(4096))
        return ["--model", path.name]
    raise AssertionError(f"unknown model kind {kind!r}")


@pytest.mark.parametrize("case", [pytest.param(c, id=k) for k, c in CASES.items()])
def test_bad_usage_exits_2_with_one_error_line_and_writes_nothing(scene: Path, case: Case):
    extra = case.extra
    if "cuda" in extra:  # a device this machine lacks: plain cuda here, cuda:<count> on a GPU
        import torch

        if torch.cuda.is_available():
            extra = ("--device", f"cuda:{torch.cuda.device_count()}")
    folder = scene.parent
    source = make_input(case.input, scene)
    model = make_model(case.model, folder)
    output = folder / case.output
    previous = None
    if case.existing_output:
        output.write_bytes(scene.read_bytes())  # an earlier result, a valid raster
        os.utime(output, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
        previous = output.read_bytes()
    before = snapshot(folder)

    args = ["run", "--input", source.relative_to(folder), "--output", case.output,
            *model, *COMMON, *extra]
    result = run_segpipe(args, cwd=folder)

    assert_rejected(result, folder, before, output, previous)
    if case.existing_output:
        assert output.stat().st_mtime_ns == OLD_MTIME_NS


def test_an_architecture_name_needs_random_weights_and_says_where_models_are(scene: Path):
    folder = scene.parent
    before = snapshot(folder)
    result = run_segpipe(["run", "--input", scene.name, "--output", "mask.tif", "--model",
                          "unet", *COMMON], cwd=folder)
    assert_rejected(result, folder, before, folder / "mask.tif")
    line = result.stderr.strip()
    for needle in ("--model unet", "--random-weights", "segpipe train", "segpipe models"):
        assert needle in line, line


def test_success_control(scene: Path):
    """A valid call succeeds, so the harness above can tell a rejection from a broken run."""
    folder = scene.parent
    args = ["run", "--input", scene.name, "--output", "out.tif", *COMMON, *MODEL]
    result = run_segpipe(args, cwd=folder)
    shown = f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, shown
    assert not any(line.startswith("error:") for line in result.stderr.splitlines()), shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    with rasterio.open(scene) as src, rasterio.open(folder / "out.tif") as out:
        assert out.crs == src.crs == CRS_UTM_33N
        assert out.transform == src.transform
        assert (out.width, out.height) == (src.width, src.height)


def test_cli_module_does_not_import_torch(tmp_path: Path):
    code = "import sys, segpipe.flows.cli; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", result.stdout + result.stderr


def test_version_and_help(tmp_path: Path):
    version = run_segpipe(["--version"], cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert importlib.metadata.version("segpipe") in version.stdout, version.stdout

    helped = run_segpipe(["--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    lines = helped.stdout.splitlines()
    assert "Commands:" in lines, helped.stdout
    listed = {
        line.split()[0] for line in lines[lines.index("Commands:") + 1:] if line.strip()
    }
    assert {"run", "inspect", "models", "serve"} <= listed, helped.stdout
