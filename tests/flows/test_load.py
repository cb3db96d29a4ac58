"""Load: a batch of 20 inputs on a LocalCluster equals 20 in-process runs byte for byte, with a
driver whose memory stays flat; two batches against one output folder (a lock lets the first
through and stops the second, naming the holder); ``segpipe serve`` never takes the files it
wrote into the watched folder for inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from segpipe.flows.inputs import list_inputs, output_name
from segpipe.flows.lock import LOCK_NAME
from segpipe.pipeline.stages import run_one
from tests.conftest import smooth_image, write_geotiff
from tests.faults.conftest import fault_env
from tests.flows.conftest import (
    SMALL_ARGS,
    cli_env,
    options_for,
    read_labels,
    segpipe_cmd,
    wait_for,
)

COUNT = 20
SHAPE = (1, 96, 96)  # 3 × 3 blocks of one 32 px tile
#: allowed growth of the driver's resident memory from input 5 to input 20
MEMORY_GROWTH_LIMIT = 50 * 2**20


@pytest.fixture(scope="module")
def batch(tmp_path_factory, assets):
    """20 seeded inputs in one folder; their in-process references are made when first needed."""
    d = tmp_path_factory.mktemp("batch")
    inputs = d / "in"
    inputs.mkdir()
    reference = d / "reference"
    reference.mkdir()
    for i in range(COUNT):
        image = smooth_image(SHAPE, "uint8", seed=100 + i)
        write_geotiff(inputs / f"scene{i:02d}.tif", image)
    return {"inputs": inputs, "reference": reference, "model": assets["model"]}


def reference_for(batch: dict, name: str) -> Path:
    """The labels of output ``name`` made by run_one in this process (the independent path)."""
    path = batch["reference"] / name
    if not path.exists():
        (src,) = [p for p in batch["inputs"].glob("*.tif") if output_name(p.name) == name]
        run_one(options_for(src, path, batch["model"], SMALL_ARGS))
    return path


def assert_outputs_equal_reference(out: Path, batch: dict, names=None) -> None:
    """Every output's label pixels (rasterio) and bytes equal the in-process reference's."""
    names = names or sorted(output_name(p.name) for p in batch["inputs"].glob("*.tif"))
    assert sorted(p.name for p in out.glob("*.labels.tif")) == sorted(names)
    for name in names:
        reference = reference_for(batch, name)
        np.testing.assert_array_equal(read_labels(out / name), read_labels(reference))
        assert (out / name).read_bytes() == reference.read_bytes(), name


class RssSampler:
    """Samples a process's resident memory every 20 ms with the number of outputs finished."""

    def __init__(self, pid: int, out: Path) -> None:
        self.process = psutil.Process(pid)
        self.out = out
        self.samples: list[tuple[int, int]] = []  # (outputs finished, RSS bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _finished(self) -> int:
        return sum(1 for _ in self.out.glob(".*.segpipe.json"))  # each output's last file

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                finished = self._finished()
                self.samples.append((finished, self.process.memory_info().rss))
            except (psutil.NoSuchProcess, FileNotFoundError):
                return
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def right_after(self, n: int) -> int:
        """The RSS sampled first once ``n`` outputs were finished (within 20 ms of the n-th)."""
        return next(rss for k, rss in self.samples if k >= n)

    def peak_while(self, n: int) -> int:
        """The highest RSS sampled while exactly ``n`` outputs were finished (input n + 1 ran)."""
        return max(rss for k, rss in self.samples if k == n)


