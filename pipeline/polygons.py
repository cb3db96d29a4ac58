"""Class polygons of a label array without seams, built strip by strip out of core.

The label array (H, W) is read one strip at a time (by default one row of its chunks, i.e. one
row of tiles). GDAL's polygonizer (:func:`rasterio.features.shapes`, 4-connectivity, nodata
masked out) turns each strip into polygons in pixel coordinates of the array (x = column,
y = row, y down). A polygon that touches the strip's bottom border joins an *open region*.
When the next strip arrives, each open region is joined by the new polygons of its class that
continue it across the border (that cover a pixel directly below one of its pixels); one
connected-components pass over these "continues" pairs groups them, so a U-shaped region
closed in a later strip becomes one polygon with its hole. A region that still touches the new
bottom border stays open; any other is finished: its pieces are dissolved into one polygon
(:func:`dissolve`) and handed out at once.

So no polygon is cut at a tile or block border, and memory holds one strip, its polygons and
the open regions' pieces — at most one region per run of equal labels along the border row.
The worst case is one region that spans the whole image (the sea): its pieces are held until
the last strip and dissolved there, once.

Holes never meet a strip border (a hole touching the border would not be enclosed), so only
exterior rings are searched for border edges.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import Polygon

__all__ = [
    "STRIP_PIXELS", "MergeStats", "SeamlessPolygons", "border_spans", "dissolve", "strip_polygons",
]

#: Label types GDAL's polygonizer takes as they are (others are read as int32).
_POLYGONIZABLE = tuple(np.dtype(t) for t in ("uint8", "uint16", "int8", "int16", "int32"))
_NO_SPANS = np.empty((0, 3), np.int64)
#: A strip holds at most about this many pixels (fewer rows than a tile row for wide images).
STRIP_PIXELS = 1 << 23
#: Polygons converted from the polygonizer's dictionaries at a time (bounds their memory).
_CONVERT_BATCH = 16384


@dataclass
class MergeStats:
    """What a pass did: strips read, polygons finished, the most regions open at once."""

    strips: int = 0
    polygons: int = 0
    max_open: int = 0


def strip_polygons(strip: np.ndarray, row: int, nodata: int) -> tuple[np.ndarray, np.ndarray]:
    """The 4-connected class polygons of ``strip`` (rows ``row``…), nodata left out.

    Returns (labels, polygons) as arrays (int64, shapely objects).
    """
    data = np.ascontiguousarray(strip)
    if data.dtype not in _POLYGONIZABLE:
        data = data.astype(np.int32)
    found = shapes(data, mask=data != nodata, connectivity=4,
                   transform=Affine.translation(0, row))
    chunks = [_convert(list(batch)) for batch in _batched(found, _CONVERT_BATCH)]
    if not chunks:
        return np.empty(0, np.int64), np.empty(0, dtype=object)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def _batched(items: Iterator[Any], n: int) -> Iterator[tuple[Any, ...]]:
    iterator = iter(items)
    while batch := tuple(itertools.islice(iterator, n)):
        yield batch


def _convert(found: list[tuple[dict, float]]) -> tuple[np.ndarray, np.ndarray]:
    """GeoJSON-like polygons from the polygonizer as (labels, shapely polygons) arrays."""
    labels = np.fromiter((v for _, v in found), np.int64, len(found))
    rings = [r for geom, _ in found for r in geom["coordinates"]]
    per_polygon = np.fromiter((len(g["coordinates"]) for g, _ in found), np.int64, len(found))
    sizes = np.fromiter(map(len, rings), np.int64, len(rings))
    xy = np.array(list(itertools.chain.from_iterable(rings)), np.float64)
    linear = shapely.linearrings(xy, indices=np.repeat(np.arange(len(rings)), sizes))
    polygons = shapely.polygons(linear, indices=np.repeat(np.arange(len(found)), per_polygon))
    return labels, np.asarray(polygons, dtype=object)


def border_spans(polygons: np.ndarray, y: float) -> np.ndarray:
    """Exterior edges of ``polygons`` on the line ``y`` as rows (x0, x1, polygon index)."""
    if not len(polygons):
        return _NO_SPANS
    rings = shapely.get_exterior_ring(polygons)
    xy, index = shapely.get_coordinates(rings, return_index=True)
    a, b = xy[:-1], xy[1:]
    on = (index[:-1] == index[1:]) & (a[:, 1] == y) & (b[:, 1] == y)
    x0, x1 = np.minimum(a[on, 0], b[on, 0]), np.maximum(a[on, 0], b[on, 0])
    return np.column_stack([x0, x1, index[:-1][on]]).astype(np.int64)


def _spans_at(polygons: np.ndarray, edge: np.ndarray, y: float) -> np.ndarray:
    """:func:`border_spans` of the polygons whose bounds ``edge`` (miny or maxy) equal ``y``."""
    chosen = np.flatnonzero(edge == y)
    spans = border_spans(polygons[chosen], y)
    return np.column_stack([spans[:, :2], chosen[spans[:, 2]]])


def _paint(width: int, spans: np.ndarray) -> np.ndarray:
    """Per column of a border row: the owner of the span covering it, or -1."""
    row = np.full(width, -1, np.int64)
    if len(spans):
        x0, x1, owner = spans.T
        lengths = x1 - x0
        columns = np.repeat(x0 - np.cumsum(lengths) + lengths, lengths)
        row[columns + np.arange(lengths.sum())] = np.repeat(owner, lengths)
    return row


def dissolve(pieces: list[Polygon], seams: np.ndarray) -> Polygon:
    """One polygon from pieces that meet along strip borders (the rows ``seams``).

    Only the exteriors are dissolved: a piece's holes never meet a strip border, so they are
    holes of the result as they are, and the union's own holes are those the pieces enclose
    together (leaving thousands of holes out of the union makes it several times faster). The
    exteriors tile the region without overlap, so once every border edge carries the vertices
    of both sides (:func:`_node_borders`) GEOS's coverage union dissolves the shared edges in
    one pass; a general overlay is the fallback. The vertices the borders left on straight
    edges are then dropped.
    """
    if len(pieces) == 1:
        return pieces[0]
    shells = _node_borders(pieces, seams)
    try:
        merged = shapely.coverage_union_all(shells)
    except shapely.errors.GEOSException:
        merged = shapely.union_all(shells)
    if not isinstance(merged, Polygon):  # edge-connected pieces always make one polygon
        raise RuntimeError(f"merging pieces across strip borders gave a {merged.geom_type}")
    holes = [_turns(r) for r in merged.interiors] + [h for p in pieces for h in p.interiors]
    return Polygon(_turns(merged.exterior), holes)


def _node_borders(pieces: list[Polygon], seams: np.ndarray) -> np.ndarray:
    """The pieces' exteriors as polygons, each with every vertex on a border added.

    Each exterior edge lying on a strip border gets the vertices any piece has on that border.
    """
    rings = shapely.get_exterior_ring(np.array(pieces, dtype=object))
    xy = shapely.get_coordinates(rings)
    on = xy[np.isin(xy[:, 1], seams)]
    breaks = {y: np.unique(on[on[:, 1] == y, 0]) for y in np.unique(on[:, 1])}
    return np.array(
        [Polygon(_insert(shapely.get_coordinates(r), breaks)) for r in rings], dtype=object
    )


def _insert(xy: np.ndarray, breaks: dict[float, np.ndarray]) -> np.ndarray:
    """A closed ring's coordinates with ``breaks[y]`` inserted into its edges on border y."""
    a, b = xy[:-1], xy[1:]
    flat = np.flatnonzero((a[:, 1] == b[:, 1]) & np.isin(a[:, 1], list(breaks)))
    parts: list[np.ndarray] = []
    start = 0
    for i in flat.tolist():
        xs = breaks[a[i, 1]]
        inside = xs[(xs > min(a[i, 0], b[i, 0])) & (xs < max(a[i, 0], b[i, 0]))]
        parts += [xy[start : i + 1], np.column_stack(
            [inside if a[i, 0] < b[i, 0] else inside[::-1], np.full(inside.size, a[i, 1])]
        )]
        start = i + 1
    parts.append(xy[start:])
    return np.vstack(parts)


