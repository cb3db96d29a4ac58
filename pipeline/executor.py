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
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Protocol

from segpipe.pipeline.hostthreads import host_threads
from segpipe.pipeline.segment import SegmentJob, segment_and_record
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
        """Segment ``blocks``; a failing block is reported and the others go on."""
        threads = self.threads or host_threads(job.device)
        if threads <= 1:
            for index in blocks:
                _report(sink, index, partial(segment_and_record, job, index, run_id))
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="segpipe-block") as pool:
            try:
                _run_threaded(pool, threads, job, blocks, run_id, sink)
            except BaseException:  # Ctrl-C: blocks not started are dropped
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def _run_threaded(
    pool: ThreadPoolExecutor, threads: int, job: SegmentJob,
    blocks: Sequence[tuple[int, int]], run_id: str, sink: BlockSink,
) -> None:
    """At most ``2 × threads`` blocks queued at once; each reported as it finishes."""
    todo = iter(blocks)
    pending: dict[Future[BlockRecord], tuple[int, int]] = {}

    def fill() -> None:
        for index in todo:
            pending[pool.submit(segment_and_record, job, index, run_id)] = index
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
