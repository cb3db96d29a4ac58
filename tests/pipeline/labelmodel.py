"""A model whose labels are known in advance, and images that make it draw a given label map.

The model is a 1×1 convolution with identity weights: its logits are the input bands, so the
label of a pixel is the band holding its largest value. Fed the one-hot encoding of a label map
(no normalization), it returns that label map exactly; a pixel whose bands are all 0 is nodata
when the input declares 0 as nodata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from segpipe.models import ClassInfo, ModelCard, Normalization, NormMethod, export_program

COLORS = ((0, 90, 200), (30, 140, 30), (220, 180, 40), (200, 40, 40))


def argmax_model(path: Path, classes: int) -> Path:
    """A ``.pt2`` 1×1-conv identity model of ``classes`` bands and classes, with its card."""
    net = torch.nn.Conv2d(classes, classes, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(classes)[:, :, None, None])
    card = ModelCard(
        name="argmax", bands=classes,
        classes=tuple(ClassInfo(f"class{i}", COLORS[i]) for i in range(classes)),
        normalization=Normalization(NormMethod.NONE), halo=0, stride=1,
    )
    export_program(net.eval(), path, card=card, in_channels=classes, example_size=32)
    return path


def blobs(shape: tuple[int, int], classes: int, seed: int, sigma: float = 2.5) -> np.ndarray:
    """A seeded label map of smooth blobs (regions of every size, many crossing any seam)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    cuts = np.quantile(field, np.linspace(0, 1, classes + 1)[1:-1])
    return np.digitize(field, cuts).astype(np.uint8)


def one_hot(labels: np.ndarray, classes: int, nodata: np.ndarray | None = None) -> np.ndarray:
    """Bands of 0/1 (uint8) whose argmax is ``labels``; all 0 where ``nodata`` is True."""
    bands = (labels[None] == np.arange(classes)[:, None, None]).astype(np.uint8)
    if nodata is not None:
        bands[:, nodata] = 0
    return bands
