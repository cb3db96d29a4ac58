"""Objects joined across block seams in one streaming pass: memory of one row of blocks.

Blocks arrive in raster order (block row by block row, left to right), each with its
components per class and the component ids along its edges (:class:`~segpipe.pipeline.objects.
BlockObjects`). Component ``i`` of a block gets the provisional global id ``offset + i``, where
``offset`` counts the components of every block before it. A block's left edge is joined with
the right edge of the block before it in the row, its top edge with the bottom edge of the
block above; facing pixels of one class join their components (4-connectivity). A union-find
holds only the *live frontier*: the ids on the bottom edges of the current and the previous
block row, and one root per group among them. When a block row is done, every node no longer
on the frontier is dropped (its group's root stays while a member is live), so memory is
O(image width), not O(blocks × block perimeter); the number of merges per class is counted as
unions happen, and ``objects = components − merges``.

The join also writes what a later pass needs to give every object one id: per block its offset
(:attr:`SeamJoin.offsets`) and every union of two groups as a pair of provisional ids
(handed to a sink at the end of every block row and every
:data:`UNION_CHUNK` pairs, so that no more than one row's stay in memory). The connected
components of the union pairs over the provisional ids are the objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from segpipe.pipeline import storage
from segpipe.pipeline.objects import BlockObjects
from segpipe.pipeline.workdir import pack_array, unpack_array

__all__ = ["SeamJoin", "SeamWriter", "join_blocks", "read_seams"]

#: Union pairs are handed to the sink in chunks of at most this many (and at every block row).
UNION_CHUNK = 65536


@dataclass(frozen=True)
class _Edge:
    """Provisional global ids and classes along one block edge (pixels with id 0 dropped)."""

    ids: np.ndarray
    classes: np.ndarray
    position: np.ndarray  # the pixel positions along the edge of the kept ids

    @classmethod
    def of(cls, ids: np.ndarray, block: BlockObjects, offset: int) -> _Edge:
        keep = np.flatnonzero(ids > 0)
        local = ids[keep].astype(np.int64)
        return cls(local + offset, block.classes_of(local), keep)


@dataclass
class SeamJoin:
    """The streaming join; feed blocks in raster order with :meth:`add`, then :meth:`finish`.

    ``sink`` receives the union pairs, an (n, 2) int64 array at a time.
    """

    sink: Callable[[np.ndarray], None] | None = None
    components: dict[int, int] = field(default_factory=dict)
    merges: dict[int, int] = field(default_factory=dict)
    offsets: dict[tuple[int, int], int] = field(default_factory=dict)
    _parent: dict[int, int] = field(default_factory=dict)
    _above: dict[int, _Edge] = field(default_factory=dict)  # column → bottom edge, previous row
    _below: dict[int, _Edge] = field(default_factory=dict)  # column → bottom edge, this row
    _left: tuple[tuple[int, int], _Edge] | None = None  # (index, right edge) of the last block
    _row: int | None = None
    _last: tuple[int, int] | None = None
    _row_above: int = -2
    _next: int = 0
    _pending: list[tuple[int, int]] = field(default_factory=list)
    peak_nodes: int = 0

    def add(self, block: BlockObjects) -> None:
        """Join ``block`` (the next in raster order) with its left and upper neighbours."""
        row, col = block.index
        if self._last is not None and (row, col) <= self._last:
            raise ValueError(f"block {block.index} came after {self._last}: not raster order")
        self._last = (row, col)
        if row != self._row:
            self._end_row(row)
        offset = self._next
        self.offsets[block.index] = offset
        self._next += sum(block.components.values())
        for k, c in block.components.items():
            self.components[k] = self.components.get(k, 0) + c
        edges = block.edges
        if self._left is not None and self._left[0] == (row, col - 1):
            self._join(self._left[1], _Edge.of(edges.left, block, offset))
        if col in self._above and self._row_above == row - 1:
            self._join(self._above[col], _Edge.of(edges.top, block, offset))
        self._left = ((row, col), _Edge.of(edges.right, block, offset))
        self._below[col] = _Edge.of(edges.bottom, block, offset)
        self.peak_nodes = max(self.peak_nodes, len(self._parent))

    def finish(self) -> dict[int, int]:
        """Objects per class (components − merges); flushes the union pairs to the sink."""
        self._flush()
        return {k: c - self.merges.get(k, 0) for k, c in sorted(self.components.items())}

    # -- the union-find over the frontier -------------------------------------------------

    def _end_row(self, row: int) -> None:
        """Start block row ``row``: the last row's bottom edges become the frontier above."""
        self._flush()  # the last row's unions: memory of one row of blocks, not of the image
        self._above, self._below = self._below, {}
        self._row_above = self._row if self._row is not None else -2
        self._row = row
        self._left = None
        self._prune()

    def _prune(self) -> None:
        """Keep only the nodes on the frontier above and their roots."""
        live = {int(i) for e in self._above.values() for i in e.ids}
        roots = {i: self._find(i) for i in live}
        self._parent = {**{r: r for r in roots.values()}, **roots}

    def _find(self, i: int) -> int:
        parent = self._parent
        root = i
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(i, i) != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    def _join(self, a: _Edge, b: _Edge) -> None:
        """Union the components that face each other across one seam (same pixel, same class)."""
        pa, ia = a.position, np.searchsorted(a.position, b.position)
        ia = np.minimum(ia, max(pa.size - 1, 0))
        if not pa.size:
            return
        facing = pa[ia] == b.position
        left, right = a.ids[ia[facing]], b.ids[facing]
        same = a.classes[ia[facing]] == b.classes[facing]
        pairs = np.unique(np.stack([left[same], right[same]], axis=1), axis=0)
        classes = dict(zip(right[same].tolist(), b.classes[facing][same].tolist(), strict=True))
        for x, y in pairs.tolist():
            rx, ry = self._find(x), self._find(y)
            if rx == ry:
                continue
            self._parent[max(rx, ry)] = min(rx, ry)
            self._parent.setdefault(min(rx, ry), min(rx, ry))
            k = classes[y]
            self.merges[k] = self.merges.get(k, 0) + 1
            self._pending.append((rx, ry))
            if len(self._pending) >= UNION_CHUNK:
                self._flush()

    def _flush(self) -> None:
        if self.sink is not None and self._pending:
            self.sink(np.asarray(self._pending, np.int64))
        self._pending = []


