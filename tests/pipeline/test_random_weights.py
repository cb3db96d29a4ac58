"""An architecture name runs with random weights only when ``random_weights`` asks for it.

The command-line contract (exit 2, one line, nothing written) is checked through the installed
script in ``tests/test_cli_contract.py``; these are the library's rules.
"""

from __future__ import annotations

import pytest

from segpipe.models.foundation import InputError
from segpipe.pipeline.options import InferenceOptions, RunOptions
from segpipe.pipeline.plan import check_model_name, preflight
from tests.conftest import smooth_image, write_geotiff


def test_an_architecture_name_alone_is_refused(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 16, 16), "uint8"))
    options = RunOptions.of(str(src), str(tmp_path / "out.tif"), model="unet", device="cpu")
    with pytest.raises(InputError, match=r"--model unet is an architecture.*--random-weights"):
        preflight(options)
    check_model_name(InferenceOptions(model="unet", random_weights=True))  # allowed


def test_random_weights_needs_an_architecture_name(tmp_path):
    with pytest.raises(InputError, match="--random-weights needs an architecture name"):
        InferenceOptions(random_weights=True)
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    with pytest.raises(InputError, match="is a model file: drop --random-weights"):
        check_model_name(InferenceOptions(model=str(model), random_weights=True))
