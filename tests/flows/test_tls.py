"""Remote clusters over TLS, and the warning for a plain TCP scheduler off this machine.

A CA is made in the test (``tests/flows/certs.py``); ``dask scheduler`` and ``dask worker``
subprocesses on 127.0.0.1 listen with certificates it signed, and the installed ``segpipe`` joins
them with ``--scheduler tls://…`` and its own client certificate. The oracle for the labels is a
run of the same input in the segpipe process (``--workers 0``).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from segpipe.flows.security import is_exposed
from tests.corpus.harness import assert_rejected, run_segpipe, shown, snapshot
from tests.corpus.makers import scene
from tests.flows.certs import make_authority
from tests.flows.conftest import (
    SMALL,
    SMALL_ARGS,
    DaskProcesses,
    TlsNode,
    cli_env,
    read_labels,
    segpipe_cmd,
)

# real processes and CLI runs: in the slow set, so that make test stays under 15 minutes
pytestmark = pytest.mark.slow

BLOCKS = -(-SMALL[1] // 32) * -(-SMALL[2] // 32)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, TlsNode]:
    """The cluster's CA with certificates for its nodes and a client; a stranger of another CA."""
    d = tmp_path_factory.mktemp("pki")
    ca = make_authority(d)
    other = make_authority(d, "another CA")
    node, client, stranger = ca.issue(d, "node"), ca.issue(d, "client"), other.issue(d, "x")
    return {"node": TlsNode(ca.cert, node.cert, node.key),
            "client": TlsNode(ca.cert, client.cert, client.key),
            "stranger": TlsNode(other.cert, stranger.cert, stranger.key)}


@pytest.fixture(scope="module")
def tls_cluster(pki, tmp_path_factory):
    """A scheduler and one worker over TLS on 127.0.0.1 (killed at the end of the module)."""
    cluster = DaskProcesses(tmp_path_factory.mktemp("tls-cluster"), tls=pki["node"])
    try:
        yield cluster.start(workers=1)
    finally:
        cluster.stop()