def join_blocks(blocks: Iterable[BlockObjects],
                sink: Callable[[np.ndarray], None] | None = None) -> SeamJoin:
    """Join ``blocks`` (any order; sorted to raster order here) and return the finished join."""
    join = SeamJoin(sink=sink)
    for block in sorted(blocks, key=lambda b: b.index):
        join.add(block)
    return join


@dataclass
class SeamWriter:
    """Writes a join's union pairs (chunk by chunk) and offsets under ``folder``.

    ``unions-00000``, … hold packed (n, 2) int64 pairs; ``offsets`` a JSON object
    ``{"row_col": offset}``. Read back with :func:`read_seams`.
    """

    folder: str
    chunks: int = 0

    def __post_init__(self) -> None:
        storage.remove_tree(self.folder)  # a rerun's report writes them anew
        storage.makedirs(self.folder)

    def __call__(self, pairs: np.ndarray) -> None:
        storage.write_text(storage.join(self.folder, f"unions-{self.chunks:05d}"),
                           pack_array(pairs))
        self.chunks += 1

    def finish(self, join: SeamJoin) -> None:
        """Write the offsets, after the join's last union pairs (it is finished here first)."""
        join.finish()  # flushes the last row's pairs to this sink; finishing again is harmless
        offsets = {f"{r}_{c}": o for (r, c), o in join.offsets.items()}
        storage.write_text(storage.join(self.folder, "offsets"), json.dumps(offsets))


def read_seams(folder: str) -> tuple[dict[tuple[int, int], int], np.ndarray]:
    """(offset per block index, every union pair) as :class:`SeamWriter` wrote them."""
    texts = storage.list_texts(folder)
    offsets: dict[tuple[int, int], int] = {}
    for key, offset in json.loads(texts["offsets"]).items():
        row, col = key.split("_")
        offsets[int(row), int(col)] = int(offset)
    names = sorted(n for n in texts if n.startswith("unions"))
    chunks = [unpack_array(texts[n]).reshape(-1, 2) for n in names]
    pairs = np.concatenate(chunks) if chunks else np.zeros((0, 2), np.int64)
    return offsets, pairs
