"""``segpipe train``: train a built-in network from images and label rasters or vectors.

The options are built from the dataclasses of :mod:`segpipe.pipeline.train.options`; the
library is :func:`segpipe.pipeline.train.run.train`. torch is imported only when the command
runs, so ``import segpipe.flows.cli`` stays light.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from segpipe.flows.clioptions import option_decorator
from segpipe.models.foundation import InputError
from segpipe.pipeline.train.options import (
    CardOptions,
    LabelOptions,
    LoopOptions,
    LossOptions,
    SamplingOptions,
    TrainOptions,
    TrainPair,
    parse_config,
)

__all__ = ["train"]

_GROUPS = {"labels": LabelOptions, "sampling": SamplingOptions, "loss": LossOptions,
           "loop": LoopOptions, "card": CardOptions}


def _pairs(images: tuple[str, ...], labels: tuple[str, ...],
           instances: tuple[str, ...]) -> tuple[TrainPair, ...]:
    if len(labels) != len(images):
        raise InputError(f"--image is given {len(images)} times but --labels {len(labels)}: "
                         "give one --labels per --image, in the same order")
    if instances and len(instances) != len(images):
        raise InputError(f"--instances is given {len(instances)} times for {len(images)} "
                         "images: give one per --image, in the same order, or none")
    return tuple(TrainPair(i, lab, instances[n] if instances else None)
                 for n, (i, lab) in enumerate(zip(images, labels)))


@click.command()
@click.option("--image", "images", required=True, multiple=True,
              help="Training image raster; repeat for several (each with its --labels).")
@click.option("--labels", "labels", required=True, multiple=True,
              help="Label raster (class indices) or vector file (polygons, points) of the "
                   "image, in the same order as --image.")
@click.option("--instances", "instances", multiple=True,
              help="Instance-id raster per label raster (enables the U-Net border weight).")
@click.option("--output", required=True, help="Checkpoint to write (e.g. model.pt).")
@click.option("--model", default="unet", show_default=True,
              help="Built-in network: unet, segnet, fcn_resnet50, deeplabv3_*, lraspp_*.")
@click.option("--config", "config", default=None,
              help="Network settings, e.g. depth=3,base_width=16,padding=same.")
@click.option("--backbone-weights", default=None,
              help="Local weights file for a torchvision network's backbone (never downloaded).")
@option_decorator(*_GROUPS.values())
@click.option("--resume", is_flag=True, help="Continue from the training state beside --output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output and its state.")
@click.option("--quiet", is_flag=True, help="No progress line.")
def train(images: tuple[str, ...], labels: tuple[str, ...], instances: tuple[str, ...],
          output: str, model: str, config: str | None, backbone_weights: str | None,
          resume: bool, overwrite: bool, quiet: bool, **kw: Any) -> None:
    """Train a built-in network; held-out per-class IoU goes to the card and the screen."""
    groups = {name: cls(**{f.name: kw[f.name] for f in dataclasses.fields(cls)})
              for name, cls in _GROUPS.items()}
    options = TrainOptions(
        pairs=_pairs(images, labels, instances), output=output, model=model,
        config=tuple(sorted(parse_config(config).items())), backbone_weights=backbone_weights,
        resume=resume, overwrite=overwrite, **groups,
    )
    from segpipe.flows.progress import StepProgress
    from segpipe.pipeline.train.run import train as run_training

    result = run_training(options, on_step=StepProgress(quiet=quiet),
                          notify=lambda line: click.echo(line, err=True))
    if not quiet:
        _report(result)


def _report(result: Any) -> None:
    held = result.card.metrics.get("heldout", {})
    rows = [f"{name:>16}  {'-' if v is None else f'{v:.3f}'}"
            for name, v in held.get("iou", {}).items()]
    click.echo(f"held-out IoU ({held.get('pixels', 0)} px):", err=True)
    for row in rows:
        click.echo(row, err=True)
    mean = held.get("mean_iou")
    click.echo(f"{'mean':>16}  {'-' if mean is None else f'{mean:.3f}'}", err=True)
    click.echo(f"wrote {result.output} ({result.steps} steps, {result.seconds:.0f} s)", err=True)