def segpipe(args: list, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(segpipe_cmd(*args), env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def run_args(assets, out: Path, *more) -> list:
    return ["run", "--input", assets["small"], "--output", out, "--model", assets["model"],
            *SMALL_ARGS, "--quiet", *more]


@pytest.fixture(scope="module")
def in_process(assets, prefect_api, tmp_path_factory) -> np.ndarray:
    """The labels of the input segmented in the segpipe process (``--workers 0``)."""
    out = tmp_path_factory.mktemp("in-process") / "labels.tif"
    result = segpipe(run_args(assets, out, "--workers", "0"), cli_env(prefect_api))
    assert result.returncode == 0, shown(result)
    return read_labels(out)


def test_a_run_on_a_tls_cluster_equals_the_in_process_run(
    prefect_api, assets, pki, tls_cluster, in_process, tmp_path
):
    out, summary = tmp_path / "labels.tif", tmp_path / "summary.json"
    result = segpipe(run_args(assets, out, "--scheduler", tls_cluster.address,
                              *pki["client"].args(), "--summary", summary),
                     cli_env(prefect_api))
    assert result.returncode == 0 and not result.stderr.strip(), shown(result)
    np.testing.assert_array_equal(read_labels(out), in_process)
    workers = json.loads(summary.read_text())["workers"]  # every block done on the cluster
    assert all(w.startswith("tls://127.0.0.1:") for w in workers), workers
    assert sum(workers.values()) == BLOCKS


@pytest.mark.slow
def test_the_tls_files_may_come_from_dask_configuration(
    prefect_api, assets, pki, tls_cluster, in_process, tmp_path
):
    client = pki["client"]
    env = cli_env(prefect_api) | {
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(client.ca_file),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(client.cert),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(client.key),
    }
    out = tmp_path / "labels.tif"
    result = segpipe(run_args(assets, out, "--scheduler", tls_cluster.address), env)
    assert result.returncode == 0 and not result.stderr.strip(), shown(result)
    np.testing.assert_array_equal(read_labels(out), in_process)


def test_a_client_without_the_clusters_ca_is_refused(
    prefect_api, assets, pki, tls_cluster, tmp_path
):
    out = tmp_path / "labels.tif"
    result = segpipe(run_args(assets, out, "--scheduler", tls_cluster.address,
                              *pki["stranger"].args()), cli_env(prefect_api))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, shown(result)
    assert lines[0].startswith(f"error: --scheduler {tls_cluster.address}: cannot connect")
    assert "TLS" in lines[0] and "--tls-ca-file" in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not out.exists()


def _refusals(pki: dict[str, TlsNode]) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    c = pki["client"]
    return {
        "without-a-scheduler": (["--tls-ca-file", str(c.ca_file)],
                                ("--tls-ca-file", "tls://")),
        "with-a-tcp-scheduler": (["--scheduler", "tcp://127.0.0.1:1", *c.args()],
                                 ("--tls-ca-file, --tls-cert, --tls-key", "tls://")),
        "a-missing-file": (["--scheduler", "tls://127.0.0.1:1", "--tls-ca-file", "missing.pem",
                            "--tls-cert", str(c.cert)], ("--tls-ca-file missing.pem",
                                                         "not found")),
        "a-folder": (["--scheduler", "tls://127.0.0.1:1", "--tls-cert", "."],
                     ("--tls-cert .", "not a file")),
        "no-ca-anywhere": (["--scheduler", "tls://127.0.0.1:1"],
                           ("--tls-ca-file and --tls-cert", "distributed.comm.tls.ca-file")),
        "a-key-that-is-not-pem": (["--scheduler", "tls://127.0.0.1:1", "--tls-ca-file",
                                   str(c.ca_file), "--tls-cert", str(c.cert), "--tls-key",
                                   "scene.tif"], ("--tls-key", "cannot be loaded")),
    }


@pytest.mark.parametrize("case", ["without-a-scheduler", "with-a-tcp-scheduler",
                                  "a-missing-file", "a-folder", "no-ca-anywhere",
                                  "a-key-that-is-not-pem"])
def test_tls_options_are_refused_with_one_line(case, prefect_api, pki, tmp_path):
    args, words = _refusals(pki)[case]
    scene(tmp_path)
    before = snapshot(tmp_path)
    result = run_segpipe(["run", "--input", "scene.tif", "--output", "out.tif", "--quiet",
                          "--model", "unet", "--random-weights", *args], tmp_path,
                         api=prefect_api, env={"DASK_CONFIG": str(tmp_path / "no-config")})
    assert_rejected(result, tmp_path, before, tmp_path / "out.tif")
    for word in words:
        assert word in result.stderr, shown(result)


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine other than loopback (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # TEST-NET-3: only picks the outgoing interface
        except OSError:
            return None
        ip = str(s.getsockname()[0])
    return None if ipaddress.ip_address(ip).is_loopback else ip


@pytest.mark.slow  # its own cluster and run; the address rule is tested below in a millisecond
def test_a_plain_tcp_scheduler_off_loopback_gets_one_warning(
    prefect_api, assets, in_process, dask_processes, tmp_path
):
    ip = non_loopback_ipv4()
    out = tmp_path / "labels.tif"
    if ip is not None:  # a real scheduler on this machine's own network address
        cluster = dask_processes(workers=1, host=ip)
        result = segpipe(run_args(assets, out, "--scheduler", cluster.address),
                         cli_env(prefect_api))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 0 and len(lines) == 1, shown(result)
        np.testing.assert_array_equal(read_labels(out), in_process)
    else:  # no such address: the warning comes before the connection, which then fails
        address = "tcp://203.0.113.1:8786"
        result = segpipe(run_args(assets, out, "--scheduler", address), cli_env(prefect_api))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 2, shown(result)
        assert lines[1].startswith(f"error: --scheduler {address}: cannot connect")
    assert lines[0].startswith("warning: --scheduler tcp://"), shown(result)
    assert "anyone who can reach it can run code on its workers" in lines[0]


@pytest.mark.parametrize(("address", "exposed"), [
    ("tcp://127.0.0.1:8786", False), ("tcp://localhost:8786", False),
    ("tcp://[::1]:8786", False), ("127.0.0.2:8786", False),
    ("tls://203.0.113.7:8786", False), ("tcp://203.0.113.7:8786", True),
    ("10.1.2.3:8786", True), ("ws://[2001:db8::1]:8786", True),
    ("tcp://no-such-host.invalid:8786", True),
])
def test_which_scheduler_addresses_are_exposed(address, exposed):
    assert is_exposed(address) is exposed
