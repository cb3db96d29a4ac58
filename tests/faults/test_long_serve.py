"""A long serve of 200 inputs over time: each segmented once, whole; PSS, fds flat; SIGTERM stops.

``segpipe serve --interval 2 --settle 2`` on the embedded default (no ``PREFECT_API_URL``, no
manual trigger) is fed 200 small GeoTIFFs, 4 a second, 5 of them written in pieces while serve
already sees them (:mod:`tests.flows.serve_soak`). Thresholds: every input segmented exactly
once (no output rewritten) and from its complete file (labels equal ``segpipe run``'s on the
same image); the serve process's PSS and open descriptors while the last 50 inputs are finished
within 10 % of the first 50; SIGTERM while a run is going: exit 130 within 30 s and no process
left.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from segpipe.flows.cli import main
from tests.flows import serve_soak
from tests.flows.conftest import SMALL_ARGS, read_labels

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # 200 inputs: minutes


def test_a_long_serve_segments_each_input_once_whole_with_flat_memory_and_stops_on_sigterm(
    prefect_api, tmp_path
):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    soak, out = serve_soak.run_soak(tmp_path, env)
    figures = soak.figures()
    (tmp_path / "figures.json").write_text(str(figures))

    assert soak.rewritten == [], f"segmented more than once: {soak.rewritten}"
    assert soak.exit_code == 130 and soak.stop_seconds <= serve_soak.STOP_SECONDS, figures
    assert not soak.left, "a process of serve was left after SIGTERM"
    assert figures["pss_ratio"] <= 1.10, figures
    assert figures["fds_ratio"] <= 1.10, figures

    reference = _reference(tmp_path / "sources", tmp_path)
    for i in range(serve_soak.INPUTS):
        got = read_labels(out / serve_soak.output_name(i))
        np.testing.assert_array_equal(got, reference[i % serve_soak.DISTINCT],
                                      err_msg=serve_soak.name(i))


def _reference(sources: Path, tmp: Path) -> list[np.ndarray]:
    """The sources segmented by ``segpipe run`` in one batch (each complete file)."""
    ref = tmp / "reference"
    assert main(["run", "--input", str(sources), "--pattern", "*.tif", "--output", str(ref),
                 "--quiet", "--model", str(tmp / "model.pt"), *SMALL_ARGS, "--workers", "0"]) == 0
    return [read_labels(ref / f"s{k}.labels.tif") for k in range(serve_soak.DISTINCT)]
