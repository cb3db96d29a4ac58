"""The overlap-tile plan: which pixels each tile owns, which it reads, and how tiles group.

Tiles are anchored at multiples of the tile size ``T`` from the image origin. A tile *owns* its
core window (``T``×``T``, clipped at the far image edges) and *reads* its core grown by the halo
``H`` on every side, plus ``extra`` rows/columns at the bottom/right so the model input has a
size the network accepts (see :class:`segpipe.models.Geometry`). Where the read window leaves the
image it is completed by symmetric mirroring (numpy ``mode="symmetric"``, repeated when the pad
is larger than the image), never by zeros and never in the interior: see :func:`mirror_indices`.

Tiles are grouped into square *blocks* of ``block`` × ``block`` tiles; a block is the unit of work
(one Dask task) and the unit of output (whole chunks of the label array).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from segpipe.models.foundation import InputError


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of pixels: top-left ``(row, col)`` and size. Coordinates may be negative."""

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        """One past the last row."""
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        """One past the last column."""
        return self.col + self.width

    @property
    def size(self) -> int:
        """Number of pixels."""
        return self.height * self.width

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices, for windows inside an array."""
        return slice(self.row, self.row_stop), slice(self.col, self.col_stop)

    def grow(self, top: int, left: int, bottom: int, right: int) -> Window:
        """The window grown by the given margins (negative margins shrink it)."""
        return Window(
            self.row - top, self.col - left, self.height + top + bottom, self.width + left + right
        )

    def relative_to(self, outer: Window) -> Window:
        """The window in the coordinates of ``outer`` (whose origin becomes 0, 0)."""
        return Window(self.row - outer.row, self.col - outer.col, self.height, self.width)

    def intersection(self, other: Window) -> Window | None:
        """The common part of two windows, or None when they do not meet."""
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)


def mirror_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Source indices in ``[0, size)`` for positions ``[start, stop)`` of the mirror-extended axis.

    The extension is numpy's ``symmetric`` mode (edge pixel repeated: ... 1 0 | 0 1 2 ... n-1 |
    n-1 n-2 ...), periodic with period ``2 * size``, so pads larger than the axis repeat the
    mirroring exactly as ``np.pad(a, big, mode="symmetric")`` does. This is dask's
    ``boundary="reflect"``, not numpy's ``reflect``.
    """
    if size <= 0:
        raise InputError(f"axis size must be positive, got {size}")
    idx = np.arange(start, stop) % (2 * size)
    return np.where(idx < size, idx, 2 * size - 1 - idx)


def read_mirrored(read, window: Window, height: int, width: int) -> np.ndarray:
    """Read ``window`` of the mirror-extended image through ``read(inner_window) -> (C, h, w)``.

    Only the bounding box of the source pixels the window needs is read, once; the extension is
    gathered from it. For a window inside the image this is a plain read.
    """
    rows = mirror_indices(window.row, window.row_stop, height)
    cols = mirror_indices(window.col, window.col_stop, width)
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    src = read(Window(r0, c0, r1 - r0, c1 - c0))
    if (r0, r1 - r0) == (window.row, window.height) and (c0, c1 - c0) == (
        window.col,
        window.width,
    ):
        return src
    return src[:, rows - r0][:, :, cols - c0]


@dataclass(frozen=True)
class Tile:
    """One tile of a plan: the core it owns and the window it reads (image coordinates)."""

    index: tuple[int, int]
    core: Window
    read: Window

    def output_crop(self, margin: int) -> tuple[slice, slice]:
        """Slices of the model's output (read window shrunk by ``margin``) that hold the core."""
        top = self.core.row - self.read.row - margin
        left = self.core.col - self.read.col - margin
        return slice(top, top + self.core.height), slice(left, left + self.core.width)


@dataclass(frozen=True)
class Block:
    """A group of tiles handled by one task; its core is made of whole tiles (whole chunks)."""

    index: tuple[int, int]
    core: Window
    tiles: tuple[Tile, ...]
    read: Window

    @property
    def id(self) -> str:
        """A stable name, used in manifests and task keys."""
        return f"{self.index[0]}_{self.index[1]}"


