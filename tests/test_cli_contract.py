"""The command line as a user meets it: the installed ``segpipe`` script, in a subprocess.

The bad-usage and bad-input corpus (exit 2, one ``error:`` line, nothing written) is in
``tests/corpus/``, with its harness (``tests/corpus/harness.py``: :func:`run_segpipe`,
:func:`snapshot`, :func:`assert_rejected`, which other tests import from here too). This
module holds the rest: a valid call succeeds (so the harness can tell a rejection from a broken
run), ``--version`` and ``--help``, and the import cost of the command line.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import rasterio

from tests.corpus.harness import (  # noqa: F401  (assert_rejected, snapshot: imported from here)
    TIMEOUT_S,
    assert_rejected,
    run_segpipe,
    shown,
    snapshot,
)
from tests.corpus.makers import CRS_UTM_33N, scene

COMMON = ["--workers", "0", "--quiet"]


def test_success_control(tmp_path: Path):
    """A valid call succeeds, on Prefect's temporary server, and says nothing on stderr."""
    src = scene(tmp_path)
    args = ["run", "--input", src.name, "--output", "out.tif", *COMMON, "--model", "unet",
            "--random-weights"]
    result = run_segpipe(args, cwd=tmp_path)
    assert result.returncode == 0, shown(result)
    assert not any(line.startswith("error:") for line in result.stderr.splitlines()), shown(result)
    assert "Traceback" not in result.stdout + result.stderr, shown(result)
    with rasterio.open(src) as source, rasterio.open(tmp_path / "out.tif") as out:
        assert out.crs == source.crs == CRS_UTM_33N
        assert out.transform == source.transform
        assert (out.width, out.height) == (source.width, source.height)


def test_cli_module_does_not_import_torch(tmp_path: Path):
    code = "import sys, segpipe.flows.cli; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", result.stdout + result.stderr


def test_version_and_help(tmp_path: Path):
    version = run_segpipe(["--version"], cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert importlib.metadata.version("segpipe") in version.stdout, version.stdout

    helped = run_segpipe(["--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    lines = helped.stdout.splitlines()
    assert "Commands:" in lines, helped.stdout
    listed = {
        line.split()[0] for line in lines[lines.index("Commands:") + 1:] if line.strip()
    }
    assert {"run", "inspect", "models", "serve"} <= listed, helped.stdout
