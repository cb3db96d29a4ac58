"""What the API tests share: the CLI's run on the same image as the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one


def cli_labels(src: Path, model: Path | None, out: Path, **options) -> tuple[np.ndarray, dict]:
    """Labels of ``segpipe run`` on ``src`` (in process), read back with rasterio.

    ``model`` None: no ``--model``, the run chooses a bundled one.
    """
    chosen = str(model) if model is not None else None
    summary = run_one(RunOptions.of(str(src), str(out), model=chosen, device="cpu", **options))
    with rasterio.open(out) as ds:
        return ds.read(1), summary


def read_image(src: Path) -> np.ndarray:
    with rasterio.open(src) as ds:
        return ds.read()


def summary_normalizer(summary: dict) -> Normalizer:
    return Normalizer.from_dict(summary["normalizer"])