@dataclass(frozen=True)
class TilePlan:
    """Tiles of ``tile`` × ``tile`` over a ``height`` × ``width`` image, with halo and blocks.

    ``extra`` is added at the bottom/right of every read window so that the model input size
    ``tile + 2 * halo + extra`` is one the network accepts. ``ring`` is how many neighbouring tiles
    a block also computes around itself (1 for Gaussian blending, whose overlaps cross block edges;
    0 for cropping).
    """

    height: int
    width: int
    tile: int
    halo: int
    extra: int = 0
    block: int = 4
    ring: int = 0

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise InputError(f"image size must be positive, got {self.height}x{self.width}")
        if self.tile < 1:
            raise InputError(f"--tile must be a positive number of pixels, got {self.tile}")
        if self.halo < 0:
            raise InputError(f"--halo must be >= 0, got {self.halo}")
        if self.extra < 0 or self.block < 1 or self.ring < 0:
            raise InputError(f"invalid plan extra={self.extra} block={self.block}")

    @property
    def input_size(self) -> int:
        """Side of every model input (the read window of each tile)."""
        return self.tile + 2 * self.halo + self.extra

    @cached_property
    def grid(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return math.ceil(self.height / self.tile), math.ceil(self.width / self.tile)

    @cached_property
    def block_grid(self) -> tuple[int, int]:
        """Number of block rows and columns."""
        return math.ceil(self.grid[0] / self.block), math.ceil(self.grid[1] / self.block)

    def tile_at(self, i: int, j: int) -> Tile:
        """The tile in tile-row ``i``, tile-column ``j``."""
        row, col = i * self.tile, j * self.tile
        core = Window(row, col, min(self.tile, self.height - row), min(self.tile, self.width - col))
        read = Window(row - self.halo, col - self.halo, self.input_size, self.input_size)
        return Tile((i, j), core, read)

    def tiles(self) -> Iterator[Tile]:
        """All tiles, row by row."""
        rows, cols = self.grid
        for i in range(rows):
            for j in range(cols):
                yield self.tile_at(i, j)

    def block_indices(self) -> Iterator[tuple[int, int]]:
        """Indices of all blocks, row by row (cheap: builds no tiles)."""
        rows, cols = self.block_grid
        for bi in range(rows):
            for bj in range(cols):
                yield bi, bj

    def block_core(self, bi: int, bj: int) -> Window:
        """The core of block ``(bi, bj)`` (cheap: builds no tiles)."""
        side = self.block * self.tile
        row, col = bi * side, bj * side
        return Window(row, col, min(side, self.height - row), min(side, self.width - col))

    def block_at(self, bi: int, bj: int) -> Block:
        """Block ``(bi, bj)``: its own tiles, plus ``ring`` neighbours, and the window it reads."""
        rows, cols = self.grid
        i0, j0 = bi * self.block, bj * self.block
        i1, j1 = min(i0 + self.block, rows), min(j0 + self.block, cols)
        own = [self.tile_at(i, j) for i in range(i0, i1) for j in range(j0, j1)]
        first, last = own[0].core, own[-1].core
        core = Window(first.row, first.col, last.row_stop - first.row, last.col_stop - first.col)
        tiles = [
            self.tile_at(i, j)
            for i in range(max(i0 - self.ring, 0), min(i1 + self.ring, rows))
            for j in range(max(j0 - self.ring, 0), min(j1 + self.ring, cols))
        ]
        r0 = min(t.read.row for t in tiles)
        c0 = min(t.read.col for t in tiles)
        r1 = max(t.read.row_stop for t in tiles)
        c1 = max(t.read.col_stop for t in tiles)
        return Block((bi, bj), core, tuple(tiles), Window(r0, c0, r1 - r0, c1 - c0))

    def blocks(self) -> Iterator[Block]:
        """All blocks, row by row."""
        for bi, bj in self.block_indices():
            yield self.block_at(bi, bj)

    @property
    def n_blocks(self) -> int:
        """How many blocks the plan has."""
        return self.block_grid[0] * self.block_grid[1]

    @property
    def n_tiles(self) -> int:
        """How many tiles the plan has."""
        return self.grid[0] * self.grid[1]
