"""``segpipe models``: the bundled models and the architectures; ``segpipe models NAME``."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from segpipe.flows.cli import main
from segpipe.models import ModelCard, create_model, default_card, save_checkpoint

CONFIG = dict(in_channels=4, num_classes=2, depth=1, base_width=2, padding="same")


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    torch.manual_seed(0)
    card = replace(
        default_card("unet", **CONFIG), name="landcover-bgrn",
        band_names=("blue", "green", "red", "nir"), domain="geo",
        pixel_size_range=(10.0, 60.0), pixel_size_unit="m",
        description="Land cover from Landsat surface reflectance",
    )
    save_checkpoint(create_model("unet", **CONFIG), tmp_path / "landcover-bgrn.pt",
                    architecture="unet", config=CONFIG, card=card)
    monkeypatch.setattr("segpipe.models.bundled.ZOO", tmp_path)
    return card


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["models", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_listing_shows_bundled_models_and_architectures(zoo, capsys):
    code, out, _ = run(capsys)
    assert code == 0
    line = next(line for line in out.splitlines() if "landcover-bgrn" in line)
    for part in ("4 bands (blue,green,red,nir)", "geo", "classes class_0,class_1",
                 "Land cover from Landsat surface reflectance"):
        assert part in line, line
    listed = {line.strip() for line in out.splitlines()}
    assert {"unet", "fcn_resnet50"} <= listed


def test_a_bundled_model_shows_its_card(zoo, capsys):
    code, out, _ = run(capsys, "landcover-bgrn")
    assert code == 0
    assert ModelCard.from_dict(json.loads(out)) == zoo


def test_an_architecture_shows_its_default_config(zoo, capsys):
    code, out, _ = run(capsys, "unet")
    assert code == 0
    shown = json.loads(out)
    assert shown["architecture"] == "unet"
    assert shown["config"]["depth"] == 4 and shown["config"]["padding"] == "valid"


def test_an_unknown_name_exits_2_with_did_you_mean(zoo, capsys):
    code, out, err = run(capsys, "landcover-bgr")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and not out
    assert lines[0].startswith("error: ") and "did you mean 'landcover-bgrn'" in lines[0]


def test_an_empty_zoo_is_listed_as_such(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("segpipe.models.bundled.ZOO", tmp_path)
    code, out, _ = run(capsys)
    assert code == 0 and "(none installed)" in out
