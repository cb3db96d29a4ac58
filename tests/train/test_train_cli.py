"""``segpipe train`` through the installed CLI: it learns, writes a card, and ``run`` uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from segpipe.flows.cli import main
from tests.train.synthetic import write_scene

SEGPIPE = str(Path(sys.executable).with_name("segpipe"))
# Measured on a 2-core CPU (seed 0): mean held-out IoU 0.92 after 40 steps (soil 0.92,
# crop 0.95, water 0.91) in about 15 s; asserted with a margin.
MIN_MEAN_IOU = 0.80
MIN_CLASS_IOU = 0.70
TRAIN = ["--model", "unet", "--config", "depth=2,base_width=8,padding=same", "--tile", "32",
         "--halo", "8", "--steps", "40", "--lr", "0.01", "--batch-size", "4",
         "--holdout-block", "64", "--device", "cpu", "--seed", "0"]


def segpipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SEGPIPE, *args], capture_output=True, text=True, check=False,
                          timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    img, lab, _, classes = write_scene(folder)
    out = folder / "model.pt"
    result = segpipe("train", "--image", str(img), "--labels", str(lab), "--output", str(out),
                     "--training-data", "synthetic blobs", "--data-license", "CC0-1.0", *TRAIN)
    assert result.returncode == 0, result.stderr
    payload = torch.load(out, map_location="cpu", weights_only=True)
    return folder, img, out, payload["card"], classes, result.stderr


def held_out_iou_from(labels: np.ndarray, truth: np.ndarray, regions) -> np.ndarray:
    """Per-class IoU over the held-out windows, counted with plain numpy comparisons."""
    mask = np.zeros(truth.shape, bool)
    for row, col, h, w in regions:
        mask[row : row + h, col : col + w] = True
    out = []
    for k in range(3):
        p, t = (labels == k) & mask, (truth == k) & mask
        out.append((p & t).sum() / (p | t).sum())
    return np.array(out)


def test_training_reaches_the_held_out_iou(trained):
    _, _, _, card, _, stderr = trained
    held = card["metrics"]["heldout"]
    assert held["mean_iou"] >= MIN_MEAN_IOU, held
    assert min(held["iou"].values()) >= MIN_CLASS_IOU, held
    assert 0 < held["pixels"] < 192 * 192  # only the held-out regions are scored
    assert "train: step 40/40" in stderr and "ETA" in stderr and "loss" in stderr


def test_card_says_what_inference_needs(trained):
    _, _, _, card, _, _ = trained
    assert [c["name"] for c in card["classes"]] == ["soil", "crop", "water"]
    assert [c["color"] for c in card["classes"]] == ["#785028", "#00a000", "#0000ff"]
    assert card["bands"] == 2 and card["band_names"] == ["red", "nir"]
    assert card["normalization"]["method"] == "meanstd" and card["normalization"]["mean"] is None
    assert (card["halo"], card["stride"], card["margin"]) == (8, 4, 0)
    assert (card["pixel_size"], card["pixel_size_unit"]) == (30.0, "m")
    assert card["license"] == "CC0-1.0" and card["training_data"] == "synthetic blobs"
    assert card["domain"] == "geo"
    assert card["architecture"]["config"]["num_classes"] == 3


def test_segpipe_run_loads_the_checkpoint_with_its_card(trained):
    folder, img, model, card, truth, _ = trained
    out = folder / "mask.tif"
    result = segpipe("run", "--input", str(img), "--output", str(out), "--model", str(model),
                     "--tile", "32", "--workers", "0", "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    with rasterio.open(out) as ds:
        labels = ds.read(1)
        assert ds.tags(1)["CLASS_2"] == "water"
        assert ds.colormap(1)[1][:3] == (0, 160, 0)
    regions = card["metrics"]["heldout"]["regions"]["image.tif"]
    independent = held_out_iou_from(labels, truth, regions)
    # run reads the same tiles with the card's halo and normalization: the same scores
    np.testing.assert_allclose(independent, list(card["metrics"]["heldout"]["iou"].values()),
                               atol=1e-3)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    img, lab, _, _ = write_scene(tmp_path, size=64)
    out = tmp_path / "m.pt"
    for extra, word in ((["--classes", "a:#12"], "--classes"),
                        (["--data-license", "not a licence!"], "--data-license"),
                        (["--tile", "30"], "stride 4"),
                        (["--holdout-block", "64"], "--holdout-block"),
                        (["--model", "unet2"], "--model")):
        code = main(["train", "--image", str(img), "--labels", str(lab), "--output", str(out),
                     *TRAIN, *extra])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2, lines
        assert len(lines) == 1 and lines[0].startswith("error:") and word in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "labels.tif"]
