"""Prefect's temporary server is started first, used by the run, and stopped at its end."""

from __future__ import annotations

import os
import subprocess

import psutil
import pytest

from segpipe.flows import startup
from tests.flows.conftest import SMALL_ARGS, segpipe_cmd


def test_api_configured_from_environment_or_profile(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    profiles = tmp_path / "profiles.toml"
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    profiles.write_text('active = "local"\n[profiles.local]\nPREFECT_LOGGING_LEVEL = "INFO"\n')
    assert not startup._profile_setting("PREFECT_API_URL")
    profiles.write_text('active = "remote"\n[profiles.remote]\n'
                        'PREFECT_API_URL = "http://127.0.0.1:4200/api"\n')
    assert startup._profile_setting("PREFECT_API_URL") == "http://127.0.0.1:4200/api"
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    assert startup.api_configured()


def _servers_of(home: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "uvicorn" in " ".join(p.info["cmdline"] or []) and \
                    p.environ().get("PREFECT_HOME") == home:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _unconfigured_env(tmp_path) -> tuple[str, dict[str, str]]:
    """A PREFECT_HOME of its own and an environment with no Prefect API configured."""
    home = str(tmp_path / "prefect-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=home, PREFECT_PROFILES_PATH=str(tmp_path / "none.toml"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return home, env


def test_a_refused_input_stops_the_server_it_started_first(assets, tmp_path):
    """The server is spawned before the inputs are checked; a refusal leaves none behind."""
    home, env = _unconfigured_env(tmp_path)
    done = subprocess.run(
        segpipe_cmd("run", "--input", tmp_path / "missing.tif", "--output", tmp_path / "o.tif",
                    "--model", assets["model"], "--workers", "0", *SMALL_ARGS),
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: --input {tmp_path / 'missing.tif'}: file not found; check the path"]
    assert _servers_of(home) == []


@pytest.mark.slow
def test_run_without_a_configured_server_starts_and_stops_its_own(assets, tmp_path):
    home, env = _unconfigured_env(tmp_path)
    out = tmp_path / "out.tif"
    done = subprocess.run(
        segpipe_cmd("run", "--input", assets["small"], "--output", out, "--model",
                    assets["model"], "--workers", "0", "--quiet", *SMALL_ARGS),
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    assert (tmp_path / "prefect-home").is_dir()  # the server's database lives there
    assert _servers_of(home) == []  # stopped with the run


def test_auto_executor_runs_small_inputs_here_and_large_ones_on_the_cluster(
    assets, tmp_path, monkeypatch
):
    from segpipe.flows import autoexec
    from segpipe.pipeline.stages import ingest_stage, plan_stage, stats_stage
    from tests.flows.conftest import options_for

    plan = stats_stage(_ingested(plan_stage(options_for(
        assets["small"], tmp_path / "o.tif", assets["model"], SMALL_ARGS)), ingest_stage))
    blocks = list(plan.tiles.block_indices())
    sent = []

    class FakeDask:
        def __init__(self, cluster):
            self.cluster = cluster

        def run(self, job, todo, run_id, sink):
            sent.append(list(todo))

    monkeypatch.setattr(autoexec, "DaskExecutor", FakeDask)
    records = []
    sink = type("Sink", (), {"done": lambda self, r: records.append(r),
                             "failed": lambda self, i, m: records.append(m),
                             "idle": lambda self: None})()
    executor = autoexec.AutoExecutor(cluster=None)
    executor.run(plan.job(), blocks, "r1", sink)  # 96 × 130 pixels: here
    assert sent == [] and len(records) == len(blocks) == 15
    assert {r.worker for r in records} == {"local"}
    monkeypatch.setattr(autoexec, "IN_PROCESS_MAX_PIXELS", 96 * 130 - 1)
    monkeypatch.setattr(autoexec, "available_cores", lambda: 8)
    executor.run(plan.job(), blocks, "r2", sink)  # one pixel too many: the cluster
    assert sent == [blocks] and len(records) == 15
    monkeypatch.setattr(autoexec, "available_cores", lambda: 2)
    executor.run(plan.job(), blocks, "r3", sink)  # two cores, no GPU: here again
    assert sent == [blocks] and len(records) == 30


def _ingested(plan, ingest_stage):
    ingest_stage(plan)
    return plan


def test_the_server_dies_with_a_killed_segpipe(tmp_path):
    import sys

    code = ("import time; from segpipe.flows.startup import TemporaryServer; "
            "s = TemporaryServer(); print(s.process.pid, flush=True); time.sleep(120)")
    env = dict(os.environ, PREFECT_HOME=str(tmp_path), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=env)
    server = psutil.Process(int(parent.stdout.readline()))
    parent.kill()  # SIGKILL: no atexit, no cleanup in segpipe
    parent.wait()
    gone, alive = psutil.wait_procs([server], timeout=30)
    assert server in gone and not alive
