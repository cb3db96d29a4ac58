"""``train(options)``: open the data, build the network, train, score the held-out regions, write.

The order: check the output and the network name; open every image with its labels,
normalizer and split; count the labelled training pixels (classes and inverse-frequency
weights); build the network seeded by ``--seed`` (and its backbone weights); resume from the
training state when asked; run the loop; score the held-out regions; write the checkpoint with
its card and the training state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segpipe.models.card import ModelCard
from segpipe.models.foundation import InputError, OutputExistsError, resolve_device
from segpipe.models.location import is_url
from segpipe.models.registry import create_model, default_card, list_models, resolve_config
from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.tilechoice import DEFAULT_SAME_HALO
from segpipe.pipeline.train.backbone import load_backbone_weights
from segpipe.pipeline.train.checkpoint import build_card, heldout_metrics, write_model
from segpipe.pipeline.train.classes import parse_classes, resolve_classes
from segpipe.pipeline.train.labels import is_vector
from segpipe.pipeline.train.loop import Loop, OnStep
from segpipe.pipeline.train.options import TrainOptions
from segpipe.pipeline.train.sampling import TileShape, TrainImage
from segpipe.pipeline.train.state import TrainState, load_state, save_state, state_path
from segpipe.pipeline.train.weights import class_weights

__all__ = ["TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    output: str
    card: ModelCard
    steps: int
    seconds: float


def train(options: TrainOptions, on_step: OnStep | None = None,
          notify: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``options.model`` on ``options.pairs`` and write the checkpoint; see the module."""
    start = time.perf_counter()
    _check_output(options)
    device = resolve_device(options.loop.device)
    classes_given = parse_classes(options.labels.classes)
    bands = _band_count(options)
    shape, config = _tile_shape(options, bands)
    images = _open_images(options, shape, classes_given)
    try:
        counts = _label_counts(images)
        names = images[0].names
        classes = resolve_classes(classes_given, names, _label_raster(options), len(counts))
        config = resolve_config(options.model, **{**config, "num_classes": len(classes)})
        per_class = _per_class(options, counts, len(classes))
        loop = _build_loop(options, config, images, per_class, shape, device, notify)
        total = options.loop.total_steps(sum(len(i.train_tiles) for i in images),
                                         options.sampling.batch_size)
        fingerprint = _fingerprint(options, config, shape)
        path = state_path(options.output)
        if options.resume:
            _restore(loop, load_state(path, fingerprint), device)

        def save() -> None:
            save_state(path, TrainState(loop.step, loop.model.state_dict(),
                                        loop.optimizer.state_dict(), loop.losses, fingerprint))

        loop.run(total, on_step, save, options.loop.checkpoint_every)
        card = _finish(options, config, images, classes, shape, loop)
    finally:
        for image in images:
            image.close()
    return TrainResult(options.output, card, loop.step, time.perf_counter() - start)


def _check_output(options: TrainOptions) -> None:
    out = Path(options.output)
    if options.model not in list_models():
        raise InputError(f"--model {options.model!r} is not a built-in network: use one of "
                         f"{', '.join(list_models())}")
    if not out.parent.is_dir():
        raise InputError(f"--output {out}: folder {out.parent} does not exist; create it first")
    if out.exists() and not (options.overwrite or options.resume):
        raise OutputExistsError(f"--output {out} exists: pass --overwrite to replace it or "
                                "--resume to continue its training")
    for pair in options.pairs:
        for path in (pair.image, pair.labels, pair.instances):
            if path and not is_url(path) and not Path(path).exists():
                raise InputError(f"{path}: file not found; check the path")


def _band_count(options: TrainOptions) -> int:
    counts = set()
    for pair in options.pairs:
        with open_raster(pair.image) as reader:
            counts.add(len(options.labels.bands) if options.labels.bands else reader.info.bands)
    if len(counts) > 1:
        raise InputError(f"the images have different band counts {sorted(counts)}; select the "
                         "same bands of each with --bands")
    return counts.pop()


