"""The default block executor: a small input in this process, larger ones on Dask.

A Dask cluster costs seconds to start (worker processes import torch and load the model again),
more than it saves on an input of a few megapixels: such an input (a nightly batch of small
scans, say) is segmented in this process with the model the plan already loaded, torch using
every core. So is every input on a machine of two cores or fewer and no GPU, where worker
processes would only split the same two cores after their start-up (measured: the cluster cost
more CPU than it saved on a 3072² input; BENCHMARKS.md). A larger input elsewhere starts the
run's cluster on first use and runs there. Both run the same block function, so the labels are
the same (bit for bit where the torch thread count is the same: see the README's exactness
contract).
"""

from __future__ import annotations

from collections.abc import Sequence

from segpipe.flows.cluster import Cluster, DaskExecutor, available_cores, gpu_count
from segpipe.pipeline.executor import BlockSink, InProcessExecutor
from segpipe.pipeline.segment import SegmentJob

__all__ = ["IN_PROCESS_MAX_PIXELS", "AutoExecutor"]

#: Inputs with at most this many pixels left to segment run in this process.
IN_PROCESS_MAX_PIXELS = 2048 * 2048
#: Machines with at most this many cores (and no GPU) run every input in this process.
IN_PROCESS_MAX_CORES = 2


class AutoExecutor:
    """In this process for small inputs or small CPU-only machines, else on Dask."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.local = InProcessExecutor()

    def run(
        self, job: SegmentJob, blocks: Sequence[tuple[int, int]], run_id: str, sink: BlockSink
    ) -> None:
        """Segment ``blocks`` here or on the cluster, by their pixels."""
        if self.in_process(sum(job.tiles.block_core(*b).size for b in blocks)):
            self.local.run(job, blocks, run_id, sink)
        else:
            DaskExecutor(self.cluster).run(job, blocks, run_id, sink)

    @staticmethod
    def in_process(pixels: int) -> bool:
        """Whether ``pixels`` to segment run here: few of them, or a small CPU-only machine."""
        if pixels <= IN_PROCESS_MAX_PIXELS:
            return True
        return available_cores() <= IN_PROCESS_MAX_CORES and gpu_count() == 0
