"""The Dask side of a run: which cluster, how its workers are set up, and the block tasks.

By default a :class:`~distributed.LocalCluster` of worker processes is started for the run:
one worker per GPU (each with a ``GPU`` resource and its own device) when there are GPUs, else
``min(cores, 4)`` workers with one Dask thread each, and the cores shared out as torch threads
so the machine is not oversubscribed. ``--scheduler tcp://host:port`` joins an existing cluster
instead (dask-jobqueue, Kubernetes, dask-cuda, ``dask scheduler`` + ``dask worker``); its
workers get the same torch-thread sizing per host. Workers must see the work directory and the
model file at the same paths as the client: a shared filesystem, or URLs on an object store.

:class:`DaskExecutor` is the Dask implementation of the block executor
(:mod:`segpipe.pipeline.executor`): it holds the live :class:`Cluster` (never rebuilt from its
address), submits one task per block and reports each block as it finishes. Block tasks carry a
:class:`~segpipe.pipeline.segment.SegmentJob` and a block index, never arrays; each worker loads
the model once and keeps it (:func:`segpipe.models.loading.load_model_cached`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING

from segpipe.flows.security import TlsFiles, is_tls, warn_if_exposed
from segpipe.models.foundation import InputError
from segpipe.pipeline.executor import POLL_SECONDS, BlockSink
from segpipe.pipeline.feed import fed_blocks, feed_block, needs, wavefront
from segpipe.pipeline.hostthreads import available_cores, gpu_host_threads
from segpipe.pipeline.segment import SegmentJob, segment_and_record
from segpipe.pipeline.workdir import BlockRecord

if TYPE_CHECKING:  # Dask's distributed is imported when a cluster starts (~0.3 s)
    from distributed import Client, Future, LocalCluster
    from distributed.security import Security

log = logging.getLogger("segpipe")

MAX_DEFAULT_WORKERS = 4
RETRIES = 2
CLOSE_SECONDS = 20  # a local cluster's close; its workers are killed after an interrupt


def gpu_count() -> int:
    """CUDA devices visible to this process."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class ClusterSpec:
    """Where blocks run: an existing scheduler, or a local cluster of ``workers`` processes.

    ``workers=None`` sizes the local cluster to the machine; ``workers=0`` runs the blocks in
    this process without Dask (the reference path, for debugging).
    """

    scheduler: str | None = None
    workers: int | None = None
    verbose: bool = False
    tls: TlsFiles = field(default_factory=TlsFiles)  # a tls:// scheduler's; else Dask's config

    def security(self) -> Security | None:
        """Dask's security settings for a ``tls://`` scheduler (refused when incomplete)."""
        if self.scheduler is None or not is_tls(self.scheduler):
            return None
        return self.tls.security(self.scheduler)

    @property
    def in_process(self) -> bool:
        """Whether blocks run in this process (no Dask)."""
        return self.scheduler is None and self.workers == 0


