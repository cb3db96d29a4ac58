"""A long ``segpipe serve``: many small inputs arriving over time, driver memory and descriptors.

Used by ``tests/faults/test_long_serve.py`` (which asserts the thresholds) and runnable alone to
record the figures (``benchmarks/results/serve_soak.json``)::

    .venv/bin/python -m tests.flows.serve_soak benchmarks/results/serve_soak.json

Inputs are copies of :data:`DISTINCT` seeded images (so each output has a reference); they are
dropped :data:`PER_SECOND` a second, whole (written beside the folder, then renamed in), except
every :data:`SLOW_EVERY`-th, which is written into the folder in pieces over more than
``--settle`` seconds (a scanner still writing). The serve process's PSS and open descriptors are
sampled twice a second with the number of outputs done; every output's ``mtime_ns`` is recorded
when first seen, so a second segmentation of any input shows.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.conftest import smooth_image, write_geotiff  # noqa: E402
from tests.flows.conftest import SMALL, SMALL_ARGS, VENV_BIN, group_gone  # noqa: E402
from tests.pipeline.test_exactness import tiny_unet  # noqa: E402

INPUTS = 200
DISTINCT = 10
PER_SECOND = 4
SLOW_EVERY = 40  # 5 of 200 inputs are still being written when first seen
SETTLE = 2.0
INTERVAL = 2
STOP_SECONDS = 30.0


@dataclass
class Soak:
    """What a soak run saw."""

    samples: list[tuple[int, int, int]] = field(default_factory=list)  # (done, pss, fds)
    first_seen: dict[str, int] = field(default_factory=dict)  # output name → mtime_ns
    rewritten: list[str] = field(default_factory=list)
    stop_seconds: float = 0.0
    exit_code: int | None = None
    left: bool = False
    wall_seconds: float = 0.0

    def window(self, lo: int, hi: int) -> tuple[float, float]:
        """Median PSS (MB) and descriptors while inputs lo..hi were being finished."""
        rows = [(p, f) for d, p, f in self.samples if lo <= d <= hi]
        if not rows:
            raise AssertionError(f"no sample while outputs {lo}..{hi} were written")
        return (statistics.median(p for p, _ in rows) / 2**20,
                statistics.median(f for _, f in rows))

    def figures(self) -> dict:
        first, last = self.window(1, 50), self.window(INPUTS - 49, INPUTS)
        return {
            "inputs": INPUTS, "per_second": PER_SECOND, "interval_s": INTERVAL,
            "settle_s": SETTLE, "wall_seconds": round(self.wall_seconds, 1),
            "pss_mb_first_50": round(first[0], 1), "pss_mb_last_50": round(last[0], 1),
            "pss_ratio": round(last[0] / first[0], 3),
            "fds_first_50": first[1], "fds_last_50": last[1],
            "fds_ratio": round(last[1] / first[1], 3), "rewritten": len(self.rewritten),
            "sigterm_to_exit_s": round(self.stop_seconds, 2), "exit_code": self.exit_code,
            "processes_left": self.left,
        }


def name(i: int) -> str:
    return f"in{i:03d}.tif"


def output_name(i: int) -> str:
    return f"in{i:03d}.labels.tif"


def make_sources(tmp: Path) -> list[Path]:
    """The distinct images as GeoTIFFs, and a tiny model."""
    tiny_unet(tmp / "model.pt", 1, "valid")
    src = tmp / "sources"
    src.mkdir()
    return [write_geotiff(src / f"s{k}.tif", smooth_image(SMALL, "uint8", seed=60 + k))
            for k in range(DISTINCT)]


def feed(sources: list[Path], watch: Path, staging: Path) -> None:
    """Drop the inputs, PER_SECOND a second; every SLOW_EVERY-th written slowly in place."""
    for i in range(INPUTS):
        data = sources[i % DISTINCT].read_bytes()
        if i % SLOW_EVERY == SLOW_EVERY - 1:
            threading.Thread(target=_write_slowly, args=(watch / name(i), data)).start()
        else:
            (staging / name(i)).write_bytes(data)
            os.replace(staging / name(i), watch / name(i))
        time.sleep(1 / PER_SECOND)


def _write_slowly(path: Path, data: bytes, pieces: int = 8) -> None:
    """Write ``data`` in pieces over 1.5 × SETTLE seconds (each write within SETTLE of the last)."""
    step = -(-len(data) // pieces)
    with open(path, "wb") as f:
        for k in range(pieces):
            f.write(data[k * step:(k + 1) * step])
            f.flush()
            time.sleep(1.5 * SETTLE / pieces)


def watch_outputs(out: Path, soak: Soak, proc: psutil.Process) -> int:
    """One sample: outputs done, the serve process's PSS and descriptors; mtimes checked."""
    done = 0
    for p in out.glob("*.labels.tif"):
        done += 1
        stamp = p.stat().st_mtime_ns
        first = soak.first_seen.setdefault(p.name, stamp)
        if stamp != first and p.name not in soak.rewritten:
            soak.rewritten.append(p.name)
    info = proc.memory_full_info()
    soak.samples.append((done, info.pss, proc.num_fds()))
    return done