def _tile_shape(options: TrainOptions, bands: int) -> tuple[TileShape, dict[str, Any]]:
    """Tile, halo, extra input and margin for the network (built once on the meta device)."""
    config = {**options.config_dict, "in_channels": bands}
    card = default_card(options.model, **config)
    stride, margin = card.stride or 1, card.margin or 0
    t = options.sampling.tile
    if t % stride:
        lower = t - t % stride
        raise InputError(f"--tile {t} is not a multiple of the model's stride {stride}: use "
                         f"{lower or stride} or {lower + stride}")
    halo = options.sampling.halo
    if halo is None:
        halo = card.halo if card.halo is not None else (margin or DEFAULT_SAME_HALO)
    if halo < margin:
        raise InputError(f"--halo {halo} is smaller than the model's margin {margin}: use "
                         f"--halo {margin} or more")
    with torch.device("meta"):
        model = create_model(options.model, **config)
    fit = getattr(model, "fit_size", None)
    size = t + 2 * halo
    extra = fit(size) - size if callable(fit) else 0
    return TileShape(t, halo, extra, margin), config


def _open_images(options: TrainOptions, shape: TileShape, classes) -> list[TrainImage]:
    names = [c.name for c in classes] if classes else None
    images: list[TrainImage] = []
    try:
        for pair in options.pairs:
            image = TrainImage(pair, options, shape, names)
            images.append(image)
            names = names or image.names
    except BaseException:
        for image in images:
            image.close()
        raise
    return images


def _label_counts(images: list[TrainImage]) -> np.ndarray:
    counts = np.zeros(0, np.int64)
    for image in images:
        found = image.label_counts()
        size = max(len(counts), len(found))
        counts = np.pad(counts, (0, size - len(counts))) + np.pad(found, (0, size - len(found)))
    if not counts.sum():
        raise InputError("no labelled pixel in the training regions: check the labels, "
                         "--class-field, --ignore-value and --holdout")
    return counts


def _label_raster(options: TrainOptions) -> str | None:
    first = options.pairs[0].labels
    return None if is_vector(first) else first


def _per_class(options: TrainOptions, counts: np.ndarray, k: int) -> np.ndarray:
    counts = np.pad(counts, (0, k - len(counts)))
    if options.loss.uniform_class_weights:
        return (counts > 0).astype(np.float64)
    return class_weights(counts)


def _build_loop(options: TrainOptions, config: dict[str, Any], images: list[TrainImage],
                per_class: np.ndarray, shape: TileShape, device: torch.device,
                notify: Callable[[str], None] | None) -> Loop:
    torch.manual_seed(options.loop.seed)
    model = create_model(options.model, **config)
    if options.backbone_weights:
        report = load_backbone_weights(model, options.backbone_weights)
        if notify is not None:
            notify(report.line())
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.loop.lr)
    return Loop(model, optimizer, images, per_class, options.loss.border_weight,
                options.loss.border_sigma, options.sampling.batch_size, options.loop.seed,
                device, (shape.halo - shape.margin, shape.tile))


def _restore(loop: Loop, state: TrainState, device: torch.device) -> None:
    loop.model.load_state_dict(state.model)
    loop.optimizer.load_state_dict(state.optimizer)
    loop.model.to(device)
    loop.step, loop.losses = state.step, list(state.losses)


def _fingerprint(options: TrainOptions, config: dict[str, Any], shape: TileShape) -> dict:
    return {
        "pairs": [asdict(p) for p in options.pairs], "model": options.model, "config": config,
        "backbone_weights": options.backbone_weights, "labels": asdict(options.labels),
        "sampling": asdict(options.sampling), "loss": asdict(options.loss),
        "seed": options.loop.seed, "lr": options.loop.lr, "shape": asdict(shape),
    }


def _finish(options: TrainOptions, config: dict[str, Any], images: list[TrainImage],
            classes, shape: TileShape, loop: Loop) -> ModelCard:
    k = len(classes)
    cm = sum((im.held_out_confusion(loop.predict, options.sampling.batch_size, k)
              for im in images), np.zeros((k, k), np.int64))
    regions = {Path(im.pair.image).name: [[w.row, w.col, w.height, w.width]
                                          for w in im.split.windows(held_out=True)]
               for im in images}
    metrics = {
        "heldout": heldout_metrics(cm, classes, options.sampling.holdout,
                                   images[0].split.side, regions),
        "steps": loop.step,
        "final_loss": round(float(np.mean(loop.losses[-10:])), 6) if loop.losses else None,
    }
    card = build_card(options, config, images[0].info, images[0].bands, classes, shape.halo,
                      metrics)
    write_model(loop.model.cpu(), options, config, card)
    return card
