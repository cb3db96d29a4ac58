"""Block executors: where the blocks of the segment stage run.

An executor takes a :class:`~segpipe.pipeline.segment.SegmentJob`, the indices of the blocks to
segment and a :class:`BlockSink`, runs :func:`~segpipe.pipeline.segment.segment_and_record` for
each block somewhere, and reports every block to the sink as it finishes or fails (after its
retries). Two implementations exist: :class:`InProcessExecutor` here (``--workers 0``, the
tests' reference path) and ``segpipe.flows.cluster.DaskExecutor`` (a LocalCluster or an existing
scheduler). Both run the same block function, so their labels are byte-identical.

In-process, a GPU's blocks run on several host threads that share the one model on the device
(:mod:`segpipe.pipeline.hostthreads` says how many); each block still runs the same function.
On the CPU the blocks run one after another and torch takes the cores.

The contract is per block, not per stage: an executor never sees the image, only block indices.
That is what lets a later executor overlap the stages (submit a block as soon as its read window
is ingested, export rows as soon as their blocks are done) without changing the stage sequence
or the resume contract (a block counts as done only once its marker exists).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol

from segpipe.pipeline.feed import close_thread_reader, fed_in_order
from segpipe.pipeline.hostthreads import host_threads
from segpipe.pipeline.segment import (
    PreparedBlock,
    SegmentJob,
    finish_block,
    label_prepared,
    prepare_block,
    segment_and_record,
)
from segpipe.pipeline.workdir import BlockRecord

__all__ = ["BlockExecutor", "BlockSink", "InProcessExecutor", "new_run_id"]

#: How often a waiting executor reports that nothing finished (``BlockSink.idle``).
POLL_SECONDS = 0.02


def new_run_id() -> str:
    """A fresh id for one attempt at a run (block markers and task keys say which)."""
    return uuid.uuid4().hex[:12]


class BlockSink(Protocol):
    """Receives each block's fate, in the order blocks finish."""

    def done(self, record: BlockRecord) -> None:
        """The block's chunks and marker are written."""

    def failed(self, index: tuple[int, int], message: str) -> None:
        """The block failed after its retries."""

    def idle(self) -> None:
        """Nothing finished since the last call (called every few ms; for stall reports)."""


class BlockExecutor(Protocol):
    """Runs block tasks and reports them to a sink."""

    def run(
        self, job: SegmentJob, blocks: Sequence[tuple[int, int]], run_id: str, sink: BlockSink
    ) -> None:
        """Segment ``blocks`` of ``job``; returns when every block was reported to ``sink``."""


