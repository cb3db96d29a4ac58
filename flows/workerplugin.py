"""The Dask worker plugins of segpipe's clusters.

Torch's thread pool (and CUDA device) per worker; Ctrl-C left to the driver on the workers of
its own LocalCluster.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from distributed.diagnostics.plugin import WorkerPlugin

from segpipe.flows.cluster import available_cores

__all__ = ["DriverStops", "TorchThreads"]


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


class DriverStops(WorkerPlugin):
    """Workers of the driver's own LocalCluster ignore SIGINT: the driver stops them.

    Ctrl-C reaches the whole foreground process group. A worker process that took it would
    unwind on its own (asyncio cancels its main task) and print a traceback on the run's stderr
    while the driver is still closing the cluster; the driver already stops its workers on an
    interrupt (the cluster's close, else the interrupt watchdog kills them). Not for workers
    started with ``dask worker``: their own Ctrl-C is their user's.
    """

    idempotent = True

    def setup(self, worker) -> None:
        """Ignore SIGINT in the worker process (its event loop runs on the main thread)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
