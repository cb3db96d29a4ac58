"""Segmenting one block, on whichever worker runs it.

Read with halo, normalize, run the model per tile, stitch, write the core's chunks, count the
labels, mark the block done. The marker also carries what the summary's areas and objects need,
so no second pass over the labels is made: the core's 4-connected components per class and its
edge ids (:mod:`segpipe.pipeline.objects`) and, for a geographic grid (``row_counts``), per-class
counts per row (:mod:`segpipe.pipeline.areas`).

A :class:`SegmentJob` holds everything a worker needs as small picklable values (paths, the tile
plan, the normalizer); tasks carry the job and a block index, never arrays or models. Each worker
process loads the model once (:func:`segpipe.models.loading.load_model_cached`, verified by its
sha256) and reuses it.

The part that turns a block's pixels into labels, :func:`label_block` with a :class:`Labeller`
(the job less its paths), reads and writes nothing: the run's blocks call it between their Zarr
read and write, and the Python API (``segpipe.segment``) calls it on pixels read from arrays, so
both give the same labels.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from segpipe.models.foundation import ModelError, Precision
from segpipe.models.loading import LoadedModel, load_model_cached
from segpipe.pipeline.areas import row_counts
from segpipe.pipeline.batches import Prefetcher, runner_for
from segpipe.pipeline.feed import Feed
from segpipe.pipeline.io.base import open_raster
from segpipe.pipeline.io.durable import sync_region
from segpipe.pipeline.io.zarrstore import open_array
from segpipe.pipeline.labels import all_finite, label_dtype, nodata_label
from segpipe.pipeline.mask import RegionMask
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.objects import Edges, block_components
from segpipe.pipeline.options import Blend
from segpipe.pipeline.stitch import Merger, Stitched
from segpipe.pipeline.tiling import Block, TilePlan, read_mirrored
from segpipe.pipeline.workdir import BlockRecord, WorkDir, pack_array

__all__ = [
    "Labelled",
    "Labeller",
    "PreparedBlock",
    "SegmentJob",
    "finish_block",
    "label_block",
    "label_prepared",
    "labels_of",
    "prepare_block",
    "segment_and_record",
    "segment_block",
    "sync_block",
    "write_nodata",
]


@dataclass(frozen=True)
class Labeller:
    """How a block's pixels become labels, with no paths: the model, the tiles, the normalizer."""

    model: str
    model_sha256: str
    device: str
    precision: Precision
    tiles: TilePlan
    margin: int
    num_classes: int
    normalizer: Normalizer
    nodata: float | None
    blend: Blend
    batch_size: int | None
    compiled: bool = False
    probabilities: bool = False

    def load(self) -> LoadedModel:
        """The model, loaded once per process and checked against the planned hash."""
        return load_model_cached(self.model, self.device, self.model_sha256,
                                 compiled=self.compiled)


@dataclass(frozen=True)
class Labelled:
    """A block core's labels (nodata where ``missing``) and probabilities (0 there), if asked."""

    labels: np.ndarray
    missing: np.ndarray
    probabilities: np.ndarray | None


@dataclass(frozen=True)
class SegmentJob:
    """What every block task of one run shares."""

    image_path: str
    labels_path: str
    probabilities_path: str | None
    model: str
    model_sha256: str
    tiles: TilePlan
    margin: int
    num_classes: int
    bands: tuple[int, ...]
    normalizer: Normalizer
    nodata: float | None
    blend: Blend
    batch_size: int | None
    device: str
    precision: Precision
    workdir: WorkDir
    row_counts: bool = False  # blocks count each class per row (geodesic areas)
    mask: RegionMask | None = None
    compiled: bool = False
    valid_path: str | None = None  # the input's mask band, ingested (True where valid)
    feed: Feed | None = None  # the input, copied block by block ahead (None: read in place)

    @property
    def labeller(self) -> Labeller:
        """The part of the job that labels pixels (no paths)."""
        return Labeller(
            model=self.model, model_sha256=self.model_sha256, device=self.device,
            precision=self.precision, tiles=self.tiles, margin=self.margin,
            num_classes=self.num_classes, normalizer=self.normalizer, nodata=self.nodata,
            blend=self.blend, batch_size=self.batch_size, compiled=self.compiled,
            probabilities=self.probabilities_path is not None,
        )


@dataclass(frozen=True)
class BlockResult:
    """A block's labels written: its id, pixel count, per-label counts and label summaries.

    ``skipped``: the block was written as nodata without running the model (its core lies
    outside ``--mask`` or its read window is all nodata).
    """

    block_id: str
    pixels: int
    counts: dict[int, int]
    summaries: LabelSummaries
    skipped: bool = False


