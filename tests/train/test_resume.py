"""Same seed, same weights; ``--resume`` continues from the saved step exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segpipe.models.foundation import OutputExistsError, ResumeError
from segpipe.pipeline.train.options import (
    LabelOptions,
    LoopOptions,
    SamplingOptions,
    TrainOptions,
    TrainPair,
)
from segpipe.pipeline.train.run import train
from segpipe.pipeline.train.state import state_path
from tests.train.synthetic import write_scene
from tests.train.test_vectors import FIELD, HOUSE, POINTS, write_labels


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    img, lab, _, _ = write_scene(folder, size=64)
    return folder, img, lab


def options(scene, name, seed=0, steps=4, lr=1e-3, **kw):
    folder, img, lab = scene
    return TrainOptions(
        pairs=(TrainPair(str(img), str(lab)),), output=str(folder / name), model="unet",
        config={"depth": 2, "base_width": 4, "padding": "same"},
        sampling=SamplingOptions(tile=16, halo=4, batch_size=2, holdout_block=32),
        loop=LoopOptions(steps=steps, lr=lr, seed=seed, device="cpu", checkpoint_every=3),
        **kw,
    )


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights(scene):
    train(options(scene, "a.pt", seed=3))
    train(options(scene, "b.pt", seed=3))
    train(options(scene, "c.pt", seed=4))
    folder = scene[0]
    assert same(weights(folder / "a.pt"), weights(folder / "b.pt"))
    assert not same(weights(folder / "a.pt"), weights(folder / "c.pt"))


def test_resume_continues_from_the_saved_step(scene):
    folder = scene[0]
    train(options(scene, "straight.pt", steps=8))
    first = train(options(scene, "resumed.pt", steps=5))
    assert first.steps == 5
    state = torch.load(state_path(folder / "resumed.pt"), weights_only=True)
    assert state["step"] == 5 and len(state["losses"]) == 5
    resumed = train(options(scene, "resumed.pt", steps=8, resume=True))
    assert resumed.steps == 8
    assert torch.load(state_path(folder / "resumed.pt"), weights_only=True)["step"] == 8
    assert same(weights(folder / "straight.pt"), weights(folder / "resumed.pt"))


def test_resume_refuses_a_different_training(scene):
    train(options(scene, "r.pt", steps=2))
    with pytest.raises(ResumeError, match=r"lr: 0\.001 → 0\.01"):
        train(options(scene, "r.pt", steps=4, lr=1e-2, resume=True))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train(options(scene, "r.pt", steps=2))
    with pytest.raises(ResumeError, match="no training state"):
        train(options(scene, "never.pt", steps=2, resume=True))


def test_vector_labels_with_border_weights_train(tmp_path, scene):
    _, img, _ = scene
    vectors = write_labels(tmp_path / "v.gpkg", [FIELD, HOUSE, *POINTS],
                           ["field", "house", "house", "field"])
    opts = TrainOptions(
        pairs=(TrainPair(str(img), str(vectors)),), output=str(tmp_path / "v.pt"),
        model="segnet", config={"depth": 2, "base_width": 4},
        labels=LabelOptions(class_field="cls", classes="field:#00ff00,house:#ff0000",
                            point_radius=2),
        sampling=SamplingOptions(tile=16, halo=4, batch_size=2, holdout_block=16),
        loop=LoopOptions(steps=2, device="cpu"),
    )
    result = train(opts)
    assert [c.name for c in result.card.classes] == ["field", "house"]
    assert result.card.classes[1].color == (255, 0, 0)
    held = result.card.metrics["heldout"]
    assert set(held["iou"]) == {"field", "house"}
    assert np.isfinite(result.card.metrics["final_loss"])
