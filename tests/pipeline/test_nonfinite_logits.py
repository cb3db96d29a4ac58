"""Labels never come from NaN or infinite logits: found when probing → exit 2 before any block;
found in some blocks only → those blocks are nodata, listed in the report, and the run exits 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segpipe.models.saving import export_program
from segpipe.pipeline.io.zarrstore import open_array
from tests.conftest import write_geotiff

SEGPIPE = str(Path(sys.executable).parent / "segpipe")


class NanWhereBright(nn.Module):
    """Two classes from the raw value (class 1 where x < 50); NaN where x > ``limit``."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :1]
        logits = torch.cat([v - 50.0, 50.0 - v], dim=1)
        return torch.where(v > self.limit, torch.full_like(v, float("nan")), logits)


def run(tmp_path: Path, model: Path, image: np.ndarray) -> subprocess.CompletedProcess:
    src = write_geotiff(tmp_path / "scene.tif", image)
    return subprocess.run(
        [SEGPIPE, "run", "--input", str(src), "--output", str(tmp_path / "out.tif"), "--model",
         str(model), "--tile", "32", "--halo", "0", "--block-pixels", "32", "--workers", "0",
         "--device", "cpu", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )


def test_a_model_that_returns_nan_on_probing_is_refused_before_any_block(tmp_path):
    model = tmp_path / "nan.pt2"
    export_program(NanWhereBright(limit=-1.0), model, card=None, in_channels=1)  # NaN always
    image = np.full((1, 64, 96), 10, np.uint8)
    result = run(tmp_path, model, image)
    assert result.returncode == 2, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "NaN" in lines[0]
    assert not (tmp_path / "out.tif").exists()
    assert not (tmp_path / ".out.tif.segpipe").exists()  # refused before any work


def test_nan_in_some_blocks_makes_them_nodata_listed_and_exit_1(tmp_path):
    model = tmp_path / "nan_bright.pt2"
    export_program(NanWhereBright(limit=100.0), model, card=None, in_channels=1)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 90, (1, 64, 96), dtype=np.uint8)
    image[0, 32:64, 32:64] = 200  # exactly block 1_1 is bright
    result = run(tmp_path, model, image)
    assert result.returncode == 1, result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "1 of 6 blocks" in errors[0] and "1_1" in errors[0]
    assert not (tmp_path / "out.tif").exists()
    workdir = tmp_path / ".out.tif.segpipe"
    summary = json.loads((workdir / "summary.json").read_text())
    assert list(summary["failed_blocks"]) == ["1_1"] and "NaN" in summary["failed_blocks"]["1_1"]
    labels = np.asarray(open_array(workdir / "labels.zarr", mode="r")[:])
    bright = np.zeros(labels.shape, bool)
    bright[32:64, 32:64] = True
    assert (labels[bright] == 255).all()
    expected = np.where(image[0] >= 50, 0, 1)  # the model's rule (a tie is class 0), in numpy
    np.testing.assert_array_equal(labels[~bright], expected[~bright])
