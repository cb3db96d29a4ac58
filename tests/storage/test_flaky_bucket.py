"""Runs on a bucket behind a flaky proxy: throttling, server errors, cut bodies, a stall, a 403.

The S3 server is the session's moto server; segpipe reaches it only through
:class:`~tests.storage.flaky_proxy.FlakyProxy` (``AWS_ENDPOINT_URL``), which answers about 5 %
of the requests 503 SlowDown or 500 InternalError, cuts some responses mid-body and holds one
back 10 s (under the 20 s read timeout: waited out, not retried). The oracles are the labels of
the same run on a proxy that forwards everything, read back with s3fs and rasterio, and of the
same command on the local files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.storage.conftest import read_labels_from, segpipe
from tests.storage.flaky_proxy import Faults, FlakyProxy

ARGS = ("--tile", "64", "--block-pixels", "64", "--device", "cpu", "--workers", "0")
#: seeded: the same request stream meets the same faults on every run
FAULTS = Faults(seed=21, errors=0.05, resets=0.03, stall_rate=0.05, stalls=1, stall_seconds=10)


@dataclass(frozen=True)
class Reference:
    clean: np.ndarray  # labels of the run on the bucket through a proxy without faults
    local: np.ndarray  # labels of the same command on the local files
    requests: int  # how many requests the clean run made


def _env(s3, home: Path, proxy: FlakyProxy, prefect_api: str) -> dict[str, str]:
    env = s3.env(home)
    env.update(AWS_ENDPOINT_URL=proxy.endpoint, PREFECT_API_URL=prefect_api)
    return env


def _run(a, out: str, env, home: Path, *extra: str):
    return segpipe(["run", "--input", a["scene_url"], "--output", out, "--model", a["model_url"],
                    *ARGS, *extra], env, home)


@pytest.fixture(scope="module")
def reference(s3, remote_assets, prefect_api, tmp_path_factory) -> Reference:
    a = remote_assets
    home = tmp_path_factory.mktemp("flaky-reference")
    with FlakyProxy(s3.endpoint) as proxy:
        env = _env(s3, home, proxy, prefect_api)
        local = segpipe(["run", "--input", a["scene"], "--output", home / "local.tif",
                         "--model", a["model"], *ARGS, "--quiet"], env, home)
        assert local.returncode == 0, local.stderr
        clean = _run(a, "s3://scenes/flaky-clean/mask.tif", env, home, "--quiet")
        assert clean.returncode == 0, clean.stderr
        assert proxy.counts.keys() == {"forward"}
        requests = proxy.requests
    with rasterio.open(home / "local.tif") as ds:
        local_labels = ds.read(1)
    clean_labels = read_labels_from(s3.fs(), "s3://scenes/flaky-clean/mask.tif", home)
    np.testing.assert_array_equal(clean_labels, local_labels)
    return Reference(clean_labels, local_labels, requests)


@pytest.mark.slow
def test_a_run_through_a_flaky_proxy_gives_the_clean_labels(
    s3, remote_assets, prefect_api, reference, tmp_path
):
    """A bucket run through ~5 % 503/500, cut bodies and a 10 s stall: exit 0, clean labels."""
    out = "s3://scenes/flaky/mask.tif"
    with FlakyProxy(s3.endpoint, FAULTS) as proxy:
        result = _run(remote_assets, out, _env(s3, tmp_path, proxy, prefect_api), tmp_path,
                      "--verbose")
        counts = dict(proxy.counts)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = read_labels_from(s3.fs(), out, tmp_path)
    np.testing.assert_array_equal(labels, reference.clean)
    np.testing.assert_array_equal(labels, reference.local)
    # the faults did happen: each kind at least once
    assert {"503", "500", "reset", "stall"} <= counts.keys(), counts
    retries = [line for line in result.stderr.splitlines() if "retrying s3://" in line]
    assert retries, result.stderr[-3000:]
    assert any("SlowDown (HTTP 503) (attempt 1 of 5)" in line for line in retries), retries
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_access_lost_midway_stops_the_run_and_resume_finishes_it(
    s3, remote_assets, prefect_api, reference, tmp_path
):
    """A permanent 403 midway: exit 1 naming the URL, no output; --resume then gives the labels."""
    out = "s3://scenes/denied/mask.tif"
    with FlakyProxy(s3.endpoint) as proxy:
        env = _env(s3, tmp_path, proxy, prefect_api)
        proxy.deny(after=reference.requests // 2)
        failed = _run(remote_assets, out, env, tmp_path, "--quiet")
        assert failed.returncode == 1, failed.stderr
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), failed.stderr
        assert "s3://scenes/denied/" in lines[0] and "access denied" in lines[0], lines[0]
        assert not s3.fs().exists(out.removeprefix("s3://"))
        proxy.allow()
        resumed = _run(remote_assets, out, env, tmp_path, "--quiet", "--resume",
                       "--summary", tmp_path / "summary.json")
        assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(read_labels_from(s3.fs(), out, tmp_path), reference.clean)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # the denial struck mid-segment (half the clean run's requests): finished blocks were kept
    assert summary["blocks_reused"] >= 1
    assert summary["blocks_reused"] + summary["blocks_computed"] == summary["blocks"]
