"""A real S3-compatible server on 127.0.0.1 (moto server mode), buckets, share-nothing workers.

The server runs as a ``moto_server`` subprocess on a free port; the tests create their buckets
through s3fs with explicit settings (never through segpipe). ``segpipe`` and ``dask worker``
subprocesses reach the server only through the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), with no AWS config files, so what they do is
what a user's cluster does with the same variables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from tests.conftest import smooth_image, write_geotiff
from tests.flows.conftest import free_port, wait_for
from tests.pipeline.test_exactness import tiny_unet

VENV_BIN = Path(sys.executable).parent
#: the secret key the tests use: it must never appear in anything segpipe writes or prints
SECRET = f"sEcReT-{uuid.uuid4().hex}"
ACCESS_KEY = "AKIASEGPIPETESTKEY01"


@dataclass
class S3Server:
    """A ``moto_server`` subprocess; ``endpoint`` is its URL."""

    proc: subprocess.Popen
    endpoint: str
    log: Path

    def fs(self, key: str = ACCESS_KEY, secret: str = SECRET):
        """An s3fs filesystem on this server (fresh, not shared with segpipe's)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=key, secret=secret, endpoint_url=self.endpoint, skip_instance_cache=True,
            use_listings_cache=False,
        )

    def bucket(self, name: str, **fs_kw) -> None:
        """Create the bucket ``name`` (in us-east-1, which takes no location constraint)."""
        self.fs(**fs_kw).call_s3("create_bucket", Bucket=name)

    def env(self, home: Path, key: str = ACCESS_KEY, secret: str = SECRET) -> dict[str, str]:
        """Environment of a process that reaches the server with the standard AWS variables."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AWS_") and k != "SEGPIPE_DEBUG"}
        env.update(
            AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
            AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(home / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
            SEGPIPE_MODEL_CACHE=str(home / "model-cache"), TMPDIR=str(home / "tmp"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
        )
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return env


def start_moto(tmp: Path, **env: str) -> S3Server:
    """Start ``moto_server`` on a free port of 127.0.0.1; wait until it answers."""
    port = free_port()
    log = tmp / f"moto-{port}.log"
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115 (closed with the process)
        env={**os.environ, **env}, start_new_session=True,
    )

    def answers() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(answers, 60, "moto_server to listen", 0.1)
    return S3Server(proc, f"http://127.0.0.1:{port}", log)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def prefect_api():
    """A Prefect API for the segpipe subprocesses: the one already active, else a test server."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    if PREFECT_API_URL.value():  # tests/flows' session server, when it runs in this session
        yield PREFECT_API_URL.value()
        return
    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A moto server for the session (no authentication: any key pair is accepted)."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    stop(server.proc)


def write_cog(path: Path, data: np.ndarray) -> Path:
    """``data`` as a COG (512 px blocks, overviews) through GDAL's COG driver."""
    staging = write_geotiff(path.with_suffix(".staging.tif"), data)
    rasterio.shutil.copy(staging, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE="256")
    staging.unlink()
    return path


@pytest.fixture(scope="session")
def remote_assets(s3, tmp_path_factory):
    """A COG scene and a tiny valid U-Net, on disk and in the bucket ``scenes``."""
    d = tmp_path_factory.mktemp("remote-assets")
    scene = write_cog(d / "scene.tif", smooth_image((1, 160, 224), "uint8", seed=7))
    big = write_cog(d / "big.tif", smooth_image((1, 512, 512), "uint8", seed=8))
    model = tiny_unet(d / "unet.pt", 1, "valid")
    fs = s3.fs()
    s3.bucket("scenes")
    for p in (scene, big):
        fs.put_file(str(p), f"scenes/in/{p.name}")
    fs.put_file(str(model), "scenes/models/unet.pt")
    return {"dir": d, "scene": scene, "big": big, "model": model,
            "scene_url": "s3://scenes/in/scene.tif", "big_url": "s3://scenes/in/big.tif",
            "model_url": "s3://scenes/models/unet.pt"}


def segpipe(args, env: dict[str, str], cwd: Path, timeout: float = 600):
    """Run the installed ``segpipe`` script."""
    return subprocess.run(
        [str(VENV_BIN / "segpipe"), *map(str, args)], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout, check=False,
    )


def read_labels_from(fs, url: str, tmp: Path) -> np.ndarray:
    """Download a GeoTIFF from the bucket with s3fs and decode it with rasterio."""
    local = tmp / f"dl-{uuid.uuid4().hex}.tif"
    fs.get_file(url.removeprefix("s3://"), str(local))
    with rasterio.open(local) as ds:
        return ds.read(1)


class Workers:
    """``dask scheduler`` + ``dask worker`` processes, each in its own empty folder.

    Each process's working directory, HOME, TMPDIR and model cache are its own empty folder;
    none is given a path of the test's files. What they share is the S3 server.
    """

    def __init__(self, root: Path, server: S3Server, count: int = 2) -> None:
        self.root = root
        self.server = server
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen] = []
        self.homes: list[Path] = []
        self._start("scheduler", "--host", "127.0.0.1", "--port",
                    self.address.rsplit(":", 1)[1], "--no-dashboard")
        for i in range(count):
            self._start("worker", self.address, "--nthreads", "1", "--host", "127.0.0.1",
                        "--no-dashboard", "--name", f"w{i}", "--no-nanny")
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(count, timeout=120)

    def _start(self, *args: str) -> None:
        home = self.root / f"{args[0]}-{len(self.procs)}"
        home.mkdir(parents=True)
        env = self.server.env(home)
        env["HOME"] = str(home)
        log = open(self.root / f"{home.name}.log", "w")  # noqa: SIM115
        self.procs.append(subprocess.Popen(
            [str(VENV_BIN / "dask"), *args], cwd=home, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        ))
        self.homes.append(home)

    @property
    def worker_homes(self) -> list[Path]:
        return self.homes[1:]

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs[1:]]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


@pytest.fixture
def share_nothing_workers(s3, tmp_path):
    started: list[Workers] = []

    def start(count: int = 2) -> Workers:
        w = Workers(tmp_path / "cluster", s3, count)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def bucket_files_text(fs, prefix: str) -> str:
    """Everything under ``prefix`` in the bucket, concatenated as text (for secret greps)."""
    paths = fs.find(prefix)
    return "\n".join(fs.cat_file(p).decode("latin-1") for p in paths)


def poll(predicate, timeout: float, what: str, interval: float = 0.2):
    """Wait until ``predicate()`` is truthy (polling the bucket gently; no guessed sleeps)."""
    return wait_for(predicate, timeout, what, interval)


class CountingProxy:
    """A TCP relay on 127.0.0.1 in front of the S3 server that counts the bytes it returns.

    Clients pointed at ``endpoint`` reach the server through it; ``received`` is the number of
    bytes the server sent back (HTTP headers and bodies), whatever the client.
    """

    def __init__(self, upstream: str) -> None:
        import threading

        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.received = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def reset(self) -> int:
        with self._lock:
            n, self.received = self.received, 0
        return n

    def close(self) -> None:
        self._stop = True
        self._listener.close()


@pytest.fixture
def s3_env(s3, tmp_path, monkeypatch):
    """This process reaches the server through the AWS variables (fsspec caches reset)."""
    import s3fs

    env = s3.env(tmp_path / "home")
    for key, value in env.items():
        if key.startswith(("AWS_", "SEGPIPE_")):
            monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield env
    s3fs.S3FileSystem.clear_instance_cache()
