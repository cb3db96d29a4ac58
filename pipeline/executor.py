"""Block executors: where the blocks of the segment stage run.

An executor takes a :class:`~segpipe.pipeline.segment.SegmentJob`, the indices of the blocks to
segment and a :class:`BlockSink`, runs :func:`~segpipe.pipeline.segment.segment_and_record` for
each block somewhere, and reports every block to the sink as it finishes or fails (after its
retries). Two implementations exist: :class:`InProcessExecutor` here (``--workers 0``, the
tests' reference path) and ``segpipe.flows.cluster.DaskExecutor`` (a LocalCluster or an existing
scheduler). Both run the same block function, so their labels are byte-identical.

On a GPU the model is not what limits the stage: reading, normalizing, stitching, counting and
writing a block cost far more host time than its forward pass. So a GPU's blocks run on
several host threads (:func:`host_threads`) that share the one model on the device; each
block still runs the same function, and the GPU serializes their forward passes. On the CPU
the blocks run one after another and torch takes the cores.

The contract is per block, not per stage: an executor never sees the image, only block indices.
That is what lets a later executor overlap the stages (submit a block as soon as its read window
is ingested, export rows as soon as their blocks are done) without changing the stage sequence
or the resume contract (a block counts as done only once its marker exists).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Protocol

from segpipe.pipeline.segment import SegmentJob, segment_and_record
from segpipe.pipeline.workdir import BlockRecord

__all__ = [
    "BlockExecutor", "BlockSink", "InProcessExecutor", "available_cores", "gpu_host_threads",
    "host_threads", "new_run_id",
]

#: Host threads that feed one GPU (each runs whole blocks; the GPU runs their batches in turn).
HOST_THREADS_PER_GPU = 4
#: How often a waiting executor reports that nothing finished (``BlockSink.idle``).
POLL_SECONDS = 0.02


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gpu_host_threads(cores: int, gpus: int = 1) -> int:
    """Host threads per GPU: its share of ``cores``, at most :data:`HOST_THREADS_PER_GPU`."""
    return max(1, min(HOST_THREADS_PER_GPU, cores // max(1, gpus)))


def host_threads(device: str) -> int:
    """Host threads for the blocks of this process on ``device``: a GPU's share, 1 on the CPU."""
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return gpu_host_threads(available_cores()) if cuda else 1


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

    ``threads`` None: :func:`host_threads` of the job's device.
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
