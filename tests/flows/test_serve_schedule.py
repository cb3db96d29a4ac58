"""``segpipe serve --interval``: scheduled runs happen by themselves, never overlap, stop cleanly.

Nothing is triggered by hand: the test starts ``segpipe serve``, drops files into the watched
folder and waits for their outputs. Once on the embedded default (no ``PREFECT_API_URL``: segpipe
starts a server with Prefect's scheduler), once against a real ``prefect server start`` on
127.0.0.1 with a Prefect home of its own. The server's own record of the runs (read over its
REST API) is the oracle for "runs never overlap" and "no late runs pile up".
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from segpipe.flows.cli import main
from tests.conftest import smooth_image, write_geotiff
from tests.flows.conftest import (
    SMALL,
    SMALL_ARGS,
    VENV_BIN,
    free_port,
    group_gone,
    kill_group,
    read_labels,
    segpipe_cmd,
    wait_for,
)

FILES = ("a.tif", "b.tif", "c.tif")


def clean_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """A user's environment: no configured Prefect API unless ``api_url``; a home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               TMPDIR=str(home / "tmp"))
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def drop_files(staging: Path, watch: Path) -> dict[str, np.ndarray]:
    """Write the inputs beside the folder, then move them in (finished files arrive whole)."""
    images = {}
    for i, name in enumerate(FILES):
        image = smooth_image(SMALL, "uint8", seed=40 + i)
        write_geotiff(staging / name, image)
        os.replace(staging / name, watch / name)
        images[name] = image
    return images


def flow_runs(api: str) -> list[dict]:
    """Every flow run the server knows of (its REST API, not segpipe's code)."""
    request = urllib.request.Request(
        f"{api}/flow_runs/filter", data=json.dumps({"limit": 200}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def assert_never_overlapped(runs: list[dict], at: float) -> None:
    """The runs that ran were one after another; none is left waiting (queried at ``at``)."""
    ran = sorted((r["start_time"], r["end_time"] or "9999", r["state_name"]) for r in runs
                 if r["state_type"] in ("RUNNING", "COMPLETED", "FAILED", "CRASHED"))
    assert len(ran) >= 1
    for (_, end, _), (start, _, _) in itertools.pairwise(ran):
        assert end <= start, f"two runs overlapped: {ran}"
    # every run due more than 30 s before the query ran or was skipped (cancelled): none waits
    # (a run may be Late for a moment: the late-runs service marks it before the runner polls)
    waiting = [(r["state_name"], r["expected_start_time"]) for r in runs
               if r["state_type"] == "SCHEDULED" and at - _seconds(r["expected_start_time"]) > 30]
    assert not waiting, f"late runs piled up: {waiting}"


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def serve_until_done(env: dict[str, str], tmp: Path, model: str) -> tuple[str, dict]:
    """Start serve (interval 5 s), drop the files, wait for every output; SIGTERM; its API."""
    watch, out, staging = tmp / "scans", tmp / "labels", tmp / "staging"
    for d in (watch, staging):
        d.mkdir()
    log_path = tmp / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            segpipe_cmd("serve", "--watch", watch, "--pattern", "*.tif", "--output", out,
                        "--interval", "5", "--settle", "2", "--model", model, *SMALL_ARGS,
                        "--workers", "0"),
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for(lambda: "serving deployment" in log_path.read_text(), 180, "serve to start",
                     0.5)
            images = drop_files(staging, watch)
            wait_for(lambda: all((out / n.replace(".tif", ".labels.tif")).exists() for n in FILES),
                     300, f"the scheduled runs to segment the files:\n{log_path.read_text()}", 1)
            api = re.search(r"http://127\.0\.0\.1:\d+", log_path.read_text())
            time.sleep(12)  # two more intervals: due runs keep coming, none overlaps
            runs, at = (flow_runs(f"{api.group(0)}/api") if api else []), time.time()
            # a supervisor's SIGTERM to serve alone: it stops within 30 s, exit 130, nothing left
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            wait_for(lambda: group_gone(proc.pid), 30, "serve's processes to exit", 0.1)
        finally:
            if proc.poll() is None or not group_gone(proc.pid):
                kill_group(proc)
    text = log_path.read_text()
    assert code == 130, text[-3000:]
    assert "Cannot schedule flows" not in text
    return text, {"runs": runs, "at": at, "images": images, "out": out}


def check_outputs(result: dict, assets, tmp: Path) -> None:
    """Each file segmented once, as ``segpipe run`` segments it."""
    out = result["out"]
    assert sorted(p.name for p in out.glob("*.tif")) == sorted(
        n.replace(".tif", ".labels.tif") for n in FILES)
    for name, image in result["images"].items():
        alone = tmp / f"alone-{name}"
        write_geotiff(alone, image)
        args = ["run", "--input", str(alone), "--output", str(tmp / f"ref-{name}"), "--quiet",
                "--model", str(assets["model"]), *SMALL_ARGS, "--workers", "0"]
        assert main(args) == 0
        np.testing.assert_array_equal(read_labels(out / name.replace(".tif", ".labels.tif")),
                                      read_labels(tmp / f"ref-{name}"))


@pytest.mark.slow
def test_serve_on_the_embedded_default_runs_on_its_schedule(assets, tmp_path, prefect_api):
    """serve --interval 5, no PREFECT_API_URL: dropped files segmented, runs never overlap, 130."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    text, result = serve_until_done(clean_env(home), tmp_path, str(assets["model"]))
    deployments_runs = [r for r in result["runs"] if r["deployment_id"]]
    assert_never_overlapped(deployments_runs, result["at"])
    check_outputs(result, assets, tmp_path)
    assert "a scheduled run was skipped" in text or len(deployments_runs) >= 2
    # the temporary server's home went with it
    assert not list((home / "tmp").glob("segpipe-prefect-*"))


@pytest.mark.slow
def test_serve_against_prefect_server_start_runs_on_its_schedule(assets, tmp_path, prefect_api):
    """serve --interval 5 on `prefect server start`: files segmented, runs never overlap, 130."""
    home = tmp_path / "server-home"
    home.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
             str(port), "--no-ui", "--analytics-off"],
            env=clean_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _healthy(api), 180, "prefect server start to answer", 0.5)
        serve_home = tmp_path / "serve-home"
        serve_home.mkdir()
        _, result = serve_until_done(clean_env(serve_home, api), tmp_path, str(assets["model"]))
        assert_never_overlapped([r for r in flow_runs(api) if r["deployment_id"]], time.time())
        check_outputs(result, assets, tmp_path)
    finally:
        kill_group(server)
    assert "bulk DML" not in (tmp_path / "server.log").read_text()


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False

