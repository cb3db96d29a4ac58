"""Bad models: damaged files, names that are not models, broken outputs, cards that do not validate.

A model that returns NaN when it is probed is refused before any block runs; one that returns NaN
only in some blocks is in test_must_succeed.py (exit 1, those blocks nodata). Models that would
run code when loaded are in tests/test_model_files_are_data.py.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.corpus.harness import BadCase, Call, case_params, check_bad_case
from tests.corpus.makers import SEED, scene, scratch, tiny_model

TITLE = "Bad models"
HELD = ("exit 2 before any block runs, one `error:` line naming the model file and the fix, no "
        "traceback, nothing written")


class ThreeD(nn.Module):
    """Returns N×H×W (one map, no class dimension): the wrong rank."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] * 2.0


class AlwaysNaN(nn.Module):
    """Two classes of NaN logits for any input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2] * float("nan")


class TwoClasses(nn.Module):
    """Two-class logits from the first band; no card of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :1] - 0.5, 0.5 - x[:, :1]], dim=1)


@functools.cache
def _programs() -> dict[str, Path]:
    """Exported programs (.pt2) without cards, made once per process."""
    from segpipe.models.saving import export_program

    folder = scratch()
    out = {}
    for name, module in (("rank3", ThreeD()), ("nan", AlwaysNaN()), ("plain", TwoClasses())):
        out[name] = folder / f"{name}.pt2"
        export_program(module, out[name], card=None, in_channels=3)
    return out


def program(folder: Path, kind: str, name: str = "model.pt2") -> str:
    shutil.copyfile(_programs()[kind], folder / name)
    return name


def with_model(make_model):
    """A case maker: the valid scene and the model ``make_model(folder)`` names."""

    def make(folder: Path) -> Call:
        scene(folder)
        return Call(("run", "--input", "scene.tif", "--output", "mask.tif", "--model",
                     *make_model(folder)))

    return make


def truncated_checkpoint(folder: Path) -> list[str]:
    data = (folder / tiny_model(folder, name="full.pt")).read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 2])
    (folder / "full.pt").unlink()
    return ["model.pt"]


def random_bytes(folder: Path) -> list[str]:
    (folder / "model.pt").write_bytes(np.random.default_rng(SEED).bytes(4096))
    return ["model.pt"]


def with_sidecar(card: dict):
    def make(folder: Path) -> list[str]:
        name = program(folder, "plain")
        (folder / "model.json").write_text(json.dumps(card))
        return [name]

    return make


CARD = {"name": "two", "bands": 3,
        "classes": [{"name": "a", "color": "#0000ff"}, {"name": "b", "color": "#00a000"}]}
BAD_COLOR = {**CARD, "classes": [{"name": "a", "color": "blue"}, CARD["classes"][1]]}
THREE_CLASSES = {**CARD, "classes": [*CARD["classes"], {"name": "c", "color": "#ff0000"}]}

CASES = {
    "model-truncated-checkpoint": BadCase(
        "a checkpoint cut in half", with_model(truncated_checkpoint),
        ("model.pt", "truncated", "copy it again")),
    "model-random-bytes": BadCase(
        "4 KiB of random bytes named `model.pt`", with_model(random_bytes),
        ("model.pt", "not a recognised model", "expected")),
    "model-unknown-name": BadCase(
        "`--model nosuchnet`", with_model(lambda folder: ["nosuchnet"]),
        ("nosuchnet", "known names")),
    "model-architecture-without-random-weights": BadCase(
        "`--model unet` (an architecture: random weights) without `--random-weights`",
        with_model(lambda folder: ["unet"]),
        ("--model unet", "--random-weights", "segpipe train", "segpipe models")),
    "model-wrong-rank": BadCase(
        "an exported program returning N×H×W instead of N×K×h×w",
        with_model(lambda folder: [program(folder, "rank3")]), ("N×K×h×w",)),
    "model-nan-at-probe": BadCase(
        "an exported program returning NaN logits for any input (found when probed)",
        with_model(lambda folder: [program(folder, "nan")]), ("NaN", "check the model")),
    "model-card-does-not-validate": BadCase(
        "a sidecar card with the colour `blue`", with_model(with_sidecar(BAD_COLOR)),
        ("model.json", "classes[0].color", "#rrggbb")),
    "model-card-class-count-wrong": BadCase(
        "a sidecar card listing 3 classes for a 2-class model",
        with_model(with_sidecar(THREE_CLASSES)), ("3 classes", "fix the card")),
}


#: the cases `make test` runs; the others are in the slow set
QUICK = {"model-random-bytes", "model-wrong-rank", "model-nan-at-probe"}


@pytest.mark.parametrize("case_id", case_params(CASES, QUICK))
def test_a_bad_model_exits_2_with_one_error_line_and_writes_nothing(
    case_id: str, tmp_path: Path, prefect_api: str
):
    check_bad_case(case_id, CASES[case_id], tmp_path, prefect_api)
