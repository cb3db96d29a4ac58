"""Runs on a real Dask cluster: ``dask scheduler`` + ``dask worker`` processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
import pytest

from segpipe.flows.cli import main
from segpipe.pipeline.workdir import WorkDir
from tests.flows.conftest import (
    BIG_ARGS,
    SMALL_ARGS,
    cli_env,
    read_labels,
    segpipe_cmd,
    wait_for,
)


def scheduler_workers(address) -> set[str]:
    from distributed import Client

    with Client(address, timeout="30s") as client:
        return set(client.scheduler_info(n_workers=-1)["workers"])


def test_run_on_an_existing_scheduler_uses_its_workers(
    prefect_api, assets, reference, dask_processes, tmp_path, capsys
):
    cluster = dask_processes(workers=2)
    workers = scheduler_workers(cluster.address)
    out = tmp_path / "labels.tif"
    code = main(["run", "--input", str(assets["small"]), "--output", str(out), "--model",
                 str(assets["model"]), *SMALL_ARGS, "--scheduler", cluster.address, "--quiet",
                 "--summary", str(tmp_path / "s.json")])
    assert code == 0, capsys.readouterr().err
    np.testing.assert_array_equal(read_labels(out), reference["small"])
    summary = json.loads((tmp_path / "s.json").read_text())
    # every block was done by one of the cluster's two worker processes, and both took part
    assert set(summary["workers"]) == workers and len(workers) == 2
    assert sum(summary["workers"].values()) == 15
    assert scheduler_workers(cluster.address) == workers  # the cluster is left running


def test_a_worker_killed_mid_run_gives_identical_output(
    prefect_api, assets, reference, dask_processes, tmp_path
):
    cluster = dask_processes(workers=2, nanny=False)  # a killed worker stays dead
    victim = cluster.workers[0]
    out = tmp_path / "labels.tif"
    workdir = tmp_path / ".labels.tif.segpipe"
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        segpipe_cmd("run", "--input", assets["big"], "--output", out, "--model", assets["model"],
                    *BIG_ARGS, "--scheduler", cluster.address, "--keep-workdir", "--quiet",
                    "--summary", tmp_path / "s.json"),
        env=cli_env(prefect_api), stdout=log, stderr=subprocess.STDOUT,
    )

    def victim_has_worked():
        # several blocks by the victim: the last one or two may still be in flight to the
        # scheduler when it dies (those are recomputed), the earlier ones must be kept
        done = WorkDir(str(workdir)).done_blocks()
        return len(done) >= 8 and sum(r.pid == victim.pid for r in done.values()) >= 6

    wait_for(victim_has_worked, 180, "blocks from both workers")
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = len(WorkDir(str(workdir)).done_blocks())
    assert proc.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()
    log.close()
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert killed_at < 256  # the kill happened mid-run

    np.testing.assert_array_equal(read_labels(out), reference["big"])
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["blocks_computed"] == 256 and not summary["failed_blocks"]
    by_pid = {}
    for r in WorkDir(str(workdir)).done_blocks().values():
        by_pid[r.pid] = by_pid.get(r.pid, 0) + 1
    # the survivor did the rest, including what was in flight on the victim
    assert len(by_pid) == 2 and by_pid[victim.pid] < 256 - by_pid[victim.pid]


@pytest.mark.slow
def test_workers_read_a_replaced_input_anew(prefect_api, dask_processes, tmp_path, capsys):
    """The workers' feed threads keep the input open between blocks; a file replaced at the
    same path (as ``serve`` meets it) is read anew, never through the old file's handle. The
    model's labels are the argmax of the bands, so each image's labels are known from numpy."""
    from tests.conftest import smooth_image, write_geotiff
    from tests.pipeline.labelmodel import argmax_model

    model = argmax_model(tmp_path / "argmax.pt2", 3)
    first = smooth_image((3, 96, 130), "uint8", seed=5)
    second = smooth_image((3, 96, 130), "uint8", seed=6)
    assert not np.array_equal(first.argmax(0), second.argmax(0))
    scene = write_geotiff(tmp_path / "scene.tif", first)
    cluster = dask_processes(workers=2)
    out = tmp_path / "labels.tif"
    run = ["run", "--input", str(scene), "--output", str(out), "--model", str(model), *SMALL_ARGS,
           "--scheduler", cluster.address, "--quiet", "--overwrite"]
    assert main(run) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(read_labels(out), first.argmax(0))
    os.replace(write_geotiff(tmp_path / "next.tif", second), scene)
    assert main(run) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(read_labels(out), second.argmax(0))
