"""The retry policy reaches every client, bounds the tries, and the fault proxy is transparent.

In-process tests use s3fs only: GDAL holds the GIL while it waits on the network, so a proxy
thread in the same process could not answer it (the CLI tests run segpipe in a subprocess).
"""

from __future__ import annotations

import os

import pytest
import rasterio
import s3fs

from segpipe.models.objectstore import url_to_fs
from segpipe.models.retrypolicy import RetryMode, RetryPolicy, retry_policy
from segpipe.pipeline import storage
from segpipe.pipeline.io.remote import gdal_env
from tests.storage.flaky_proxy import NO_FAULTS, Faults, FlakyProxy

# real processes and CLI runs: in the slow set, so that make test stays under 15 minutes
pytestmark = pytest.mark.slow


@pytest.fixture
def via(s3, s3_env, monkeypatch):
    """Point this process's AWS settings at a proxy in front of the server."""
    proxies: list[FlakyProxy] = []

    def start(faults: Faults = NO_FAULTS) -> FlakyProxy:
        proxy = FlakyProxy(s3.endpoint, faults)
        proxies.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        s3fs.S3FileSystem.clear_instance_cache()
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()
    s3fs.S3FileSystem.clear_instance_cache()


def test_the_aws_retry_settings_override_the_defaults(monkeypatch):
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    assert retry_policy() == RetryPolicy()
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    policy = retry_policy()
    assert (policy.attempts, policy.mode) == (3, RetryMode.ADAPTIVE)
    assert policy.botocore_config()["retries"] == {"total_max_attempts": 3, "mode": "adaptive"}
    assert policy.gdal_options()["GDAL_HTTP_MAX_RETRY"] == "2"
    monkeypatch.setenv("AWS_RETRY_MODE", "legacy")  # botocore's old mode: segpipe's standard
    assert retry_policy().mode is RetryMode.STANDARD
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_s3fs_and_gdal_get_the_policy_in_their_config_not_in_the_environment(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    fs, inner = url_to_fs("s3://bucket/key.tif")
    assert inner == "bucket/key.tif" and fs.retries == 4
    client = fs.s3  # the botocore client s3fs made
    assert client.meta.config.retries == {"total_max_attempts": 4, "mode": "standard"}
    assert client.meta.config.read_timeout == RetryPolicy.read_timeout
    assert client.meta.config.connect_timeout == RetryPolicy.connect_timeout
    with gdal_env("s3://bucket/key.tif"):
        options = rasterio.env.getenv()
        assert options["GDAL_HTTP_MAX_RETRY"] == "3"
        assert options["GDAL_HTTP_TIMEOUT"] == f"{RetryPolicy.request_timeout:g}"
    assert not any(k.startswith("GDAL_HTTP") for k in os.environ)


def test_the_proxy_forwards_multipart_uploads_and_range_reads_byte_for_byte(s3, via):
    proxy = via()
    s3.bucket("forwarded")
    fs, _ = url_to_fs("s3://forwarded/big")
    data = os.urandom(11 << 20)
    with fs.open("forwarded/big", "wb", block_size=5 << 20) as f:  # three parts
        for i in range(0, len(data), 1 << 20):
            f.write(data[i:i + (1 << 20)])
    assert s3.fs().cat_file("forwarded/big") == data  # read back past the proxy
    assert fs.cat_file("forwarded/big", start=12345, end=6 << 20) == data[12345:6 << 20]
    methods = [m for m, _, _ in proxy.log]
    assert methods.count("PUT") >= 2 and "POST" in methods  # parts, create and complete
    assert set(proxy.counts) == {"forward"}


def test_faults_are_retried_and_logged_and_the_bytes_are_right(s3, via, caplog):
    s3.bucket("faulty")
    data = os.urandom(300_000)
    s3.fs().pipe_file("faulty/blob", data)
    proxy = via(Faults(seed=5, errors=0.2, resets=0.2, stalls=0))
    caplog.set_level("INFO", logger="segpipe.storage")
    for start in range(0, len(data), 30_000):
        assert storage.read_bytes("s3://faulty/blob")[start:start + 30_000] == (
            data[start:start + 30_000]
        )
    assert {"503", "500", "reset"} <= proxy.counts.keys(), proxy.counts
    messages = [r.getMessage() for r in caplog.records if r.name == "segpipe.storage"]
    assert any(m.startswith("retrying s3://faulty/blob after ") and "(attempt 1 of 5)" in m
               for m in messages), messages


def test_retries_are_bounded(s3, via, monkeypatch):
    s3.bucket("always-busy")
    s3.fs().pipe_file("always-busy/blob", b"x")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    proxy = via(Faults(errors=1.0, resets=0, stalls=0))  # every request answered 503 or 500
    with pytest.raises(OSError):
        storage.read_bytes("s3://always-busy/blob")
    # botocore's 2 tries, each repeated by s3fs's loop when throttled: at most 2 × 2
    assert 2 <= proxy.requests <= 4, proxy.log


def test_a_stall_past_the_read_timeout_is_abandoned_and_retried(s3, via):
    s3.bucket("stalled")
    s3.fs().pipe_file("stalled/blob", b"payload")
    proxy = via(Faults(errors=0, resets=0, stall_rate=1.0, stalls=1, stall_seconds=4))
    fs = url_to_fs("s3://stalled/blob")[0]
    impatient = type(fs)(policy=RetryPolicy(read_timeout=1), skip_instance_cache=True)
    assert impatient.cat_file("stalled/blob") == b"payload"
    assert proxy.counts["stall"] == 1 and proxy.counts["forward"] >= 1, proxy.log
