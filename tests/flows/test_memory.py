"""Peak memory of ``segpipe run`` does not grow with the image (benchmarks/memory.py, smaller)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.flows.conftest import cli_env

BENCHMARK = Path(__file__).parents[2] / "benchmarks" / "memory.py"


@pytest.mark.slow
def test_peak_memory_is_flat_from_0_06_to_0_25_gigapixels(prefect_api, tmp_path):
    spec = importlib.util.spec_from_file_location("segpipe_memory_benchmark", BENCHMARK)
    memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory)
    result = memory.benchmark(0.06, 0.25, tile=512, workdir=str(tmp_path),
                              env=cli_env(prefect_api))
    small, large = result["small"], result["large"]
    assert large["gigapixels"] > 4 * small["gigapixels"]
    # the driver and the Dask workers are all in the tree
    assert sum("dask-worker" in k for k in large["per_process_at_peak"]) >= 2
    assert large["peak_pss_bytes"] < memory.LIMIT_BYTES
    assert result["growth_ratio"] < memory.MAX_GROWTH, result