def _turns(ring: Any) -> np.ndarray:
    """The vertices of an axis-parallel ring where it turns (collinear ones dropped), closed."""
    xy = shapely.get_coordinates(ring)[:-1]
    before, after = np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0)
    straight = ((before == xy) & (xy == after)).any(axis=1)
    kept = xy[~straight]
    return np.vstack([kept, kept[:1]])


class SeamlessPolygons:
    """Iterate ``(label, polygon)`` over a 2-D label array, merged across strip borders.

    ``array`` is anything sliced by rows into numpy (a Zarr array). It is read one band of
    chunk rows at a time and polygonized in strips of ``rows`` rows (default: a chunk row, or
    fewer rows when that is more than :data:`STRIP_PIXELS` pixels, which bounds the memory a
    strip's polygons take). :meth:`strips` gives each strip's finished polygons as arrays;
    :attr:`stats` counts what the pass did.
    """

    def __init__(self, array: Any, nodata: int, rows: int | None = None) -> None:
        height, width = array.shape
        chunks = getattr(array, "chunks", None)
        self.band = int(chunks[0]) if chunks else int(rows or height)
        self.rows = int(rows or min(self.band, max(1, STRIP_PIXELS // width)))
        self.band = max(self.band, self.rows)
        self.array = array
        self.nodata = int(nodata)
        self.stats = MergeStats()
        # the open regions: label and pieces of each, and their spans on the open border
        self._labels: list[int] = []
        self._pieces: list[list[Polygon]] = []
        self._spans = _NO_SPANS
        self._seams: list[int] = []  # the strip borders so far

    def __iter__(self) -> Iterator[tuple[int, Polygon]]:
        for labels, polygons in self.strips():
            yield from zip(labels.tolist(), polygons, strict=True)

    def strips(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(labels, polygons) finished after each strip, top down."""
        height, width = self.array.shape
        for start in range(0, height, self.band):
            band = np.asarray(self.array[start : min(start + self.band, height)])
            for row in range(start, start + len(band), self.rows):
                stop = min(row + self.rows, start + len(band))
                if row:
                    self._seams.append(row)
                yield self._add(band[row - start : stop - start], row, width, last=stop == height)

    def _add(
        self, strip: np.ndarray, top: int, width: int, *, last: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Join the strip's polygons to the open regions; the finished ones."""
        bottom = top + strip.shape[0]
        labels, polygons = strip_polygons(strip, top, self.nodata)
        bounds = shapely.bounds(polygons).reshape(-1, 4)
        tops = _spans_at(polygons, bounds[:, 1], top) if top else _NO_SPANS
        bottoms = _NO_SPANS if last else _spans_at(polygons, bounds[:, 3], bottom)
        n_old = len(self._labels)
        component = self._components(labels, tops, width)
        count = int(component.max()) + 1 if component.size else 0
        is_open = np.zeros(count, bool)
        is_open[component[n_old + bottoms[:, 2]]] = True
        # new polygons alone in their component and not open are finished as they are
        alone = np.bincount(component, minlength=count) == 1
        simple = alone[component[n_old:]] & ~is_open[component[n_old:]]
        rest = np.concatenate([np.arange(n_old), n_old + np.flatnonzero(~simple)])
        done_labels, done, open_index = self._regroup(rest, component, is_open, labels, polygons)
        owners = open_index[component[n_old + bottoms[:, 2]]]
        self._spans = np.column_stack([bottoms[:, :2], owners])
        finished = (np.concatenate([labels[simple], done_labels]),
                    np.concatenate([polygons[simple], done]))
        self.stats.strips += 1
        self.stats.polygons += len(finished[0])
        self.stats.max_open = max(self.stats.max_open, len(self._labels))
        return finished

    def _regroup(
        self, nodes: np.ndarray, component: np.ndarray, is_open: np.ndarray, labels: np.ndarray,
        polygons: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open components of ``nodes`` become the open regions; the others are dissolved.

        Returns the finished (labels, polygons) and each component's index among the open.
        """
        open_index = np.full(len(is_open), -1, np.int64)
        old = (self._labels, self._pieces)
        self._labels, self._pieces = [], []
        seams = np.asarray(self._seams, np.float64)
        done_labels: list[int] = []
        done: list[Polygon] = []
        for members in _split(nodes, component[nodes]):
            label, pieces = _gather(members, old, labels, polygons)
            if is_open[component[members[0]]]:
                open_index[component[members[0]]] = len(self._labels)
                self._labels.append(label)
                self._pieces.append(pieces)
            else:
                done_labels.append(label)
                done.append(dissolve(pieces, seams))
        return np.array(done_labels, np.int64), _objects(done), open_index

    def _components(self, labels: np.ndarray, tops: np.ndarray, width: int) -> np.ndarray:
        """Component of each node (open regions 0..n-1, then the strip's polygons)."""
        n_old = len(self._labels)
        n = n_old + len(labels)
        above, below = _paint(width, self._spans), _paint(width, tops)
        old_labels = np.array([*self._labels, -1], np.int64)
        new_labels = np.append(labels, -2)
        touch = (above >= 0) & (below >= 0) & (old_labels[above] == new_labels[below])
        pairs = np.unique(np.stack([above[touch], below[touch] + n_old], axis=1), axis=0)
        graph = coo_matrix(
            (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n)
        )
        return np.asarray(connected_components(graph, directed=False)[1], np.int64)


def _gather(
    members: np.ndarray, old: tuple[list[int], list[list[Polygon]]], labels: np.ndarray,
    polygons: np.ndarray,
) -> tuple[int, list[Polygon]]:
    """The label and all pieces of one component (nodes: open regions, then new polygons)."""
    old_labels, old_pieces = old
    n_old = len(old_labels)
    first = int(members[0])
    label = old_labels[first] if first < n_old else int(labels[first - n_old])
    pieces = [p for i in members[members < n_old] for p in old_pieces[i]]
    return label, pieces + list(polygons[members[members >= n_old] - n_old])


def _objects(items: list[Any]) -> np.ndarray:
    """A 1-D object array of ``items`` (numpy never looks inside them)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _split(nodes: np.ndarray, component: np.ndarray) -> list[np.ndarray]:
    """``nodes`` grouped by ``component``, groups in order of their first node."""
    if not nodes.size:
        return []
    order = np.argsort(component, kind="stable")
    cuts = np.flatnonzero(np.diff(component[order])) + 1
    return sorted(np.split(nodes[order], cuts), key=lambda g: int(g[0]))
