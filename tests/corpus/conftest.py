"""Fixtures of the bad-input corpus: one Prefect server for the test session."""

from __future__ import annotations

import pytest

from tests.corpus.harness import prefect_server


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """The API URL of the Prefect server the corpus runs segpipe against (started once)."""
    return prefect_server()