class InProcessExecutor:
    """Segments the blocks in this process: in turn, or on host threads for a GPU (no retries).

    ``threads`` None: ``host_threads`` of the job's device (:mod:`~segpipe.pipeline.hostthreads`).
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def run(
        self, job: SegmentJob, blocks: Sequence[tuple[int, int]], run_id: str, sink: BlockSink
    ) -> None:
        """Segment ``blocks``; a failing block is reported and the others go on.

        With a :class:`~segpipe.pipeline.feed.Feed`, one more thread copies the input block by
        block just ahead of the blocks (a block whose copy failed is reported failed).
        """
        threads = self.threads or host_threads(job.device)
        feeder = ThreadPoolExecutor(1, thread_name_prefix="segpipe-feed")
        try:
            _run_fed(job, blocks, run_id, sink, feeder, threads)
        except BaseException:  # Ctrl-C: copies not started are dropped
            feeder.shutdown(wait=False, cancel_futures=True)
            raise
        feeder.submit(close_thread_reader)
        feeder.shutdown(wait=True)


def _run_fed(
    job: SegmentJob, blocks: Sequence[tuple[int, int]], run_id: str, sink: BlockSink,
    feeder: ThreadPoolExecutor, threads: int,
) -> None:
    """Segment each block once its input is copied: in turn, or on ``threads`` host threads."""
    ready = _ready_blocks(job, blocks, feeder, threads)
    if threads <= 1:
        _run_overlapped(job, ready, run_id, sink)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="segpipe-block") as pool:
        try:
            _run_threaded(pool, threads, job, ready, run_id, sink)
        except BaseException:  # Ctrl-C: blocks not started are dropped
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_overlapped(
    job: SegmentJob, ready: Iterator[tuple[tuple[int, int], BaseException | None]], run_id: str,
    sink: BlockSink,
) -> None:
    """The blocks in turn on the model, their other work on a side thread beside it.

    Each block's input is read and normalized, and its labels written, on the side thread while
    the model runs on the blocks next to it (on this thread). On a CPU the model's forward takes
    every core but leaves gaps (between layers and batches); the rest of a block's work
    (reading, normalizing, writing its labels, its summaries, its marker) is single-threaded
    NumPy, Zarr and file I/O that fills them. Each block is still
    :func:`~segpipe.pipeline.segment.segment_and_record` in steps, so the labels and markers are
    the same; blocks are reported in order, each once its marker exists.
    """
    side = ThreadPoolExecutor(1, thread_name_prefix="segpipe-side")
    try:
        _overlap(job, ready, run_id, sink, side)
    except BaseException:  # Ctrl-C: what was not started is dropped
        side.shutdown(wait=False, cancel_futures=True)
        raise
    side.shutdown(wait=True)


def _overlap(
    job: SegmentJob, ready: Iterator[tuple[tuple[int, int], BaseException | None]], run_id: str,
    sink: BlockSink, side: ThreadPoolExecutor,
) -> None:
    """:func:`_run_overlapped`'s loop: prepare one block ahead, write one block behind."""

    def prepare(item: tuple[tuple[int, int], BaseException | None] | None) -> _Ahead | None:
        if item is None:
            return None
        index, error = item
        return index, side.submit(_prepare_fed, job, index, error)

    ahead = prepare(next(ready, None))
    behind: deque[tuple[tuple[int, int], Future[BlockRecord]]] = deque()
    while ahead is not None:
        index, prepared = ahead
        ahead = prepare(next(ready, None))  # read and normalized while the model runs below
        try:
            block = prepared.result()
            labelled = label_prepared(job, block)
        except Exception as exc:
            sink.failed(index, f"{type(exc).__name__}: {exc}")
            continue
        behind.append((index, side.submit(finish_block, job, block, labelled, run_id)))
        while behind and (behind[0][1].done() or len(behind) > 1):
            done_index, future = behind.popleft()
            _report(sink, done_index, future.result)
    for done_index, future in behind:
        _report(sink, done_index, future.result)


_Ahead = tuple[tuple[int, int], "Future[PreparedBlock]"]


def _prepare_fed(
    job: SegmentJob, index: tuple[int, int], error: BaseException | None
) -> PreparedBlock:
    """Prepare a block whose input is copied; raise the copy's error instead when it failed."""
    if error is not None:
        raise error
    return prepare_block(job, index)


def _ready_blocks(
    job: SegmentJob, blocks: Sequence[tuple[int, int]], feeder: ThreadPoolExecutor, threads: int
) -> Iterator[tuple[tuple[int, int], BaseException | None]]:
    """The blocks in order, each once its input is copied (or with the copy's error)."""
    if job.feed is None:
        return ((index, None) for index in blocks)
    ahead = job.tiles.block_grid[1] + 2 * threads  # a block row ahead keeps the feeder busy
    return fed_in_order(job.feed, job.tiles, blocks, feeder, ahead)


def _after_feed(
    job: SegmentJob, index: tuple[int, int], run_id: str, error: BaseException | None
) -> BlockRecord:
    """Segment a block whose input is copied; raise the copy's error instead when it failed."""
    if error is not None:
        raise error
    return segment_and_record(job, index, run_id)


def _run_threaded(
    pool: ThreadPoolExecutor, threads: int, job: SegmentJob,
    ready: Iterator[tuple[tuple[int, int], BaseException | None]], run_id: str, sink: BlockSink,
) -> None:
    """At most ``2 × threads`` blocks queued at once; each reported as it finishes."""
    pending: dict[Future[BlockRecord], tuple[int, int]] = {}

    def fill() -> None:
        for index, error in ready:
            pending[pool.submit(_after_feed, job, index, run_id, error)] = index
            if len(pending) >= 2 * threads:
                return

    fill()
    while pending:
        done, _ = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        if not done:
            sink.idle()
            continue
        for future in done:
            _report(sink, pending.pop(future), future.result)
        fill()


def _report(sink: BlockSink, index: tuple[int, int], result: Callable[[], BlockRecord]) -> None:
    """``result()`` to ``sink.done``, or its error to ``sink.failed``."""
    try:
        record = result()
    except Exception as exc:
        sink.failed(index, f"{type(exc).__name__}: {exc}")
    else:
        sink.done(record)
