"""Fixtures for the flow tests: a Prefect test server, rasters, tiny models, Dask processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio

from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet

VENV_BIN = Path(sys.executable).parent
SMALL = (1, 96, 130)  # 3 × 5 blocks of one 32 px tile
BIG = (1, 1024, 1024)  # 16 × 16 blocks of one 64 px tile: slow enough to interrupt
SMALL_ARGS = ("--tile", "32", "--block-pixels", "32", "--device", "cpu")
BIG_ARGS = ("--tile", "64", "--block-pixels", "64", "--batch-size", "1", "--device", "cpu")


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect server for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Inputs and a tiny valid-padding U-Net, made once."""
    d = tmp_path_factory.mktemp("assets")
    small = write_geotiff(d / "small.tif", smooth_image(SMALL, "uint8", seed=1))
    big = write_geotiff(d / "big.tif", smooth_image(BIG, "uint8", seed=2))
    model = tiny_unet(d / "unet.pt", 1, "valid")
    return {"dir": d, "small": small, "big": big, "model": model}


def options_for(src, out, model, args) -> RunOptions:
    """The RunOptions equal to CLI ``args`` (SMALL_ARGS or BIG_ARGS)."""
    kw = dict(zip(args[::2], args[1::2]))
    return RunOptions.of(
        str(src), str(out), model=str(model), tile=int(kw["--tile"]),
        block_pixels=int(kw["--block-pixels"]), device="cpu",
        batch_size=int(kw.get("--batch-size", 4)),
    )


@pytest.fixture(scope="session")
def reference(assets, tmp_path_factory):
    """Labels (and files) of the in-process reference path, run_one, for both inputs."""
    d = tmp_path_factory.mktemp("reference")
    out = {}
    for name, args in (("small", SMALL_ARGS), ("big", BIG_ARGS)):
        path = d / f"{name}.tif"
        run_one(options_for(assets[name], path, assets["model"], args))
        out[name] = read_labels(path)
        out[f"{name}_file"] = path
    return out


def read_labels(path) -> np.ndarray:
    """The decoded label pixels of an output GeoTIFF."""
    with rasterio.open(path) as ds:
        return ds.read(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(prefect_api: str) -> dict[str, str]:
    """Environment for a ``segpipe`` subprocess that uses the session's Prefect server."""
    env = dict(os.environ)
    env.update(PREFECT_API_URL=prefect_api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1")
    return env


def segpipe_cmd(*args) -> list[str]:
    return [str(VENV_BIN / "segpipe"), *map(str, args)]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session=True and everything in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    wait_for(lambda: group_gone(proc.pid), 30, "the killed process group to exit", 0.05)


def group_gone(pgid: int) -> bool:
    """Whether no process of the process group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@dataclass(frozen=True)
class TlsNode:
    """The TLS files of a scheduler or worker: the cluster's CA, a certificate and its key."""

    ca_file: Path
    cert: Path
    key: Path

    def args(self) -> list[str]:
        """The ``dask scheduler`` / ``dask worker`` options."""
        return ["--tls-ca-file", str(self.ca_file), "--tls-cert", str(self.cert),
                "--tls-key", str(self.key)]

    def security(self):
        """A client's :class:`~distributed.security.Security` with these files."""
        from distributed.security import Security

        return Security(tls_ca_file=str(self.ca_file), tls_client_cert=str(self.cert),
                        tls_client_key=str(self.key), require_encryption=True)


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` subprocesses (killed at teardown).

    On 127.0.0.1 over plain TCP by default; over TLS with ``tls`` (the nodes' files), on
    another address of this machine with ``host``.
    """

    def __init__(self, tmp: Path, tls: TlsNode | None = None, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.host = host
        self.tls = tls
        self.address = f"{'tls' if tls else 'tcp'}://{host}:{self.port}"
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []

    def _start(self, *args, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [str(VENV_BIN / "dask"), *args], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def start(self, workers: int = 2, nanny: bool = True) -> DaskProcesses:
        tls = [*self.tls.args(), "--protocol", "tls"] if self.tls else []
        self._start("scheduler", "--host", self.host, "--port", str(self.port),
                    "--no-dashboard", *tls, name="scheduler")
        for i in range(workers):
            extra = ([] if nanny else ["--no-nanny"]) + (self.tls.args() if self.tls else [])
            self.workers.append(self._start(
                "worker", self.address, "--nthreads", "1", "--host", self.host,
                "--no-dashboard", "--name", f"w{i}", *extra, name=f"worker{i}",
            ))
        from distributed import Client

        security = self.tls.security() if self.tls else None
        with Client(self.address, timeout="60s", security=security) as client:
            client.wait_for_workers(workers, timeout=120)
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def dask_processes(tmp_path):
    """Factory for a scheduler + workers; all killed at teardown."""
    started: list[DaskProcesses] = []

    def start(workers: int = 2, nanny: bool = True, **where) -> DaskProcesses:
        d = DaskProcesses(tmp_path, **where).start(workers, nanny)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()
