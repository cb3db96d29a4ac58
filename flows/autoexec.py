"""The default block executor: a one-block input in this process, larger ones on Dask.

A Dask cluster costs seconds to start (worker processes import torch and load the model again)
and gives nothing to an input of one block, which one worker would run alone: such an input
(a nightly batch of small scans, say) is segmented in this process with the model the plan
already loaded. An input of several blocks starts the run's cluster on first use and runs there.
Both run the same block function, so the labels are the same bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

from segpipe.flows.cluster import Cluster, DaskExecutor
from segpipe.pipeline.executor import BlockSink, InProcessExecutor
from segpipe.pipeline.segment import SegmentJob

__all__ = ["IN_PROCESS_MAX_BLOCKS", "AutoExecutor"]

#: Inputs of at most this many blocks to segment run in this process.
IN_PROCESS_MAX_BLOCKS = 1


class AutoExecutor:
    """In this process for inputs of :data:`IN_PROCESS_MAX_BLOCKS` blocks or fewer, else Dask."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.local = InProcessExecutor()

    def run(
        self, job: SegmentJob, blocks: Sequence[tuple[int, int]], run_id: str, sink: BlockSink
    ) -> None:
        """Segment ``blocks`` here or on the cluster, by their number."""
        if len(blocks) <= IN_PROCESS_MAX_BLOCKS:
            self.local.run(job, blocks, run_id, sink)
        else:
            DaskExecutor(self.cluster).run(job, blocks, run_id, sink)
