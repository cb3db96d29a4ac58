"""The example in docs/API.md runs as written, and writes what it segmented."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import rasterio

DOC = Path(__file__).resolve().parents[2] / "docs" / "API.md"


def test_api_example_runs(tmp_path, monkeypatch):
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    with rasterio.open(tmp_path / "labels.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), namespace["labels"])