@dataclass(frozen=True)
class LabelSummaries:
    """What the run summary needs of a block's core labels (packed for the marker)."""

    shape: tuple[int, int]
    components: dict[int, int]
    edges: str
    row_classes: tuple[int, ...] = ()
    row_counts: str = ""

    @classmethod
    def of(cls, labels: np.ndarray, nodata: int, *, rows: bool) -> LabelSummaries:
        """Components and edge ids; per-class counts per row when ``rows``."""
        components, ids = block_components(labels, nodata)
        edges = pack_array(Edges.of(ids).concatenated())
        h, w = labels.shape
        if not rows:
            return cls((h, w), components, edges)
        classes, table = row_counts(labels, nodata)
        return cls((h, w), components, edges, classes, pack_array(table))


@dataclass(frozen=True)
class PreparedBlock:
    """A block's input, ready for the model: its normalized read window, or why it is skipped.

    ``x`` (bands, h, w) float32 and ``nodata_mask`` (h, w) of the read window; both None when
    the block is skipped (its core outside ``--mask``, or every pixel of its window nodata).
    ``inside``: the core's region mask, if any. ``start``: when the block's work began.
    """

    block: Block
    x: np.ndarray | None
    nodata_mask: np.ndarray | None
    inside: np.ndarray | None
    start: float


def prepare_block(job: SegmentJob, index: tuple[int, int]) -> PreparedBlock:
    """Read block ``index``'s window with halo (mirrored at the image's edges) and normalize it.

    No model: on one CPU, the in-process executor prepares the next block on a side thread while
    the model runs on this one (:mod:`segpipe.pipeline.executor`).
    """
    start = time.perf_counter()
    block = job.tiles.block_at(*index)
    inside = job.mask.inside(block.core) if job.mask is not None else None
    if inside is not None and not inside.any():
        return PreparedBlock(block, None, None, inside, start)
    with open_raster(job.image_path) as reader:
        bands = list(job.bands)
        pixels = read_mirrored(
            lambda w: reader.read(w)[bands], block.read, job.tiles.height, job.tiles.width
        )
    x, nodata_mask = job.normalizer.apply(pixels, job.nodata, _read_valid(job, block))
    if nodata_mask.all():
        return PreparedBlock(block, None, None, inside, start)
    return PreparedBlock(block, x, nodata_mask, inside, start)


def label_prepared(job: SegmentJob, prepared: PreparedBlock) -> Labelled | None:
    """The model's labels of a prepared block's core (None: skipped, the model is not run)."""
    if prepared.x is None or prepared.nodata_mask is None:
        return None
    labeller = job.labeller
    return labels_of(labeller, prepared.block, prepared.x, prepared.nodata_mask,
                     labeller.load(), prepared.inside)


def write_block(job: SegmentJob, block: Block, done: Labelled | None) -> BlockResult:
    """Write a labelled block's core to the label array (nodata when skipped); its summaries."""
    if done is None:
        return _skip(job, block)
    labels = done.labels
    rows, cols = block.core.slices
    open_array(job.labels_path)[rows, cols] = labels
    if job.probabilities_path is not None and done.probabilities is not None:
        open_array(job.probabilities_path)[:, rows, cols] = done.probabilities.astype(np.float16)
    summaries = LabelSummaries.of(labels, nodata_label(job.num_classes), rows=job.row_counts)
    return BlockResult(block.id, labels.size, _counts(labels), summaries)


def segment_block(job: SegmentJob, index: tuple[int, int]) -> BlockResult:
    """Segment block ``index`` of ``job.tiles`` and write its core to the label array."""
    prepared = prepare_block(job, index)
    return write_block(job, prepared.block, label_prepared(job, prepared))


def label_block(
    labeller: Labeller, block: Block, pixels: np.ndarray, model: LoadedModel,
    valid: np.ndarray | None = None, inside: np.ndarray | None = None,
) -> Labelled | None:
    """The labels of ``block``'s core from its mirrored read window ``pixels`` (bands, h, w).

    Normalize, run the model per tile, stitch, set nodata where every band is nodata (or
    ``valid`` is False, or outside ``inside``, the core's region mask). None when every pixel of
    the read window is nodata: the model is not run.
    """
    x, nodata_mask = labeller.normalizer.apply(pixels, labeller.nodata, valid)
    if nodata_mask.all():
        return None
    return labels_of(labeller, block, x, nodata_mask, model, inside)


