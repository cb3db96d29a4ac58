"""``segpipe serve``: a deployment with a cron schedule; a triggered run segments only new files."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess

import numpy as np

from segpipe.flows.cli import main
from tests.conftest import smooth_image, write_geotiff
from tests.flows.conftest import SMALL, SMALL_ARGS, cli_env, read_labels, segpipe_cmd, wait_for

DEPLOYMENT = "segpipe-watch/test-watch"


def read_deployment():
    from prefect.client.orchestration import get_client

    async def call():
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name(DEPLOYMENT)
            except Exception:
                return None

    return asyncio.run(call())


def test_served_deployment_has_the_cron_and_a_run_does_only_new_files(
    prefect_api, assets, reference, tmp_path, capsys
):
    watch, out = tmp_path / "scans", tmp_path / "labels"
    watch.mkdir()
    shutil.copy(assets["small"], watch / "a.tif")
    settings = ["--model", assets["model"], *SMALL_ARGS, "--workers", "0"]
    # a.tif was done before (same model and parameters)
    assert main(["run", "--input", str(watch), "--output", str(out), "--quiet",
                 *map(str, settings)]) == 0
    done_before = (out / "a.labels.tif").stat().st_mtime_ns
    write_geotiff(watch / "b.tif", smooth_image(SMALL, "uint8", seed=21))

    env = cli_env(prefect_api) | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        segpipe_cmd("serve", "--watch", watch, "--pattern", "*.tif", "--output", out,
                    "--cron", "0 2 * * *", "--name", "test-watch", "--settle", "0", *settings),
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deployment = wait_for(read_deployment, 120, "the deployment to be created", 0.5)
        crons = [s.schedule.cron for s in deployment.schedules]
        assert crons == ["0 2 * * *"] and all(s.active for s in deployment.schedules)
        assert deployment.parameters["pattern"] == "*.tif"

        from prefect.deployments import run_deployment

        run = run_deployment(DEPLOYMENT, timeout=240, poll_interval=1, as_subflow=False)
        assert run.state.is_completed(), (tmp_path / "serve.log").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert (out / "a.labels.tif").stat().st_mtime_ns == done_before  # not redone
    labels = read_labels(out / "b.labels.tif")
    assert labels.shape == SMALL[1:] and len(np.unique(labels)) > 1
    assert sorted(p.name for p in out.glob("*.tif")) == ["a.labels.tif", "b.labels.tif"]
    np.testing.assert_array_equal(read_labels(out / "a.labels.tif"), reference["small"])
