"""The default block executor: a small input in this process, larger ones on Dask.

A Dask cluster costs seconds to start (worker processes import torch and load the model again),
more than it saves on an input of a few megapixels: such an input (a nightly batch of small
scans, say) is segmented in this process with the model the plan already loaded, torch using
every core. A larger input starts the run's cluster on first use and runs there. Both run the
same block function, so the labels are the same bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

from segpipe.flows.cluster import Cluster, DaskExecutor
from segpipe.pipeline.executor import BlockSink, InProcessExecutor
from segpipe.pipeline.segment import SegmentJob

__all__ = ["IN_PROCESS_MAX_PIXELS", "AutoExecutor"]

#: Inputs with at most this many pixels left to segment run in this process.
IN_PROCESS_MAX_PIXELS = 2048 * 2048


class AutoExecutor:
    """In this process for at most :data:`IN_PROCESS_MAX_PIXELS` pixels to segment, else Dask."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.local = InProcessExecutor()

    def run(
        self, job: SegmentJob, blocks: Sequence[tuple[int, int]], run_id: str, sink: BlockSink
    ) -> None:
        """Segment ``blocks`` here or on the cluster, by their pixels."""
        pixels = sum(job.tiles.block_core(*b).size for b in blocks)
        if pixels <= IN_PROCESS_MAX_PIXELS:
            self.local.run(job, blocks, run_id, sink)
        else:
            DaskExecutor(self.cluster).run(job, blocks, run_id, sink)
