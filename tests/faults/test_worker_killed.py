"""A Dask worker process of the run's LocalCluster killed mid-run (``kill -9``): its nanny starts
another, the block it was running is recomputed elsewhere, and the run completes with the labels
of a clean run. The same on an existing cluster whose killed worker stays dead (``dask worker
--no-nanny`` with ``--scheduler``): tests/flows/test_distributed.py::
test_a_worker_killed_mid_run_gives_identical_output.

The kill lands mid-segment: both workers are held before their 6th label chunk (10 of 64 blocks
done, one block in flight on each). The test waits until the driver itself reports the stall
with 10 of 64 done (``--stall-after 1``), so every finished block's result has reached it (a
worker that dies holding a finished block's unreceived result makes Dask recompute that block,
with identical content), then kills one worker and lets the other go on.
"""

from __future__ import annotations

import json
import os
import signal

import psutil

from segpipe.pipeline.workdir import WorkDir
from tests.faults.conftest import (
    BLOCKS,
    TILE_ARGS,
    assert_same_as_reference,
    fault_env,
    markers,
    segpipe_cmd,
    start,
    tree,
    wait_for,
)


def test_a_local_cluster_worker_killed_mid_run_gives_identical_labels(
    prefect_api, fault_assets, tmp_path
):
    """A LocalCluster worker killed -9 mid-run: exit 0, identical labels, its done blocks kept."""
    out = tmp_path / "labels.tif"
    workdir = WorkDir(str(tmp_path / ".labels.tif.segpipe"))
    release = tmp_path / "release"
    proc = start(
        segpipe_cmd("run", "--input", fault_assets["scene"], "--output", out, "--model",
                    fault_assets["model"], *TILE_ARGS, "--workers", "2", "--keep-workdir",
                    "--quiet", "--stall-after", "1", "--summary", tmp_path / "s.json"),
        fault_env(prefect_api, pause_chunk="labels.zarr:6", release=release),
        tmp_path / "run.log",
    )
    log = tmp_path / "run.log"
    wait_for(lambda: "(10/64 done)" in log.read_text() or proc.poll() is not None, 240,
             "the driver to report 10 blocks done and no more")
    before = markers(workdir)
    assert len(before) == 10
    pids = {pid for _, pid, _ in before.values()}
    assert len(pids) == 2 and pids <= {p.pid for p in tree(proc.pid)}  # the run's two workers
    victim = psutil.Process(min(pids))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    release.touch()  # let the survivor (and the nanny's new worker) go on

    assert proc.wait(timeout=300) == 0, log.read_text()
    assert_same_as_reference(out, fault_assets["reference"])
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["blocks_computed"] == BLOCKS and not summary["failed_blocks"]
    after = markers(workdir)
    assert len(after) == BLOCKS and {k: after[k] for k in before} == before
    # the victim did nothing after its death; the in-flight block was done by another process
    assert sum(pid == victim.pid for _, pid, _ in after.values()) == 5
