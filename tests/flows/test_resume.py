"""``kill -9`` at three points of progress, then ``--resume``: identical labels, no block redone."""

from __future__ import annotations

import json
import subprocess

import numpy as np

from segpipe.pipeline.workdir import WorkDir
from tests.flows.conftest import (
    BIG_ARGS,
    cli_env,
    group_gone,
    kill_group,
    read_labels,
    segpipe_cmd,
    wait_for,
)

TOTAL = 256


def test_kill_9_three_times_then_resume_gives_identical_labels(
    prefect_api, assets, reference, tmp_path
):
    out = tmp_path / "labels.tif"
    workdir = WorkDir(str(tmp_path / ".labels.tif.segpipe"))
    base = segpipe_cmd("run", "--input", assets["big"], "--output", out, "--model",
                       assets["model"], *BIG_ARGS, "--workers", "2", "--quiet")
    env = cli_env(prefect_api)
    snapshots = []
    for i, target in enumerate((1, TOTAL // 2, TOTAL * 7 // 8)):
        args = base + (["--resume"] if i else [])
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda t=target, p=proc: len(workdir.done_blocks()) >= t or p.poll() is not None,
                 240, f"{target} blocks done")
        kill_group(proc)  # kill -9 the run, its Dask workers and anything else it started
        assert proc.returncode == -9, "the run ended before it could be killed"
        snapshot = {k: r.run_id for k, r in workdir.done_blocks().items()}
        assert target <= len(snapshot) < TOTAL
        assert set(snapshots[-1]) <= set(snapshot) if snapshots else True
        snapshots.append(snapshot)
        assert not out.exists()

    final = subprocess.run(
        [*base, "--resume", "--keep-workdir", "--summary", tmp_path / "s.json"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert final.returncode == 0, final.stderr
    np.testing.assert_array_equal(read_labels(out), reference["big"])
    # the GeoTIFF holds no time stamp: even its bytes equal the uninterrupted run's
    assert out.read_bytes() == reference["big_file"].read_bytes()
    summary = json.loads((tmp_path / "s.json").read_text())
    last = snapshots[-1]
    assert summary["blocks_reused"] == len(last)
    assert summary["blocks_computed"] == TOTAL - len(last)
    records = workdir.done_blocks()
    assert len(records) == TOTAL
    # every block finished before a kill kept the marker of the attempt that did it: not redone
    for snapshot in snapshots:
        assert all(records[k].run_id == run_id for k, run_id in snapshot.items())
    # four attempts wrote blocks; the three interrupted ones each left some done
    assert len({r.run_id for r in records.values()}) == 4


def test_sigterm_stops_cleanly_with_130_and_the_run_resumes_identically(
    prefect_api, assets, reference, tmp_path
):
    import os
    import signal

    out = tmp_path / "labels.tif"
    workdir = WorkDir(str(tmp_path / ".labels.tif.segpipe"))
    base = segpipe_cmd("run", "--input", assets["big"], "--output", out, "--model",
                       assets["model"], *BIG_ARGS, "--workers", "2", "--quiet")
    proc = subprocess.Popen(base, env=cli_env(prefect_api), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: len(workdir.done_blocks()) >= 8 or proc.poll() is not None, 240,
             "8 blocks done")
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)  # a clean stop within seconds, not a hang
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    # Dask workers and Prefect's server went with it
    wait_for(lambda: group_gone(proc.pid), 30, "no process of the run left", interval=0.1)
    assert not out.exists() and 0 < len(workdir.done_blocks()) < TOTAL
    final = subprocess.run([*base, "--resume"], env=cli_env(prefect_api), capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert out.read_bytes() == reference["big_file"].read_bytes()