@pytest.mark.slow
def test_a_batch_of_20_on_a_local_cluster_equals_in_process_and_the_driver_stays_flat(
    prefect_api, batch, tmp_path
):
    """20 inputs, one folder, --workers 2: every output equals its in-process reference (pixels
    and bytes), and the driver's RSS after input 20 is within 50 MiB of after input 5."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        segpipe_cmd("run", "--input", batch["inputs"], "--output", out, "--model",
                    batch["model"], *SMALL_ARGS, "--workers", "2", "--quiet"),
        env=cli_env(prefect_api), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wait_for(lambda: out.is_dir() or proc.poll() is not None, 120, "the output folder")
    sampler = RssSampler(proc.pid, out)
    _, err = proc.communicate(timeout=900)
    sampler.stop()
    assert proc.returncode == 0, err
    assert_outputs_equal_reference(out, batch)

    # right after input 5 and input 20 were published, and at the peak of the inputs 6 and 20
    # (the end of the process, where the interpreter tears down torch and Prefect, is left out)
    mib = 2**20
    after = {n: sampler.right_after(n) for n in (5, COUNT)}
    peak = {n: sampler.peak_while(n - 1) for n in (6, COUNT)}
    print(f"driver RSS right after input 5: {after[5] / mib:.1f} MiB, after input 20: "
          f"{after[COUNT] / mib:.1f} MiB; peak during input 6: {peak[6] / mib:.1f} MiB, during "
          f"input 20: {peak[COUNT] / mib:.1f} MiB ({len(sampler.samples)} samples)")
    assert after[COUNT] - after[5] <= MEMORY_GROWTH_LIMIT, after
    assert peak[COUNT] - peak[6] <= MEMORY_GROWTH_LIMIT, peak


def read_deployment(name: str):
    """The deployment ``name`` on the Prefect server, or None."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def call():
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name(name)
            except Exception:
                return None

    return asyncio.run(call())


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder``, hidden ones too: (size, mtime)."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_a_second_batch_against_a_held_output_folder_exits_2_naming_the_holder(
    prefect_api, batch, tmp_path
):
    """Two batches started at once on one output folder: the second exits 2 with one error line
    naming the first's pid, host and start, and changes nothing; the first finishes exactly."""
    out, release = tmp_path / "out", tmp_path / "release"
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = []
    for src in sorted(batch["inputs"].glob("*.tif"))[:3]:
        shutil.copy(src, inputs / src.name)
        names.append(output_name(src.name))
    args = segpipe_cmd("run", "--input", inputs, "--output", out, "--model", batch["model"],
                       *SMALL_ARGS, "--workers", "0", "--quiet")
    # the first batch is held (an injected pause) as its first export reads the label store
    first = subprocess.Popen(args, env=fault_env(prefect_api,
                                                 pause_chunk_read="labels.zarr:1",
                                                 release=release, log=tmp_path / "faults.log"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = out / LOCK_NAME

    def holder() -> dict | None:
        try:
            return json.loads(lock.read_text()) or None
        except (FileNotFoundError, ValueError):
            return None

    wait_for(lambda: (holder() or {}).get("pid") == first.pid or first.poll() is not None, 120,
             "the first batch to hold the output folder")
    paused = tmp_path / "faults.log"
    wait_for(lambda: paused.exists() and "pause-read-labels.zarr" in paused.read_text(), 120,
             "the first batch held in its export")
    before = folder_state(out)

    second = subprocess.run(args, env=cli_env(prefect_api), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 2, second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
    since = time.strftime("%Y-%m-%d", time.localtime(holder()["since"]))
    assert errors[0].startswith(f"error: output folder {out} is in use by another segpipe run "
                                f"(pid {first.pid} on host {socket.gethostname()} since {since}")
    assert folder_state(out) == before  # the second run touched nothing

    release.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert_outputs_equal_reference(out, batch, names)
    assert not lock.exists()


def test_a_lock_left_by_a_dead_run_is_taken_over_and_said_so(prefect_api, batch, tmp_path):
    """A lock file left by a process that is gone (same host): the next run takes it over with
    a warning naming the dead holder, and finishes exactly; the lock is removed at the end."""
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "since": time.time() - 3600,
         "started": None, "command": "segpipe run"}))
    src = sorted(batch["inputs"].glob("*.tif"))[0]
    done = subprocess.run(
        segpipe_cmd("run", "--input", src, "--output", out / output_name(src.name), "--model",
                    batch["model"], *SMALL_ARGS, "--workers", "0", "--quiet"),
        env=cli_env(prefect_api), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"took over the lock of a segpipe run that is no longer running (pid {dead.pid} " \
        f"on host {socket.gethostname()}" in done.stderr
    assert_outputs_equal_reference(out, batch, [output_name(src.name)])
    assert not (out / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_not_taken_over(prefect_api, batch, tmp_path):
    """A lock file written on another host (its run cannot be checked from here): exit 2 naming
    that host and the lock file to remove; nothing is written."""
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps(
        {"pid": os.getpid(), "host": "elsewhere.example", "since": time.time(),
         "started": None, "command": "segpipe run"}))
    before = folder_state(out)
    src = sorted(batch["inputs"].glob("*.tif"))[0]
    done = subprocess.run(
        segpipe_cmd("run", "--input", src, "--output", out / "x.tif", "--model",
                    batch["model"], *SMALL_ARGS, "--workers", "0", "--quiet"),
        env=cli_env(prefect_api), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "on host elsewhere.example" in errors[0], done.stderr
    assert "remove the lock file" in errors[0] and str(out / LOCK_NAME) in errors[0]
    assert folder_state(out) == before


def test_files_segpipe_writes_into_a_folder_are_never_taken_as_inputs(tmp_path):
    """Outputs with a sidecar and everything sharing their stem (probabilities, quicklook,
    HTML report, areas CSV, vectors), and default outputs of the folder's own inputs, are left
    out of a folder's inputs; hidden entries (sidecars, work dirs, partials, lock) too."""
    for name in ("a.tif", "c.tif", "d.svs", "a.labels.tif", "a.labels.probabilities.tif",
                 "a.labels.quicklook.png", "a.labels.report.html", "a.labels.areas.csv",
                 "a.labels.vectors.gpkg", "old.tif", "d.labels.tif", ".hidden.tif",
                 ".segpipe.lock"):
        (tmp_path / name).write_bytes(b"x")
    # an output whose input is elsewhere, recognised by its sidecar
    (tmp_path / ".old.tif.segpipe.json").write_text("{}")
    (tmp_path / "old.probabilities.tif").write_bytes(b"x")
    (tmp_path / ".c.labels.tif.segpipe").mkdir()
    (tmp_path / ".a.labels.tif.k2j4h5g6.partial").mkdir()
    found = [p.name for p in list_inputs(tmp_path, ("*",))]
    assert found == ["a.tif", "c.tif", "d.svs"]
    assert [p.name for p in list_inputs(tmp_path, ("*.tif",))] == ["a.tif", "c.tif"]


def test_serve_never_segments_its_own_outputs_in_the_watched_folder(prefect_api, batch,
                                                                    tmp_path):
    """segpipe serve with outputs written into the watched folder and --pattern '*': a second
    triggered run segments the new input only, never labels, probabilities, quicklooks, HTML
    reports or areas CSVs of the first; the first's outputs stay untouched."""
    from prefect.deployments import run_deployment

    watch = tmp_path / "scans"
    watch.mkdir()
    sources = sorted(batch["inputs"].glob("*.tif"))
    shutil.copy(sources[0], watch / sources[0].name)
    env = cli_env(prefect_api) | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        segpipe_cmd("serve", "--watch", watch, "--pattern", "*", "--interval", "86400",
                    "--name", "load-watch", "--settle", "0", "--model", batch["model"],
                    *SMALL_ARGS, "--probabilities", "--workers", "0"),
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deployment = "segpipe-watch/load-watch"
    try:
        wait_for(lambda: read_deployment(deployment), 120, "the deployment", 0.5)
        first = run_deployment(deployment, timeout=300, poll_interval=1, as_subflow=False)
        assert first.state.is_completed(), (tmp_path / "serve.log").read_text()
        a_files = {p.name: p.stat().st_mtime_ns for p in watch.iterdir()
                   if p.name.startswith(output_name(sources[0].name)[: -len(".tif")])}
        assert {n.rsplit(".", 2)[-2] for n in a_files} >= {"labels", "probabilities",
                                                           "quicklook"}, sorted(a_files)
        shutil.copy(sources[1], watch / sources[1].name)
        second = run_deployment(deployment, timeout=300, poll_interval=1, as_subflow=False)
        assert second.state.is_completed(), (tmp_path / "serve.log").read_text()
    finally:
        os.killpg(proc.pid, 2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
    names = sorted(p.name for p in watch.iterdir() if not p.name.startswith("."))
    inputs = {sources[0].name, sources[1].name}
    outputs = [n for n in names if n not in inputs]
    stems = tuple(output_name(s)[: -len(".tif")] + "." for s in inputs)
    assert outputs and all(n.startswith(stems) for n in outputs), names
    assert all(n.count(".labels") == 1 for n in outputs), names  # no output of an output
    assert {p.name: p.stat().st_mtime_ns for p in watch.iterdir() if p.name in a_files} \
        == a_files  # the first input's files were not rewritten
    assert_outputs_equal_reference(watch, batch, sorted(output_name(s) for s in inputs))


def readme_alert_recipe() -> str:
    """The Python block of the README's 'Being told when a nightly run fails'."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("**Being told when a nightly run fails.**", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


class Webhook:
    """A local HTTP endpoint that records the bodies POSTed to it."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, HTTPServer

        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(self.rfile.read(int(self.headers["content-length"])).decode())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alert"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_the_readme_alert_recipe_notifies_when_a_segpipe_run_fails(prefect_api, batch,
                                                                   tmp_path):
    """The README's automation, run as written with a webhook block in place of Slack's: a
    segpipe run that fails in its flow (exit 2: a tile the model cannot take) is notified."""
    from prefect.automations import Automation

    hook = Webhook()
    recipe = readme_alert_recipe()
    lines = recipe.splitlines()
    (slack,) = [i for i, line in enumerate(lines) if line.startswith("block = SlackWebhook(")]
    lines[slack] = (
        "from prefect.blocks.notifications import CustomWebhookNotificationBlock\n"
        f"block = CustomWebhookNotificationBlock(name='test', url={hook.url!r}, "
        "json_data={'text': '{{body}}'})"
    )
    exec(compile("\n".join(lines), "README.md", "exec"), {})
    try:
        src = sorted(batch["inputs"].glob("*.tif"))[0]
        failed = subprocess.run(
            segpipe_cmd("run", "--input", src, "--output", tmp_path / "x.tif", "--model",
                        batch["model"], "--tile", "30", "--device", "cpu", "--workers", "0",
                        "--quiet"),
            env=cli_env(prefect_api), capture_output=True, text=True, timeout=300)
        assert failed.returncode == 2, failed.stderr
        wait_for(lambda: hook.bodies, 120, "the notification", 0.5)
        (body,) = hook.bodies
        assert "ended Failed" in json.loads(body)["text"], body
    finally:
        Automation.read(name="segpipe run failed").delete()
        hook.server.shutdown()
