"""The CUDA path (pinned copies, bf16 autocast) agrees with the CPU path."""

from __future__ import annotations

import pytest
import rasterio

from segpipe.pipeline.run import RunOptions, run_local
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.test_exactness import tiny_unet


@pytest.mark.gpu
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_labels_match_cpu(tmp_path, bf16):
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 300, 260), "uint8"))
    model = tiny_unet(tmp_path / "m.pt", 3, "valid")
    labels = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.tif"
        run_local(RunOptions(input=str(src), output=str(out), model=str(model), tile=64,
                             device=device, bf16=bf16 and device == "cuda"))
        with rasterio.open(out) as ds:
            labels[device] = ds.read(1)
    agree = (labels["cpu"] == labels["cuda"]).mean()
    assert agree > (0.97 if bf16 else 0.999)
