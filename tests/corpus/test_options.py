"""Bad option values: zero, negative, non-numeric, unknown choices, absent devices.

Every option value is checked before any work starts (most before Prefect or Dask start).
``--halo 0`` and ``--workers 0`` are valid: see test_must_succeed.py (every case here runs
with ``--workers 0``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus.harness import BadCase, Call, check_bad_case
from tests.corpus.makers import TINY_MARGIN, TINY_STRIDE, scene, tiny_model

TITLE = "Bad option values"
HELD = ("exit 2, one `error:` line naming the option, the constraint and the fix, no traceback, "
        "nothing written")
#: 6 is a multiple of 2 but not of the tiny U-Net's stride 4
OFF_STRIDE_TILE = 6
assert OFF_STRIDE_TILE % TINY_STRIDE and OFF_STRIDE_TILE % (TINY_STRIDE // 2) == 0


def run_with(*extra: str, model: str = "tiny", output: str = "mask.tif", api: bool = True):
    """A case maker: the valid scene and model, plus ``extra`` arguments."""

    def make(folder: Path) -> Call:
        scene(folder)
        if model == "tiny":
            named: tuple[str, ...] = ("--model", tiny_model(folder))
        elif model == "none":
            named = ()
        else:
            named = ("--model", model)
        return Call(("run", "--input", "scene.tif", "--output", output, *named, *extra),
                    output=output, api=api)

    return make


def absent_cuda(folder: Path) -> Call:
    """``--device cuda`` where there is no CUDA; on a GPU machine, a device index it lacks."""
    import torch

    device = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    return run_with("--device", device)(folder)


CASES = {
    "device-cuda-absent": BadCase(
        "`--device cuda` on a machine without CUDA", absent_cuda, ("--device", "cpu"),
        portable=False,
    ),
    "batch-size-0": BadCase("`--batch-size 0`", run_with("--batch-size", "0"), ("--batch-size",)),
    "batch-size-negative": BadCase(
        "`--batch-size -1`", run_with("--batch-size", "-1"), ("--batch-size",)),
    "batch-size-not-a-number": BadCase(
        "`--batch-size x`", run_with("--batch-size", "x"), ("--batch-size", "integer")),
    "tile-0": BadCase("`--tile 0`", run_with("--tile", "0"), ("--tile", "positive")),
    "tile-negative": BadCase("`--tile -8`", run_with("--tile", "-8"), ("--tile", "positive")),
    "tile-not-a-number": BadCase("`--tile abc`", run_with("--tile", "abc"), ("--tile", "integer")),
    "tile-not-multiple-of-stride": BadCase(
        f"`--tile {OFF_STRIDE_TILE}` for a model of stride {TINY_STRIDE} (Prefect's temporary "
        "server)",
        run_with("--tile", str(OFF_STRIDE_TILE), api=False), ("stride", "use 4 or 8"),
    ),
    "halo-negative": BadCase("`--halo -1`", run_with("--halo", "-1"), ("--halo",)),
    "halo-not-a-number": BadCase(
        "`--halo x`", run_with("--halo", "x"), ("--halo", "integer")),
    "halo-below-margin": BadCase(
        f"`--halo 4` for a valid-padding model whose margin is {TINY_MARGIN}",
        run_with("--halo", "4"), ("margin", f"--halo {TINY_MARGIN}")),
    "workers-negative": BadCase("`--workers -1`", run_with("--workers", "-1"), ("--workers",)),
    "workers-not-a-number": BadCase(
        "`--workers x`", run_with("--workers", "x"), ("--workers", "integer")),
    "precision-fp16": BadCase(
        "`--precision fp16` (not a choice)", run_with("--precision", "fp16"),
        ("--precision", "fp32")),
    "blend-average": BadCase(
        "`--blend average` (not a choice)", run_with("--blend", "average"), ("--blend", "crop")),
    "ngff-version-0.3": BadCase(
        "`--ngff-version 0.3` (not a choice)",
        run_with("--ngff-version", "0.3", output="mask.ome.zarr"), ("--ngff-version", "0.4")),
    "bands-0": BadCase("`--bands 0`", run_with("--bands", "0"), ("--bands", "1-based")),
    "bands-beyond-count": BadCase(
        "`--bands 9` for a 3-band input", run_with("--bands", "9"), ("--bands 9", "1 to 3")),
    "random-weights-without-model": BadCase(
        "`--random-weights` without `--model`", run_with("--random-weights", model="none"),
        ("--random-weights", "--model")),
}


@pytest.mark.parametrize("case_id", list(CASES))
def test_a_bad_option_value_exits_2_with_one_error_line_and_writes_nothing(
    case_id: str, tmp_path: Path, prefect_api: str
):
    check_bad_case(case_id, CASES[case_id], tmp_path, prefect_api)
