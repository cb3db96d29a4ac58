"""Block executors: where the blocks of the segment stage run.

An executor takes a :class:`~segpipe.pipeline.segment.SegmentJob`, the indices of the blocks to
segment and a :class:`BlockSink`, runs :func:`~segpipe.pipeline.segment.segment_and_record` for
each block somewhere, and reports every block to the sink as it finishes or fails (after its
retries). Two implementations exist: :class:`InProcessExecutor` here (``--workers 0``, the
tests' reference path) and ``segpipe.flows.cluster.DaskExecutor`` (a LocalCluster or an existing
scheduler). Both run the same block function, so their labels are byte-identical.

The contract is per block, not per stage: an executor never sees the image, only block indices.
That is what lets a later executor overlap the stages (submit a block as soon as its read window
is ingested, export rows as soon as their blocks are done) without changing the stage sequence
or the resume contract (a block counts as done only once its marker exists).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from segpipe.pipeline.segment import SegmentJob, segment_and_record
from segpipe.pipeline.workdir import BlockRecord

__all__ = ["BlockExecutor", "BlockSink", "InProcessExecutor", "new_run_id"]


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
    """Segments the blocks one after another in this process (no Dask, no retries)."""

    def run(
        self, job: SegmentJob, blocks: Sequence[tuple[int, int]], run_id: str, sink: BlockSink
    ) -> None:
        """Segment ``blocks`` in order; a failing block is reported and the next one runs."""
        for index in blocks:
            try:
                record = segment_and_record(job, index, run_id)
            except Exception as exc:
                sink.failed(index, f"{type(exc).__name__}: {exc}")
            else:
                sink.done(record)
