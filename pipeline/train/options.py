"""What a training run is asked for: small frozen option groups, validated on construction.

Like :mod:`segpipe.pipeline.options`, every field carries its command-line help
(:func:`~segpipe.pipeline.options.opt`) and ``segpipe train`` builds its options from these
dataclasses; a bad value raises :class:`InputError` naming the option, the value, the
constraint and the fix. Imports neither torch nor any I/O library.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from segpipe.models.card import NormMethod
from segpipe.models.foundation import InputError
from segpipe.pipeline.options import choice, opt

__all__ = [
    "CardOptions",
    "LabelOptions",
    "LoopOptions",
    "LossOptions",
    "SamplingOptions",
    "TrainOptions",
    "TrainPair",
    "parse_config",
]

_SPDX = re.compile(r"^[A-Za-z0-9.+-]+(:[A-Za-z0-9.+-]+)?( +(AND|OR|WITH) +\(?[A-Za-z0-9.+-]+\)?)*$")


def _check(option: str, value: float | None, rule: str, ok: bool, example: str) -> None:
    if value is not None and (isinstance(value, bool) or not ok):
        raise InputError(
            f"{option} {value} is invalid: it must be {rule} (e.g. {option} {example})"
        )


@dataclass(frozen=True)
class TrainPair:
    """One training image and its labels (a label raster or a vector file), and instances."""

    image: str
    labels: str
    instances: str | None = None


@dataclass(frozen=True)
class LabelOptions:
    """How labels are read: classes, vector attribute, points, unlabelled value, bands."""

    classes: str | None = opt(
        None, "Class names and colours in label order, e.g. water:#0000ff,forest:#008000 "
        "(default: the label raster's class names and colour table, else class_0, ...)."
    )
    class_field: str | None = opt(
        None, "Vector labels: the attribute naming each feature's class (a name or a number)."
    )
    point_radius: int = opt(0, "Vector labels: points burn a disc of this radius in pixels.")
    ignore_value: int | None = opt(
        None, "Label-raster value of unlabelled pixels (default: the label raster's nodata)."
    )
    bands: tuple[int, ...] | None = opt(None, "1-based image bands to train on, e.g. 1,2,3.")

    def __post_init__(self) -> None:
        _check("--point-radius", self.point_radius, "0 or more", self.point_radius >= 0, "2")
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
            if not self.bands or min(self.bands) < 1:
                raise InputError(f"--bands {list(self.bands)} is invalid: bands count from 1")


@dataclass(frozen=True)
class SamplingOptions:
    """Tiles, halo, batches, normalization and the spatially held-out regions."""

    tile: int = opt(128, "Tile core in pixels (a multiple of the model's stride).")
    halo: int | None = opt(None, "Context around each tile in pixels (default: the model's).")
    batch_size: int = opt(4, "Tiles per training step.")
    normalize: NormMethod = opt(
        NormMethod.MEANSTD, "Per-image normalization, stored in the card for inference."
    )
    radiometric: float = opt(
        0.0, "Radiometric augmentation strength a (0: off): per band a gain in [1-a, 1+a] and "
        "an offset in ±a/10 of the normalized pixels, and a gamma in [1-a/2, 1+a/2] per tile."
    )
    holdout: float = opt(0.2, "Fraction of the regions held out for validation.")
    holdout_block: int = opt(
        512, "Side of the held-out regions in pixels (rounded up to whole tiles)."
    )

    def __post_init__(self) -> None:
        _check("--tile", self.tile, "a positive number", self.tile > 0, "128")
        _check("--halo", self.halo, "0 or more", self.halo is None or self.halo >= 0, "16")
        _check("--batch-size", self.batch_size, "a positive number", self.batch_size > 0, "4")
        _check("--radiometric", self.radiometric, "between 0 and 0.9",
               0 <= self.radiometric <= 0.9, "0.25")
        _check("--holdout", self.holdout, "between 0 and 1 (exclusive)",
               0 < self.holdout < 1, "0.2")
        _check("--holdout-block", self.holdout_block, "a positive number",
               self.holdout_block > 0, "512")
        object.__setattr__(self, "normalize", choice(NormMethod, self.normalize, "--normalize"))
        if self.normalize is NormMethod.SENSOR:
            raise InputError("--normalize sensor is for models whose card carries a sensors "
                             "table: train on images already on one scale with --normalize "
                             "none (scripts/train_zoo.py shows how)")


@dataclass(frozen=True)
class LossOptions:
    """The weighted cross-entropy: class balance and the U-Net border weight."""

    uniform_class_weights: bool = opt(
        False, "Weigh every class the same (default: inverse frequency of labelled pixels)."
    )
    border_weight: float = opt(
        10.0, "w0 of the U-Net border weight between touching instances (0: none)."
    )
    border_sigma: float = opt(5.0, "σ of the U-Net border weight, in pixels.")

    def __post_init__(self) -> None:
        _check("--border-weight", self.border_weight, "0 or more", self.border_weight >= 0, "10")
        _check("--border-sigma", self.border_sigma, "a positive number", self.border_sigma > 0,
               "5")


@dataclass(frozen=True)
class LoopOptions:
    """How long and how: steps or epochs, learning rate, seed, device, state saves."""

    steps: int | None = opt(None, "Training steps (default: 500, or --epochs).")
    epochs: int | None = opt(None, "Passes over the training tiles (instead of --steps).")
    lr: float = opt(1e-3, "Adam learning rate.")
    seed: int = opt(0, "Seed of weights, sampling and augmentation (same seed, same weights).")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.")
    checkpoint_every: int = opt(50, "Save the training state every this many steps.")

    def __post_init__(self) -> None:
        _check("--steps", self.steps, "a positive number", (self.steps or 0) > 0, "200")
        _check("--epochs", self.epochs, "a positive number", (self.epochs or 0) > 0, "10")
        if self.steps is not None and self.epochs is not None:
            raise InputError("give --steps or --epochs, not both")
        _check("--lr", self.lr, "a positive number", self.lr > 0, "0.001")
        _check("--seed", self.seed, "0 or more", self.seed >= 0, "0")
        _check("--checkpoint-every", self.checkpoint_every, "a positive number",
               self.checkpoint_every > 0, "50")
        device = str(self.device).strip().lower()
        if not re.match(r"^(auto|cpu|cuda(:\d+)?)$", device):
            raise InputError(f"--device {self.device!r} is not a device: use auto, cpu, cuda")
        object.__setattr__(self, "device", device)

    def total_steps(self, tiles: int, batch_size: int) -> int:
        """Steps to run: ``--steps``, else ``--epochs`` passes over ``tiles``, else 500."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return self.epochs * max(1, -(-tiles // batch_size))
        return 500


