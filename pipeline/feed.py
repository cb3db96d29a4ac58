"""The input fed to the blocks just ahead of their segmentation: one pass over the pixels.

A run used to copy the whole input into the work directory's Zarr (the ingest stage), then read
the copy again for its statistics, then segment. Now the copy is made block by block, by the
workers, just ahead of the blocks that need it, overlapping the segmentation: block ``(i, j)``'s
*feed task* reads the input at the planned level under its core (one read of every pixel),
writes the core's chunks of ``image.zarr`` (and of ``valid.zarr`` where the input has a mask
band), keeps the quicklook's decimation of it (level 0 only) and then writes its *ingest marker*.
A block is segmented once the feed tasks of every block its read window touches (its own and
its neighbours', for the halo) are done (:func:`needs`). Statistics come from the windows the
plan samples, read from the input before any block runs (``stages.stats_stage``).

Resume: a feed task whose marker exists is skipped; the marker is written only after the
chunks it vouches for are on the disk, as a block's ``done`` marker is. Blocks write whole
chunks only (a block's core is whole tiles, the chunk size), so parallel feed tasks never share
a chunk.

Each thread that feeds blocks opens the input once and keeps it (:func:`_thread_reader`), so a
run opens its input once per feeding thread, not once per block; with the run's reader options
(:attr:`Feed.reader`: a STAC item's stacked bands and resampling), as every other open of it.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np

from segpipe.pipeline import storage
from segpipe.pipeline.io.base import Reader, file_signature, open_raster
from segpipe.pipeline.io.durable import sync_region
from segpipe.pipeline.io.gdal import streaming_env
from segpipe.pipeline.io.preview import Preview
from segpipe.pipeline.io.readeroptions import ReaderOptions
from segpipe.pipeline.io.zarrstore import open_array
from segpipe.pipeline.tiling import TilePlan, Window, mirror_indices
from segpipe.pipeline.workdir import block_index

__all__ = [
    "Feed", "assemble_preview", "close_thread_reader", "fed_blocks", "fed_in_order", "feed_block",
    "is_fed", "needs", "wavefront",
]

FED_DIR = "fed"


@dataclass(frozen=True)
class Feed:
    """Where the blocks' pixels come from and where their copy goes (small, picklable).

    ``preview_step``: keep every ``preview_step``-th pixel of each core for the quicklook
    (0: keep none, the planned level is not level 0). ``reader``: the options the input is
    opened with (the plan's: the pixels must be those planned and sampled for statistics).
    """

    source: str
    level: int
    image_path: str
    workdir: str
    valid_path: str | None = None
    preview_step: int = 0
    reader: ReaderOptions = field(default_factory=ReaderOptions)

    @property
    def markers(self) -> str:
        """The folder (or object prefix) of the ingest markers."""
        return storage.join(self.workdir, FED_DIR)

    def marker(self, index: tuple[int, int]) -> str:
        """The ingest marker of block ``index``."""
        return storage.join(self.markers, f"{index[0]}_{index[1]}")

    def preview_part(self, index: tuple[int, int]) -> str:
        """Where block ``index`` keeps its decimated pixels for the quicklook."""
        return storage.join(self.markers, f"{index[0]}_{index[1]}.preview.npy")


def needs(tiles: TilePlan, index: tuple[int, int]) -> list[tuple[int, int]]:
    """The blocks whose cores block ``index`` reads (itself and neighbours), in raster order.

    That is every block whose core meets the bounding box of the pixels the block's
    mirror-extended read window takes (:func:`~segpipe.pipeline.tiling.read_mirrored`).
    """
    read = tiles.block_at(*index).read
    rows = mirror_indices(read.row, read.row_stop, tiles.height)
    cols = mirror_indices(read.col, read.col_stop, tiles.width)
    side = tiles.block * tiles.tile
    r0, r1 = int(rows.min()) // side, int(rows.max()) // side
    c0, c1 = int(cols.min()) // side, int(cols.max()) // side
    return [(i, j) for i in range(r0, r1 + 1) for j in range(c0, c1 + 1)]


def wavefront(
    tiles: TilePlan, blocks: Iterable[tuple[int, int]], fed: set[tuple[int, int]]
) -> Iterator[tuple[list[tuple[int, int]], tuple[int, int]]]:
    """For each block to segment, in order: the feed tasks to start first, then the block.

    A feed task appears once, just before the first block that needs it; blocks in ``fed``
    (already ingested, e.g. on resume) never appear.
    """
    started = set(fed)
    for index in blocks:
        new = [n for n in needs(tiles, index) if n not in started]
        started.update(new)
        yield new, index


def is_fed(feed: Feed, index: tuple[int, int]) -> bool:
    """Whether block ``index``'s copy is complete (its marker exists)."""
    return storage.exists(feed.marker(index))


def fed_blocks(feed: Feed) -> set[tuple[int, int]]:
    """The blocks whose copy is complete (their markers' names are listed; nothing is read)."""
    found = (block_index(name) for name in storage.list_names(feed.markers))
    return {index for index in found if index is not None}


def feed_block(feed: Feed, tiles: TilePlan, index: tuple[int, int]) -> None:
    """Copy block ``index``'s core from the input into the work directory (once)."""
    if is_fed(feed, index):
        return
    core = tiles.block_core(*index)
    reader = _thread_reader(feed.source, feed.level, feed.reader)
    pixels = reader.read(core)
    rows, cols = core.slices
    image = open_array(feed.image_path).with_config({"write_empty_chunks": True})
    image[:, rows, cols] = pixels
    sync_region(feed.image_path, (slice(None), rows, cols))
    if feed.valid_path is not None:
        _copy_mask(feed, reader, core)
    if feed.preview_step:
        _keep_preview(feed, index, core, pixels)
    storage.write_once(feed.marker(index), "fed")


def _copy_mask(feed: Feed, reader: Reader, core: Window) -> None:
    from segpipe.models.foundation import RasterError

    assert feed.valid_path is not None
    mask = reader.read_mask(core)
    if mask is None:
        raise RasterError(f"{feed.source} has no mask band to copy")
    rows, cols = core.slices
    open_array(feed.valid_path)[rows, cols] = mask
    sync_region(feed.valid_path, (rows, cols))


def _keep_preview(feed: Feed, index: tuple[int, int], core: Window, pixels: np.ndarray) -> None:
    """Store the core's samples on the quicklook's grid (every ``step``-th pixel)."""
    step = feed.preview_step
    r0, c0 = -(-core.row // step), -(-core.col // step)
    sampled = np.ascontiguousarray(
        pixels[:, r0 * step - core.row::step, c0 * step - core.col::step]
    )
    buffer = io.BytesIO()
    np.save(buffer, sampled, allow_pickle=False)
    with storage.publish(feed.preview_part(index)) as partial:
        partial.write_bytes(buffer.getvalue())


def assemble_preview(
    feed: Feed, tiles: TilePlan, bands: int, dtype: str, max_side: int
) -> Preview | None:
    """The quicklook's decimation of level 0 from the blocks' kept samples (None if any lacks)."""
    if not feed.preview_step:
        return None
    preview = Preview.empty(bands, tiles.height, tiles.width, dtype, max_side)
    if preview.step != feed.preview_step:
        return None
    for index in tiles.block_indices():
        try:
            data = storage.read_bytes(feed.preview_part(index))
        except (FileNotFoundError, OSError):
            return None  # a block fed by an earlier attempt of another version: no preview
        sampled = np.load(io.BytesIO(data), allow_pickle=False)
        core = tiles.block_core(*index)
        r0, c0 = -(-core.row // preview.step), -(-core.col // preview.step)
        preview.pixels[:, r0:r0 + sampled.shape[1], c0:c0 + sampled.shape[2]] = sampled
    return preview


# ------------------------------------------------------------------ one reader per thread

_LOCAL = threading.local()


def _thread_reader(source: str, level: int, options: ReaderOptions) -> Reader:
    """The open reader of ``source`` at ``level`` kept by the calling thread (opened once).

    Readers are not shared across threads. A thread keeps one input open: a new source closes
    the previous one (a worker moves to the next input of a batch), and so do new reader
    options and a new version of the same file (``serve`` segments a path again when it is
    replaced).
    """
    key = (source, level, options, file_signature(source))
    held = getattr(_LOCAL, "reader", None)
    if held is not None and held[0] == key:
        return held[1]
    close_thread_reader()
    env = streaming_env()
    env.__enter__()
    try:
        reader = open_raster(source, level=level, options=options)
    except BaseException:
        env.__exit__(None, None, None)
        raise
    _LOCAL.reader = (key, reader, env)
    return reader


def close_thread_reader() -> None:
    """Close this thread's kept reader, if any."""
    held = getattr(_LOCAL, "reader", None)
    if held is None:
        return
    _LOCAL.reader = None
    try:
        held[1].close()
    finally:
        held[2].__exit__(None, None, None)


# ------------------------------------------------------------------ feeding ahead, in process


def fed_in_order(
    feed: Feed, tiles: TilePlan, blocks: Iterable[tuple[int, int]], pool: Executor,
    ahead: int,
) -> Iterator[tuple[tuple[int, int], BaseException | None]]:
    """Yield each block once the feed tasks it needs are done, with the first of their errors.

    Feed tasks run on ``pool`` (in the order blocks need them), started for up to ``ahead``
    blocks beyond the one yielded, so the copy runs ahead of the segmentation and overlaps it.
    """
    order = list(wavefront(tiles, blocks, fed_blocks(feed)))
    futures: dict[tuple[int, int], Future[None]] = {}
    started = 0
    for k, (_, index) in enumerate(order):
        while started < min(len(order), k + 1 + ahead):
            for n in order[started][0]:
                futures[n] = pool.submit(feed_block, feed, tiles, n)
            started += 1
        errors = [futures[n].exception() for n in needs(tiles, index) if n in futures]
        yield index, next((e for e in errors if e is not None), None)