def run_soak(tmp: Path, env: dict[str, str], timeout: float = 1500) -> tuple[Soak, Path]:
    """Serve a folder while INPUTS arrive; SIGTERM while a run is going. Returns the output dir."""
    sources = make_sources(tmp)
    watch, staging, out = tmp / "watch", tmp / "staging", tmp / "out"
    for d in (watch, staging):
        d.mkdir()
    log = open(tmp / "serve.log", "w")  # noqa: SIM115 (closed below)
    cmd = [str(VENV_BIN / "segpipe"), "serve", "--watch", str(watch), "--pattern", "*.tif",
           "--output", str(out), "--interval", str(INTERVAL), "--settle", str(SETTLE),
           "--model", str(tmp / "model.pt"), *SMALL_ARGS, "--workers", "0"]
    serve = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    soak, started = Soak(), time.monotonic()
    try:
        proc = psutil.Process(serve.pid)
        _wait(lambda: "serving deployment" in (tmp / "serve.log").read_text(), 180)
        feeder = threading.Thread(target=feed, args=(sources, watch, staging))
        feeder.start()
        while watch_outputs(out, soak, proc) < INPUTS:
            if time.monotonic() - started > timeout or serve.poll() is not None:
                raise AssertionError(f"serve did not finish: {(tmp / 'serve.log').read_text()}")
            time.sleep(0.5)
        feeder.join()
        soak.wall_seconds = time.monotonic() - started
        _stop_mid_run(serve, watch, sources, soak, tmp)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        log.close()
    return soak, out


def _stop_mid_run(serve: subprocess.Popen, watch: Path, sources: list[Path], soak: Soak,
                  tmp: Path) -> None:
    """Drop one more input, SIGTERM serve once a run is going, time the stop."""
    before = (tmp / "serve.log").read_text().count("Beginning flow run")
    (watch / "last.tif").write_bytes(sources[0].read_bytes())
    os.utime(watch / "last.tif", (time.time() - 10, time.time() - 10))  # settled at once
    _wait(lambda: (tmp / "serve.log").read_text().count("Beginning flow run") > before, 120)
    t0 = time.monotonic()
    serve.send_signal(signal.SIGTERM)
    try:
        soak.exit_code = serve.wait(timeout=STOP_SECONDS + 30)
    except subprocess.TimeoutExpired:
        soak.exit_code = None
    soak.stop_seconds = time.monotonic() - t0
    deadline = time.monotonic() + 10
    while not group_gone(serve.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    soak.left = not group_gone(serve.pid)


def _wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.2)


def main(argv: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(Path(tmp) / "home"), DO_NOT_TRACK="1",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false")
        soak, _ = run_soak(Path(tmp), env)
    figures = soak.figures()
    Path(argv[0]).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:] or ["benchmarks/results/serve_soak.json"])
