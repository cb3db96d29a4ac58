"""The Dask worker plugin that sizes torch's thread pool (and CUDA device) on each worker."""

from __future__ import annotations

import contextlib

from distributed.diagnostics.plugin import WorkerPlugin

from segpipe.flows.cluster import available_cores

__all__ = ["TorchThreads"]


class TorchThreads(WorkerPlugin):
    """Sizes torch's thread pool on each worker so workers × threads ≈ the host's cores.

    ``threads_on_host`` maps a host to the Dask threads of all workers on it (known to the
    client from the scheduler); a worker that joins later divides by its own thread count.
    ``gpu_by_name`` pins LocalCluster workers (named 0, 1, ...) to one CUDA device each.
    """

    idempotent = False

    def __init__(
        self, threads: int | None = None, threads_on_host: dict[str, int] | None = None,
        gpu_by_name: bool = False,
    ) -> None:
        self.threads = threads
        self.threads_on_host = threads_on_host or {}
        self.gpu_by_name = gpu_by_name

    def setup(self, worker) -> None:
        """Set the worker's torch threads (and CUDA device)."""
        import torch

        threads = self.threads
        if threads is None:
            from distributed.comm import get_address_host

            host = get_address_host(worker.address)  # as the scheduler names hosts
            busy = self.threads_on_host.get(host, worker.state.nthreads)
            threads = max(1, available_cores() // max(1, busy))
        torch.set_num_threads(threads)
        if self.gpu_by_name and torch.cuda.is_available():
            with contextlib.suppress(TypeError, ValueError):
                torch.cuda.set_device(int(worker.name) % torch.cuda.device_count())
