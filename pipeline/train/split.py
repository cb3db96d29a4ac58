"""The spatially held-out split: whole square regions go to validation, never single pixels.

The image is cut into the blocks of a :class:`~segpipe.pipeline.tiling.TilePlan` (squares of
whole tiles, ``--holdout-block`` pixels rounded up to tiles); a seeded permutation sends
``round(fraction · blocks)`` of them (at least one, never all) to validation. Training samples
tiles whose core starts in a training block and learns only from training-block pixels;
validation scores the held-out blocks tile by tile as inference would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segpipe.models.foundation import InputError
from segpipe.pipeline.tiling import Tile, TilePlan, Window

__all__ = ["Split", "make_split"]


@dataclass(frozen=True)
class Split:
    """Which blocks of ``plan`` are held out."""

    plan: TilePlan
    held_out: frozenset[tuple[int, int]]

    @property
    def side(self) -> int:
        """Side of one region in pixels."""
        return self.plan.block * self.plan.tile

    def held_out_mask(self, window: Window) -> np.ndarray:
        """True for the pixels of ``window`` in held-out regions (False outside the image)."""
        rows = np.arange(window.row, window.row_stop)
        cols = np.arange(window.col, window.col_stop)
        bi = np.where((rows >= 0) & (rows < self.plan.height), rows // self.side, -1)
        bj = np.where((cols >= 0) & (cols < self.plan.width), cols // self.side, -1)
        mask = np.zeros((len(rows), len(cols)), bool)
        for i, j in self.held_out:
            mask |= (bi == i)[:, None] & (bj == j)[None, :]
        return mask

    def tiles(self, held_out: bool) -> list[Tile]:
        """The tiles of the held-out (or the training) blocks."""
        return [
            tile
            for index in self.plan.block_indices()
            if (index in self.held_out) == held_out
            for tile in self.plan.block_at(*index).tiles
        ]

    def windows(self, held_out: bool) -> list[Window]:
        """The cores of the held-out (or the training) blocks."""
        return [self.plan.block_core(*index) for index in self.plan.block_indices()
                if (index in self.held_out) == held_out]


def make_split(plan: TilePlan, fraction: float, seed: int, name: str) -> Split:
    """Hold out ``round(fraction · blocks)`` blocks of ``plan`` (at least 1, never all)."""
    blocks = list(plan.block_indices())
    if len(blocks) < 2:
        raise InputError(
            f"{name} is {plan.height}×{plan.width} px: one region of --holdout-block "
            f"{plan.block * plan.tile} px covers it, so nothing can be held out; use a smaller "
            "--holdout-block (or --tile)"
        )
    count = min(max(1, round(fraction * len(blocks))), len(blocks) - 1)
    order = np.random.default_rng(seed).permutation(len(blocks))
    return Split(plan, frozenset(blocks[i] for i in order[:count]))
