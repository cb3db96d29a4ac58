"""``--model-sha256`` pins ``--model``: its bytes are hashed before anything reads them as a model.

The hashes are computed here with hashlib over the file's bytes (the oracle); the malicious
checkpoint of ``tests/test_model_files_are_data.py`` would create ``PWNED`` if it were
unpickled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import rasterio

from tests.corpus.harness import assert_rejected, run_segpipe, shown, snapshot
from tests.corpus.makers import scene, tiny_model
from tests.test_model_files_are_data import MARK, checkpoint_pickle

# real processes and CLI runs: in the slow set, so that make test stays under 15 minutes
pytestmark = pytest.mark.slow

COMMON = ["--workers", "0", "--quiet", "--input", "scene.tif", "--output", "mask.tif"]


@pytest.fixture(scope="module")
def prefect_api() -> str:
    from tests.corpus.harness import prefect_server

    return prefect_server()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_right_hash_runs_and_is_the_one_recorded(tmp_path: Path, prefect_api: str):
    scene(tmp_path)
    model = tiny_model(tmp_path)
    pin = sha256_of(tmp_path / model).upper()  # as some tools print it
    result = run_segpipe(["run", *COMMON, "--model", model, "--model-sha256", pin], tmp_path,
                         api=prefect_api)
    assert result.returncode == 0 and not result.stderr.strip(), shown(result)
    with rasterio.open(tmp_path / "mask.tif") as out:
        assert out.tags()["SEGPIPE_MODEL_SHA256"] == pin.lower()


def test_a_wrong_hash_is_refused_naming_the_file_and_both_hashes(
    tmp_path: Path, prefect_api: str
):
    scene(tmp_path)
    model = tiny_model(tmp_path)
    result = refused_by_pin(tmp_path, model, "ab" * 32, prefect_api)
    assert model in result.stderr, shown(result)


def test_a_malicious_pickle_with_a_wrong_hash_is_never_unpickled(
    tmp_path: Path, prefect_api: str
):
    scene(tmp_path)
    model = checkpoint_pickle(tmp_path)
    # refused by the pin (both hashes named), not by the loader's checks, which come later
    refused_by_pin(tmp_path, model, "0" * 64, prefect_api)
    assert not (tmp_path / MARK).exists()


def refused_by_pin(tmp_path: Path, model: str, pin: str, api: str):
    """Run with a wrong ``pin``: refused (exit 2, nothing written), both hashes named."""
    actual = sha256_of(tmp_path / model)
    before = snapshot(tmp_path)
    result = run_segpipe(["run", *COMMON, "--model", model, "--model-sha256", pin], tmp_path,
                         api=api)
    assert_rejected(result, tmp_path, before, tmp_path / "mask.tif")
    assert actual in result.stderr and pin in result.stderr, shown(result)
    return result


@pytest.mark.parametrize(("args", "words"), [
    (["--model-sha256", "ab" * 32], ("--model-sha256", "--model")),
    (["--model", "unet", "--random-weights", "--model-sha256", "ab" * 32],
     ("--model-sha256", "no file to pin")),
    (["--model", "tiny.pt", "--model-sha256", "not-a-hash"], ("--model-sha256", "64 hex")),
])
def test_model_sha256_needs_a_model_file_and_a_sha256(
    args: list[str], words: tuple[str, ...], tmp_path: Path, prefect_api: str
):
    scene(tmp_path)
    tiny_model(tmp_path)
    before = snapshot(tmp_path)
    result = run_segpipe(["run", *COMMON, *args], tmp_path, api=prefect_api)
    assert_rejected(result, tmp_path, before, tmp_path / "mask.tif")
    for word in words:
        assert word in result.stderr, shown(result)