@dataclass(frozen=True)
class CardOptions:
    """What the model card says about the model and its training data."""

    name: str | None = opt(None, "Model name in the card (default: the output's file stem).")
    training_data: str | None = opt(
        None, "Description of the training data (default: the image and label file names)."
    )
    data_license: str | None = opt(
        None, "SPDX licence identifier of the training data, e.g. CC-BY-4.0."
    )

    def __post_init__(self) -> None:
        if self.data_license is not None and not _SPDX.match(self.data_license.strip()):
            raise InputError(
                f"--data-license {self.data_license!r} is not an SPDX licence expression: use "
                "an identifier such as CC-BY-4.0, CC0-1.0 or LicenseRef-proprietary"
            )


def parse_config(text: str | None) -> dict[str, Any]:
    """``depth=2,base_width=8`` → ``{"depth": 2, "base_width": 8}`` (values read as JSON)."""
    config: dict[str, Any] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise InputError(
                f"--config {text!r} is invalid: use KEY=VALUE pairs, e.g. depth=2,base_width=8"
            )
        try:
            config[key.strip()] = json.loads(raw.strip())
        except ValueError:
            config[key.strip()] = raw.strip()
    return config


@dataclass(frozen=True)
class TrainOptions:
    """One training run: data, network, the option groups, output and handling switches."""

    pairs: tuple[TrainPair, ...]
    output: str
    model: str = "unet"
    config: tuple[tuple[str, Any], ...] = ()
    backbone_weights: str | None = None
    labels: LabelOptions = field(default_factory=LabelOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    loop: LoopOptions = field(default_factory=LoopOptions)
    card: CardOptions = field(default_factory=CardOptions)
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.pairs:
            raise InputError("--image is required: give at least one image with its --labels")
        if isinstance(self.config, dict):
            object.__setattr__(self, "config", tuple(sorted(self.config.items())))
        if self.resume and self.overwrite:
            raise InputError("give --resume or --overwrite, not both")

    @property
    def config_dict(self) -> dict[str, Any]:
        """The network's configuration keys given by the user."""
        return dict(self.config)