@dataclass(frozen=True)
class LocalLayout:
    """How a local cluster is laid out on this machine."""

    workers: int
    torch_threads: int
    gpus: int
    threads: int = 1  # Dask threads per worker: host threads feeding a GPU, else 1

    @classmethod
    def for_machine(cls, workers: int | None = None) -> LocalLayout:
        """One worker per GPU, else ``min(cores, 4)``; cores shared out as torch threads.

        A GPU worker runs several blocks at once on host threads (``gpu_host_threads``): its
        ``GPU`` resource counts them, and each block task takes one.
        """
        cores, gpus = available_cores(), gpu_count()
        if workers is None:
            workers = gpus or min(cores, MAX_DEFAULT_WORKERS)
        threads = gpu_host_threads(cores, workers) if gpus else 1
        return cls(workers, max(1, cores // (workers * threads)), gpus, threads)


def run_block(
    job: SegmentJob, index: tuple[int, int], run_id: str, fed: Sequence[None] = ()
) -> BlockRecord:
    """The Dask task of one block: segment it, write its chunks, then its ``done`` marker.

    ``fed``: the results of the feed tasks the block depends on (none of them is used; they
    make Dask run the block only once its input is copied).
    """
    from distributed import get_worker

    try:
        worker = get_worker().address
    except ValueError:  # called outside a worker
        worker = "local"
    return segment_and_record(job, index, run_id, worker=worker)


class Cluster:
    """The Dask cluster of a run, started on first use and closed at the end (context manager).

    Inputs that are up to date never start it. With ``--scheduler`` the client connects to the
    existing cluster and leaves it running at the end.
    """

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None
        self._address = ""
        self.gpu_resource = False

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None and not issubclass(kind, Exception):  # Ctrl-C, SIGTERM
            self.stop_workers()
        self.close()

    def client(self) -> Client:
        """The connected client (starting the local cluster if needed)."""
        if self._client is None:
            self._client = self._connect()
            self._address = str(self._client.scheduler_info()["address"])
        return self._client

    def _connect(self) -> Client:
        from distributed import Client, LocalCluster

        from segpipe.flows.workerplugin import DriverStops, TorchThreads

        if self.spec.scheduler:
            return self._join(self.spec.scheduler)
        layout = LocalLayout.for_machine(self.spec.workers)
        extra = {"resources": {"GPU": layout.threads}} if layout.gpus else {}
        self._cluster = LocalCluster(
            n_workers=layout.workers, threads_per_worker=layout.threads, processes=True,
            dashboard_address=None,  # no dashboard; its HTTP server on any free port:
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.WARNING if self.spec.verbose else logging.CRITICAL, **extra,
        )
        self.gpu_resource = bool(layout.gpus)
        client = Client(self._cluster)
        client.register_plugin(
            TorchThreads(layout.torch_threads, gpu_by_name=bool(layout.gpus)),
            name="segpipe-torch",
        )
        client.register_plugin(DriverStops(), name="segpipe-driver-stops")
        return client

    def _join(self, scheduler: str) -> Client:
        """A client of the existing cluster at ``scheduler``, its workers given torch threads."""
        from distributed import Client

        from segpipe.flows.workerplugin import TorchThreads

        security = self.spec.security()
        warn_if_exposed(scheduler)
        try:
            client = Client(scheduler, timeout="20s", security=security)
        except OSError as exc:
            check = ("check the address (tcp://host:port) and that the scheduler is running"
                     if security is None else
                     "check the address, that the scheduler is running, that --tls-ca-file is "
                     "the CA that signed the scheduler's certificate and that this CA signed "
                     "--tls-cert")
            raise InputError(f"--scheduler {scheduler}: cannot connect ({exc}); {check}") from None
        try:
            client.wait_for_workers(1, timeout=120)
        except TimeoutError:
            client.close()
            raise InputError(
                f"--scheduler {scheduler} has no workers; start some with "
                f"`dask worker {scheduler}`"
            ) from None
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        per_host: dict[str, int] = {}
        for w in workers:
            per_host[w["host"]] = per_host.get(w["host"], 0) + w["nthreads"]
        self.gpu_resource = any("GPU" in (w.get("resources") or {}) for w in workers)
        client.register_plugin(TorchThreads(threads_on_host=per_host), name="segpipe-torch")
        return client

    @property
    def address(self) -> str:
        """The scheduler address."""
        self.client()
        return self._address

    def close(self) -> None:
        """Close the client, and the cluster when this object started it."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close(timeout=CLOSE_SECONDS)
            self._cluster = None

    def stop_workers(self) -> None:
        """On an interrupt: SIGKILL this cluster's worker processes before closing it.

        Ctrl-C reaches the workers too, and a graceful close then waits on workers that are
        half gone (it once took over a minute). Killing is safe: a block's chunks are written
        whole and its marker last, so a resume recomputes only blocks without a marker.
        """
        if self._cluster is None:
            return
        for nanny in list(self._cluster.workers.values()):
            pid = getattr(nanny, "pid", None)
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


class DaskExecutor:
    """Runs block tasks on the run's :class:`Cluster` (started on first use)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def run(
        self, job: SegmentJob, blocks: Sequence[tuple[int, int]], run_id: str, sink: BlockSink
    ) -> None:
        """Submit one task per block and report each to ``sink`` as it finishes or fails."""
        if not blocks:
            return
        futures, by_key = submit_blocks(
            self.cluster.client(), job, blocks, run_id, gpu=self.cluster.gpu_resource
        )
        gather_blocks(futures, by_key, sink)


def submit_blocks(
    client: Client, job: SegmentJob, indices: Sequence[tuple[int, int]], run_id: str,
    *, gpu: bool = False,
) -> tuple[list[Future], dict[str, tuple[int, int]]]:
    """Submit one task per block; returns the block futures and {task key: block index}.

    With a feed, the copy of each block's core is a task too, submitted just before the first
    block that needs it; a block task depends on the copies it reads, so Dask runs the copies
    ahead of the blocks, on the workers, overlapping the segmentation. Computes nothing itself:
    the tasks run on the workers. Tasks are retried twice on error; a
    task whose worker dies is rescheduled by Dask on another worker. Keys name the run attempt
    and the block, so attempts never collide on a shared scheduler.
    """
    resources = {"GPU": 1} if gpu else None
    fed: dict[tuple[int, int], Future] = {}
    futures: list[Future] = []
    by_key: dict[str, tuple[int, int]] = {}
    for new, row in _rows(job, indices):  # one map call each: Dask runs earlier calls first
        if new:  # the copies the row's blocks need first, submitted just before them
            keys = [f"segpipe-{run_id}-feed-{i}_{j}" for i, j in new]
            fed.update(zip(new, client.map(
                feed_block, [job.feed] * len(new), [job.tiles] * len(new), new, key=keys,
                retries=RETRIES, pure=False,
            )))
        keys = [f"segpipe-{run_id}-{i}_{j}" for i, j in row]
        ready = [[fed[n] for n in needs(job.tiles, index) if n in fed] for index in row]
        futures += client.map(
            run_block, [job] * len(row), row, [run_id] * len(row), ready, key=keys,
            retries=RETRIES, pure=False, resources=resources,
        )
        by_key.update(zip(keys, row))
    return futures, by_key


def _rows(
    job: SegmentJob, indices: Sequence[tuple[int, int]]
) -> Iterator[tuple[list[tuple[int, int]], list[tuple[int, int]]]]:
    """The blocks by block row, each row with the feed tasks its blocks need first."""
    fed = fed_blocks(job.feed) if job.feed is not None else set()
    order = (wavefront(job.tiles, indices, fed) if job.feed is not None
             else (([], index) for index in indices))
    for _, group in groupby(order, key=lambda step: step[1][0]):
        steps = list(group)
        yield [n for new, _ in steps for n in new], [index for _, index in steps]


def gather_blocks(
    futures: list[Future], indices: dict[str, tuple[int, int]], sink: BlockSink
) -> None:
    """Wait for the block futures, reporting each to ``sink`` (results flow to the client).

    ``sink.idle`` is called about every 20 ms while nothing finishes (for stall reporting).
    Futures are released as they finish, so their results do not pile up on the workers.
    """
    from distributed import as_completed

    pending = as_completed(futures)
    del futures
    while not pending.is_empty():
        batch = pending.next_batch(block=False)
        if not batch:
            sink.idle()
            time.sleep(POLL_SECONDS)
            continue
        for future in batch:
            if future.status == "finished" or future.status in ("error", "cancelled"):
                _report(future, indices[future.key], sink)
                future.release()
            else:  # finished, then its result was lost with a dead worker: Dask recomputes it
                pending.add(future)


def _report(future: Future, index: tuple[int, int], sink: BlockSink) -> None:
    if future.status == "cancelled":
        sink.failed(index, "cancelled (the scheduler or the client lost the task)")
        return
    try:
        record = future.result()
    except Exception as err:
        sink.failed(index, f"{type(err).__name__}: {err}")
    else:
        sink.done(record)
