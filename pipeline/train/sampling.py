"""One training image: tiles read and normalized exactly as inference reads them, with labels.

A :class:`TrainImage` holds an open raster, its label source, its normalizer (computed once per
image by :func:`~segpipe.pipeline.normalize.compute_normalizer`, as the stats stage of
``segpipe run`` does) and its held-out split. Training tiles are the tiles of the training
blocks of the same :class:`~segpipe.pipeline.tiling.TilePlan` inference uses, shifted by a
random offset of up to half a tile, read through
:func:`~segpipe.pipeline.tiling.read_mirrored` (mirror-extended at the border) with the halo;
their labels are the core's, with held-out, nodata and outside pixels unlabelled. Validation
reads the held-out blocks' tiles exactly as ``segpipe run`` does (``Tile.read``, then the
core's crop of the output).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from segpipe.models.card import Normalization, NormMethod
from segpipe.models.foundation import InputError
from segpipe.pipeline.confusion import confusion_matrix
from segpipe.pipeline.io.base import RasterInfo, Reader, open_raster
from segpipe.pipeline.normalize import Normalizer, compute_normalizer
from segpipe.pipeline.tiling import Tile, TilePlan, Window, read_mirrored
from segpipe.pipeline.train.augment import augment, radiometric
from segpipe.pipeline.train.labels import open_labels
from segpipe.pipeline.train.options import TrainOptions, TrainPair
from segpipe.pipeline.train.split import Split, make_split
from segpipe.pipeline.train.weights import border_context, border_weights, pixel_weights

__all__ = ["TileShape", "TrainImage"]


@dataclass(frozen=True)
class TileShape:
    """Tile core, halo, the extra input pixels the network needs, and its margin."""

    tile: int
    halo: int
    extra: int
    margin: int


@dataclass(frozen=True)
class Sample:
    """One augmented training tile: input (C, S, S), classes and weights of the core (T, T)."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray


class TrainImage:
    """An image with its labels, normalizer and split, ready to give tiles."""

    def __init__(self, pair: TrainPair, options: TrainOptions, shape: TileShape,
                 class_names: list[str] | None) -> None:
        self.pair = pair
        self.shape = shape
        self.reader: Reader = open_raster(pair.image)
        self.info: RasterInfo = self.reader.info
        self.bands = _bands(self.info, options.labels.bands)
        lab = options.labels
        self.labels, self.names = open_labels(
            pair.labels, self.info, class_field=lab.class_field, class_names=class_names,
            ignore=lab.ignore_value, instances=pair.instances, point_radius=lab.point_radius,
        )
        self.normalizer = self._normalizer(options.sampling.normalize)
        self.radiometric = options.sampling.radiometric
        s = options.sampling
        plan = TilePlan(self.info.height, self.info.width, shape.tile, shape.halo, shape.extra,
                        block=max(1, -(-s.holdout_block // shape.tile)))
        self.split: Split = make_split(plan, s.holdout, options.loop.seed, pair.image)
        self.train_tiles = self.split.tiles(held_out=False)

    def _normalizer(self, method: NormMethod) -> Normalizer:
        selected = list(self.bands)
        return compute_normalizer(
            Normalization(method), dtype=self.info.dtype, bands=len(selected),
            nodata=self.info.nodata, read=lambda w: self.reader.read(w)[selected],
            shape=self.info.shape,
        )

    def read_input(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Normalized pixels of ``window`` (mirror-extended) and its all-nodata mask."""
        selected = list(self.bands)
        pixels = read_mirrored(lambda w: self.reader.read(w)[selected], window,
                               self.info.height, self.info.width)
        return self.normalizer.apply(pixels, self.info.nodata)

    def label_counts(self) -> np.ndarray:
        """Pixels per class value over the training blocks (index = class)."""
        counts = np.zeros(0, np.int64)
        for window in self.split.windows(held_out=False):
            classes, _ = self.labels.read(window)
            found = np.bincount(classes[classes >= 0].ravel())
            size = max(len(counts), len(found))
            counts = np.pad(counts, (0, size - len(counts))) + np.pad(found, (0, size - len(found)))
        return counts

    def sample(self, rng: np.random.Generator, per_class: np.ndarray, w0: float,
               sigma: float) -> Sample:
        """A random training tile, shifted, weighted and augmented."""
        t, h, e = self.shape.tile, self.shape.halo, self.shape.extra
        base = self.train_tiles[int(rng.integers(len(self.train_tiles)))].core
        dy, dx = (int(v) for v in rng.integers(-(t // 2), t // 2 + 1, 2))
        core = Window(base.row + dy, base.col + dx, t, t)
        x, nodata = self.read_input(core.grow(h + e, h + e, h + e, h + e))
        classes, border = self._core_labels(core, w0, sigma)
        classes[nodata[h + e : h + e + t, h + e : h + e + t]] = -1
        classes[self.split.held_out_mask(core)] = -1
        weights = pixel_weights(classes, per_class, border)
        x, (classes, weights) = augment(x, (classes, weights), rng)
        x = radiometric(x, self.radiometric, rng)
        return Sample(x[:, e:, e:], classes, weights)

    def _core_labels(self, core: Window, w0: float, sigma: float):
        g = border_context(sigma) if w0 > 0 else 0
        classes, instances = self.labels.read(core.grow(g, g, g, g))
        inner = (slice(g, g + core.height), slice(g, g + core.width))
        if instances is None or w0 <= 0:
            return classes[inner].copy(), None
        return classes[inner].copy(), border_weights(instances, w0, sigma)[inner]

    def held_out_confusion(
        self, predict: Callable[[np.ndarray], np.ndarray], batch_size: int, k: int
    ) -> np.ndarray:
        """The k×k confusion matrix (rows: reference) of the model on the held-out blocks."""
        cm = np.zeros((k, k), np.int64)
        for batch in _batches(self.split.tiles(held_out=True), batch_size):
            inputs = [self.read_input(t.read) for t in batch]
            logits = predict(np.stack([x for x, _ in inputs]))
            for tile, out, (_, nodata) in zip(batch, logits, inputs):
                rows, cols = tile.output_crop(self.shape.margin)
                pred = out[:, rows, cols].argmax(0)
                ref, _ = self.labels.read(tile.core)
                ref[nodata[tile.core.relative_to(tile.read).slices]] = -1
                keep = (ref >= 0) & (ref < k)
                cm += confusion_matrix(ref[keep], pred[keep], k)
        return cm

    def close(self) -> None:
        """Release the raster."""
        self.reader.close()


def _batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    for i in range(0, len(tiles), size):
        yield tiles[i : i + size]


def _bands(info: RasterInfo, bands: tuple[int, ...] | None) -> tuple[int, ...]:
    if bands is None:
        return tuple(range(info.bands))
    bad = [b for b in bands if b > info.bands]
    if bad:
        raise InputError(f"--bands {bad} out of range: {info.path} has bands 1..{info.bands}")
    return tuple(b - 1 for b in bands)