def labels_of(
    labeller: Labeller, block: Block, x: np.ndarray, nodata_mask: np.ndarray,
    model: LoadedModel, inside: np.ndarray | None = None,
) -> Labelled:
    """Run the model per tile on normalized ``x``, stitch, set nodata (see :func:`label_block`)."""
    stitched = _run_tiles(labeller, block, x, model)
    core = block.core.relative_to(block.read).slices
    labels = stitched.labels.astype(label_dtype(labeller.num_classes))
    missing = nodata_mask[core] if inside is None else nodata_mask[core] | ~inside
    labels[missing] = nodata_label(labeller.num_classes)
    probs = stitched.probabilities if labeller.probabilities else None
    if probs is not None:
        probs[:, missing] = 0
    return Labelled(labels, missing, probs)


def _read_valid(job: SegmentJob, block: Block) -> np.ndarray | None:
    """The block's read window of the ingested mask band, mirrored like the pixels; or None."""
    if job.valid_path is None:
        return None
    valid = open_array(job.valid_path, mode="r")
    return read_mirrored(
        lambda w: np.asarray(valid[w.slices])[None], block.read, job.tiles.height,
        job.tiles.width,
    )[0]


def _skip(job: SegmentJob, block: Block) -> BlockResult:
    """Write ``block``'s core as nodata without running the model."""
    write_nodata(job, block.index)
    nodata = nodata_label(job.num_classes)
    labels = np.full((block.core.height, block.core.width), nodata, label_dtype(job.num_classes))
    summaries = LabelSummaries.of(labels, nodata, rows=job.row_counts)
    return BlockResult(block.id, labels.size, {nodata: labels.size}, summaries, skipped=True)


def _counts(labels: np.ndarray) -> dict[int, int]:
    counts = np.bincount(labels.ravel())
    return {int(i): int(c) for i, c in enumerate(counts) if c}


def _run_tiles(
    labeller: Labeller, block: Block, x: np.ndarray, model: LoadedModel
) -> Stitched:
    merger = Merger(
        block.core, blend=labeller.blend, margin=labeller.margin,
        probabilities=labeller.probabilities,
    )
    size = labeller.tiles.input_size
    runner = runner_for(model, labeller.batch_size, labeller.precision, (x.shape[0], size, size))
    pinned = model.device.type == "cuda"
    with Prefetcher(x, block.read, block.tiles, runner.batch_size, pinned=pinned) as batches:
        for batch in batches:
            logits = runner.run(batch.values)
            batches.release(batch)
            if not all_finite(logits):
                raise ModelError(
                    f"the model returned NaN or infinite logits in block {block.id}; its pixels "
                    "are left as nodata (labels are never made from non-finite logits)"
                )
            for t, out in zip(batch.tiles, logits):
                merger.add(t, out)
    return merger.finalize()


def segment_and_record(
    job: SegmentJob, index: tuple[int, int], run_id: str, worker: str = "local"
) -> BlockRecord:
    """Segment one block, then mark it done (the body of every block task, on any executor)."""
    start = time.perf_counter()
    return record_block(job, index, segment_block(job, index), start, run_id, worker)


def record_block(
    job: SegmentJob, index: tuple[int, int], result: BlockResult, start: float, run_id: str,
    worker: str = "local",
) -> BlockRecord:
    """Flush a written block's chunks, then write its marker: the block is done."""
    s = result.summaries
    record = BlockRecord(
        block_id=result.block_id, pixels=result.pixels, counts=result.counts,
        seconds=time.perf_counter() - start, worker=worker, pid=os.getpid(), run_id=run_id,
        shape=s.shape, components=s.components, edges=s.edges, row_classes=s.row_classes,
        row_counts=s.row_counts, skipped=result.skipped,
    )
    sync_block(job, index)  # its chunks on the disk before the marker that vouches for them
    job.workdir.mark_done(record)
    return record


def finish_block(
    job: SegmentJob, prepared: PreparedBlock, done: Labelled | None, run_id: str,
    worker: str = "local",
) -> BlockRecord:
    """Write a labelled block and mark it done (:func:`segment_and_record` in steps)."""
    result = write_block(job, prepared.block, done)
    return record_block(job, prepared.block.index, result, prepared.start, run_id, worker)


def sync_block(job: SegmentJob, index: tuple[int, int]) -> None:
    """Flush the chunks block ``index`` wrote (labels, probabilities) to a local disk."""
    rows, cols = job.tiles.block_core(*index).slices
    sync_region(job.labels_path, (rows, cols))
    if job.probabilities_path:
        sync_region(job.probabilities_path, (slice(None), rows, cols))


def write_nodata(job: SegmentJob, index: tuple[int, int]) -> None:
    """Fill the core of a failed block with the nodata label (and zero probabilities)."""
    rows, cols = job.tiles.block_core(*index).slices
    open_array(job.labels_path)[rows, cols] = nodata_label(job.num_classes)
    if job.probabilities_path:
        open_array(job.probabilities_path)[:, rows, cols] = 0
