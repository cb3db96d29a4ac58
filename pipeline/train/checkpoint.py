"""The trained model's card and checkpoint.

The card says what inference must reproduce: bands (with names from the raster's channel names
or band descriptions), classes (names, colours), the per-image normalization method, margin,
halo and stride, pixel size and unit (from the first image), the domain (georeferenced or not),
the training data and its licence, and the held-out metrics. The checkpoint is written by
:func:`segpipe.models.saving.save_checkpoint` (atomically; loads with ``weights_only=True``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from segpipe.models.card import ClassInfo, Domain, ModelCard, Normalization
from segpipe.models.registry import default_card
from segpipe.models.saving import save_checkpoint
from segpipe.pipeline.confusion import accuracy, iou
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.io.units import normalize_unit
from segpipe.pipeline.train.options import TrainOptions

__all__ = ["build_card", "heldout_metrics", "pixel_size", "write_model"]


def pixel_size(info: RasterInfo) -> tuple[float | None, str | None]:
    """The raster's pixel size (x) and its unit, or (None, None) when it has none."""
    if info.pixel_size is not None:
        return float(info.pixel_size[1]), normalize_unit(info.pixel_unit)
    if info.transform is None or info.crs_wkt is None:
        return None, None
    from rasterio.crs import CRS

    crs = CRS.from_wkt(info.crs_wkt)
    unit = normalize_unit(crs.linear_units) if crs.is_projected else "degree"
    return abs(float(info.transform[0])), unit


def heldout_metrics(cm: np.ndarray, classes: tuple[ClassInfo, ...], fraction: float,
                    region: int, regions: dict[str, list[list[int]]]) -> dict[str, Any]:
    """Per-class IoU, mean IoU and accuracy of the held-out confusion matrix (JSON-able).

    ``regions`` lists the held-out windows ``[row, col, height, width]`` of each image.
    """
    scores = iou(cm)
    present = scores[~np.isnan(scores)]
    return {
        "iou": {c.name: _finite(v) for c, v in zip(classes, scores)},
        "mean_iou": _finite(float(present.mean())) if present.size else None,
        "accuracy": _finite(accuracy(cm)),
        "pixels": int(cm.sum()),
        "confusion": cm.tolist(),
        "fraction": fraction,
        "region_px": region,
        "regions": regions,
    }


def _finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def _band_names(info: RasterInfo, bands: tuple[int, ...]) -> tuple[str, ...] | None:
    if not info.channel_names or len(info.channel_names) != info.bands:
        return None
    names = tuple(info.channel_names[b] for b in bands)
    return names if len({n.casefold() for n in names}) == len(names) else None


def build_card(options: TrainOptions, config: dict[str, Any], info: RasterInfo,
               bands: tuple[int, ...], classes: tuple[ClassInfo, ...], halo: int,
               metrics: dict[str, Any]) -> ModelCard:
    """The card of the trained model."""
    base = default_card(options.model, **config)
    size, unit = pixel_size(info)
    c = options.card
    described = ", ".join(f"{Path(p.image).name} + {Path(p.labels).name}" for p in options.pairs)
    return ModelCard(
        name=c.name or Path(options.output).stem, bands=len(bands), classes=classes,
        normalization=Normalization(options.sampling.normalize), margin=base.margin, halo=halo,
        stride=base.stride, pixel_size=size, pixel_size_unit=unit if size else None,
        architecture=base.architecture, license=c.data_license or "",
        training_data=c.training_data or described, metrics=metrics,
        description=f"{options.model} trained with segpipe train",
        band_names=_band_names(info, bands),
        domain=Domain.GEO if info.crs_wkt else Domain.MICROSCOPY,
    )


def write_model(model: nn.Module, options: TrainOptions, config: dict[str, Any],
                card: ModelCard) -> None:
    """Write the checkpoint with its card to ``options.output``."""
    save_checkpoint(model, options.output, architecture=options.model, config=config, card=card)
