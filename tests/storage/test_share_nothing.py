"""Runs whose input, work directory, model and output are all in a bucket.

The cluster is a ``dask scheduler`` and two ``dask worker`` processes, each started in its own
empty folder (working directory, HOME, TMPDIR, model cache) and given no path of the test's files:
the only thing they share with the driver is the S3 server. The oracle is the same ``segpipe``
command on local files.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess

import numpy as np
import pytest
import rasterio

from tests.flows.conftest import group_gone, wait_for
from tests.flows.test_distributed import scheduler_workers
from tests.storage.conftest import (
    SECRET,
    VENV_BIN,
    bucket_files_text,
    poll,
    read_labels_from,
    segpipe,
)

ARGS = ("--tile", "32", "--block-pixels", "64", "--device", "cpu", "--quiet")
BIG_ARGS = ("--tile", "32", "--block-pixels", "32", "--batch-size", "1", "--device", "cpu",
            "--quiet", "--workers", "0")
BIG_BLOCKS = 16 * 16


def _driver(s3, tmp_path, prefect_api):
    home = tmp_path / "driver"
    home.mkdir(exist_ok=True)
    env = s3.env(home)
    env["PREFECT_API_URL"] = prefect_api
    return home, env


def _local_labels(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.mark.slow
def test_bucket_to_bucket_on_workers_that_share_nothing_equals_the_local_run(
    prefect_api, s3, remote_assets, share_nothing_workers, tmp_path
):
    a = remote_assets
    home, env = _driver(s3, tmp_path, prefect_api)
    local = segpipe(["run", "--input", a["scene"], "--output", tmp_path / "local.tif",
                     "--model", a["model"], *ARGS, "--workers", "0"], env, home)
    assert local.returncode == 0, local.stderr

    cluster = share_nothing_workers(2)
    workers = scheduler_workers(cluster.address)
    out = "s3://scenes/run1/mask.tif"
    remote = segpipe(["run", "--input", a["scene_url"], "--output", out,
                      "--workdir", "s3://scenes/run1/work", "--model", a["model_url"], *ARGS,
                      "--scheduler", cluster.address, "--keep-workdir",
                      "--summary", home / "summary.json"], env, home)
    assert remote.returncode == 0, remote.stderr

    fs = s3.fs()
    np.testing.assert_array_equal(read_labels_from(fs, out, tmp_path),
                                  _local_labels(tmp_path / "local.tif"))
    summary = json.loads((home / "summary.json").read_text())
    assert summary["blocks"] == summary["blocks_computed"] == 12
    # every block was segmented by the two share-nothing workers, and both took part
    assert set(summary["workers"]) == workers and len(workers) == 2
    # each worker fetched the model by its URL into its own cache, named by its sha256
    sha = hashlib.sha256(a["model"].read_bytes()).hexdigest()
    for worker_home in cluster.worker_homes:
        cached = worker_home / "model-cache" / sha / "unet.pt"
        assert cached.read_bytes() == a["model"].read_bytes()
    # the work directory is objects: arrays, manifest, one marker per block
    names = fs.find("scenes/run1/work")
    assert "scenes/run1/work/manifest.json" in names
    assert sum("/done/" in n for n in names) == 12
    assert fs.exists("scenes/run1/.mask.tif.segpipe.json")  # the sidecar
    assert fs.exists("scenes/run1/mask.quicklook.png")
    # no credential anywhere: what segpipe printed, wrote to the bucket, or the workers logged
    logs = "".join(p.read_text() for p in (tmp_path / "cluster").glob("*.log"))
    written = bucket_files_text(fs, "scenes/run1")
    for text in (remote.stdout, remote.stderr, (home / "summary.json").read_text(), written,
                 logs):
        assert SECRET not in text


@pytest.mark.slow
def test_a_run_killed_mid_segment_resumes_against_the_bucket(
    prefect_api, s3, remote_assets, tmp_path
):
    a = remote_assets
    home, env = _driver(s3, tmp_path, prefect_api)
    local = segpipe(["run", "--input", a["big"], "--output", tmp_path / "local.tif",
                     "--model", a["model"], *BIG_ARGS], env, home)
    assert local.returncode == 0, local.stderr

    out, work = "s3://scenes/run2/mask.tif", "s3://scenes/run2/work"
    base = ["run", "--input", a["big_url"], "--output", out, "--workdir", work,
            "--model", a["model_url"], *BIG_ARGS]
    fs = s3.fs()

    def markers() -> dict[str, bytes]:
        paths = fs.find("scenes/run2/work/done")
        return {p.rsplit("/", 1)[1]: v for p, v in fs.cat(paths).items()} if paths else {}

    proc = subprocess.Popen([str(VENV_BIN / "segpipe"), *base], env=env, cwd=home,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    poll(lambda: len(markers()) >= 10 or proc.poll() is not None, 600, "block markers")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    wait_for(lambda: group_gone(proc.pid), 30, "the killed process group to exit", 0.05)
    assert proc.returncode == -signal.SIGKILL
    done = markers()  # read after the kill: nothing can add to them now
    assert 10 <= len(done) < BIG_BLOCKS
    assert not fs.exists(out.removeprefix("s3://"))

    final = segpipe([*base, "--resume", "--keep-workdir", "--summary", home / "s.json"], env,
                    home)
    assert final.returncode == 0, final.stderr
    np.testing.assert_array_equal(read_labels_from(fs, out, tmp_path),
                                  _local_labels(tmp_path / "local.tif"))
    summary = json.loads((home / "s.json").read_text())
    assert summary["blocks_reused"] == len(done)
    assert summary["blocks_computed"] == BIG_BLOCKS - len(done)
    after = markers()
    assert len(after) == BIG_BLOCKS
    assert all(after[name] == blob for name, blob in done.items())  # written once, kept
