"""The examples in docs/API.md run as written, and write what they segmented."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

DOC = Path(__file__).resolve().parents[2] / "docs" / "API.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_the_numpy_and_the_dataarray_examples():
    assert len(EXAMPLES) == 2 and "xr.DataArray(" in EXAMPLES[1]


@pytest.mark.parametrize("code", EXAMPLES, ids=["numpy-dask", "dataarray"])
def test_api_example_runs(tmp_path, monkeypatch, code):
    """Each example, alone, writes labels.tif; its ``labels`` (NumPy or a DataArray) are that."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    with rasterio.open(tmp_path / "labels.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), np.asarray(namespace["labels"]))
