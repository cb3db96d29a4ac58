"""The CUDA path (pinned copies, bf16 autocast) agrees with the CPU path."""

from __future__ import annotations

import pytest
import rasterio

from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_labels_match_cpu(tmp_path, precision):
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 300, 260), "uint8"))
    model = tiny_unet(tmp_path / "m.pt", 3, "valid")
    labels = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.tif"
        run_one(RunOptions.of(input=str(src), output=str(out), model=str(model), tile=64,
                             device=device, precision=precision if device == "cuda" else "fp32"))
        with rasterio.open(out) as ds:
            labels[device] = ds.read(1)
    agree = (labels["cpu"] == labels["cuda"]).mean()
    assert agree > (0.97 if precision == "bf16" else 0.999)
