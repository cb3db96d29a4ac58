"""Stitching tile outputs into a block: a merger with two verbs, ``add`` and ``finalize``.

``crop`` (default, exact): each pixel takes the output of the one tile whose core owns it; with a
halo at least the model's receptive-field radius this equals whole-image inference (the README's
exactness contract: logits within a few float32 ulp of their magnitude, labels equal but at ties).
``gaussian``: overlapping tile logits are averaged with a Gaussian weight centred on each tile's
core (sigma = 1/8 of the tile's output span, as MONAI's importance map), for models whose
receptive field is larger than any affordable halo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segpipe.pipeline.labels import label_array, labels_from_logits, probabilities_from_logits
from segpipe.pipeline.options import Blend
from segpipe.pipeline.tiling import Tile, Window

__all__ = ["Blend", "Merger", "Stitched", "gaussian_weights"]

SIGMA_SCALE = 0.125


@dataclass(frozen=True)
class Stitched:
    """A finished block: labels (h, w) and optional probabilities (K, h, w) float32.

    Labels are uint8 for up to 256 classes (int32 beyond) after crop stitching, int64 after
    weighted blending.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None


def gaussian_weights(tile: Tile, margin: int) -> np.ndarray:
    """Weights over a tile's output window: a Gaussian centred on the core, never zero."""
    out = tile.read.grow(-margin, -margin, -margin, -margin)
    span = tile.core.height + 2 * (tile.core.row - out.row)
    sigma = SIGMA_SCALE * max(span, 1)
    centre_r = tile.core.row + (tile.core.height - 1) / 2 - out.row
    centre_c = tile.core.col + (tile.core.width - 1) / 2 - out.col
    r = np.exp(-0.5 * ((np.arange(out.height) - centre_r) / sigma) ** 2)
    c = np.exp(-0.5 * ((np.arange(out.width) - centre_c) / sigma) ** 2)
    w = np.outer(r, c).astype(np.float32)
    return np.maximum(w, np.float32(1e-6))


class Merger:
    """Collects tile logits for the block ``core`` and turns them into labels."""

    def __init__(
        self, core: Window, *, blend: Blend, margin: int, probabilities: bool = False
    ) -> None:
        self.core = core
        self.blend = Blend(blend)
        self.margin = margin
        self.keep_probabilities = probabilities
        self._labels: np.ndarray | None = None
        self._probs: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._weight = np.zeros((core.height, core.width), np.float32)
        self._finalized = False

    def add(self, tile: Tile, logits: torch.Tensor) -> None:
        """Add one tile's logits (K, S - 2m, S - 2m), on any device."""
        if self._finalized:
            raise RuntimeError("Merger.add called after finalize")
        m = self.margin
        out = tile.read.grow(-m, -m, -m, -m)
        if tuple(logits.shape[-2:]) != (out.height, out.width):
            raise ValueError(
                f"tile {tile.index}: logits {tuple(logits.shape[-2:])}, expected "
                f"{(out.height, out.width)} (input {tile.read.height} - 2 × margin {m})"
            )
        if self.blend is Blend.CROP:
            self._add_crop(tile, logits, out)
        else:
            self._add_weighted(tile, logits, out)

    def _add_crop(self, tile: Tile, logits: torch.Tensor, out: Window) -> None:
        region = tile.core.intersection(self.core)
        if region is None:
            return
        src = region.relative_to(out).slices
        dst = region.relative_to(self.core).slices
        crop = logits[:, src[0], src[1]]
        # labels leave the device in their smallest type: an eighth of int64's bytes per tile
        dtype = np.uint8 if crop.shape[0] <= 256 else np.int32
        if self._labels is None:
            self._labels = np.zeros((self.core.height, self.core.width), dtype)
        self._labels[dst] = label_array(crop, dtype)
        if self.keep_probabilities:
            if self._probs is None:
                self._probs = np.zeros((crop.shape[0], *self._labels.shape), np.float32)
            self._probs[(slice(None), *dst)] = probabilities_from_logits(crop).cpu().numpy()
        self._weight[dst] += 1

    def _add_weighted(self, tile: Tile, logits: torch.Tensor, out: Window) -> None:
        region = out.intersection(self.core)
        if region is None:
            return
        src = region.relative_to(out).slices
        dst = region.relative_to(self.core).slices
        w = gaussian_weights(tile, self.margin)[src]
        values = logits[:, src[0], src[1]].float().cpu().numpy()
        if self._sum is None:
            self._sum = np.zeros((values.shape[0], self.core.height, self.core.width), np.float32)
        self._sum[(slice(None), *dst)] += values * w
        self._weight[dst] += w

    def finalize(self) -> Stitched:
        """The block's labels (and probabilities); the merger cannot be used afterwards."""
        if self._finalized:
            raise RuntimeError("Merger.finalize called twice")
        self._finalized = True
        if not (self._weight > 0).all():
            raise RuntimeError(f"block {self.core}: some pixels received no tile output")
        if self.blend is Blend.CROP:
            assert self._labels is not None
            return Stitched(self._labels, self._probs)
        assert self._sum is not None
        logits = torch.from_numpy(self._sum / self._weight)
        probs = probabilities_from_logits(logits).numpy() if self.keep_probabilities else None
        return Stitched(labels_from_logits(logits).numpy(), probs)
