"""The tile and the halo for a model and an image: what ``plan_run`` and ``inspect`` choose.

``--tile`` (else 512, rounded to the model's stride; for a model that takes one input size only,
the largest tile that fits inside the halo), ``--halo`` (else the card's, else the model's
margin, else a default for "same"-padding nets, with a warning), the stride check, and the
:class:`~segpipe.pipeline.tiling.TilePlan` over the image with its block layout.
"""

from __future__ import annotations

from segpipe.models.card import ModelCard
from segpipe.models.foundation import InputError
from segpipe.models.probe import Geometry
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.options import DEFAULT_TILE, Blend, TilingOptions
from segpipe.pipeline.tiling import TilePlan

__all__ = ["DEFAULT_SAME_HALO", "check_stride", "choose_halo", "choose_tile", "tile_plan"]

DEFAULT_SAME_HALO = 32


def choose_tile(
    tile: int | None, halo: int, g: Geometry, name: str, card: ModelCard, warnings: list[str]
) -> int:
    """``--tile``, else 512 rounded to the stride; for a fixed-size model, a tile that fits."""
    if g.fixed_size is not None:
        return _fixed_tile(tile, halo, g, name, card, warnings)
    return tile or max(g.stride, round(DEFAULT_TILE / g.stride) * g.stride)


def tile_plan(
    info: RasterInfo, tiling: TilingOptions, tile: int, halo: int, g: Geometry | None
) -> TilePlan:
    """The tiles and blocks over ``info``; reads padded to a size ``g`` takes (none if None)."""
    size = tile + 2 * halo
    extra = g.fit(size) - size if g is not None else 0
    margin = g.margin if g is not None else 0
    ring = 1 if tiling.blend is Blend.GAUSSIAN and halo > margin else 0
    return TilePlan(
        info.height, info.width, tile, halo, extra,
        block=max(1, tiling.block_pixels // tile), ring=ring,
    )


def check_stride(tile: int, geometry: Geometry) -> None:
    """Refuse a tile that is not a multiple of the model's stride, naming the two nearest."""
    if tile % geometry.stride:
        lower = tile - tile % geometry.stride
        raise InputError(
            f"--tile {tile} is not a multiple of the model's stride {geometry.stride}:"
            f" use {lower or geometry.stride} or {lower + geometry.stride}"
        )


def _fixed_tile(
    tile: int | None, halo: int, g: Geometry, name: str, card: ModelCard, warnings: list[str]
) -> int:
    """The tile for a model that takes only ``g.fixed_size`` pixels: tile + 2·halo must fit."""
    size = g.fixed_size or 0
    room = size - 2 * halo
    best = room - room % g.stride
    if best < 1:
        fix = f"use a smaller --halo (at least {g.margin})" if halo > g.margin else (
            "use a model that takes larger inputs"
        )
        raise InputError(
            f"{name} takes only {size}×{size} inputs, which leaves no tile (a multiple of the "
            f"stride {g.stride}) inside a halo of {halo} px per side: {fix}"
        )
    if tile is not None and tile + 2 * halo > size:
        raise InputError(
            f"--tile {tile} does not fit {name}: it takes only {size}×{size} inputs and tile + "
            f"2 × halo ({tile} + 2 × {halo}) must be at most {size}: use --tile {best} or omit "
            "--tile"
        )
    tile = tile or best
    stride = "" if card.stride else (
        "; its card gives no stride, so tiles are not aligned to the model's pooling: add "
        "the stride to the card for exact results"
    )
    warnings.append(
        f"{name} takes only {size}×{size} inputs: tiles of {tile} px with a halo of {halo} px "
        f"(+{size - tile - 2 * halo} px at the bottom/right){stride}"
    )
    return tile


def choose_halo(halo: int | None, card: ModelCard, g: Geometry, warnings: list[str]) -> int:
    """``--halo``, else the card's, else the model's margin; never below a valid model's margin."""
    if halo is None and card.halo is not None:
        halo = card.halo
    if halo is None:
        if g.margin > 0:
            return g.margin
        warnings.append(
            f"the model has no halo in its card and pads its convolutions ('same'): using a halo "
            f"of {DEFAULT_SAME_HALO} px; set --halo to the model's receptive-field radius for "
            "exact results"
        )
        return DEFAULT_SAME_HALO
    if halo < g.margin:
        raise InputError(
            f"--halo {halo} is smaller than the model's margin {g.margin} (valid convolutions "
            f"consume {g.margin} px per side): use --halo {g.margin} or more"
        )
    return halo
