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


@pytest.mark.gpu
def test_cuda_host_threads_give_the_bytes_of_one_thread(tmp_path):
    """Four host threads share the model on the GPU (pinned buffers from one pool, one side
    stream): the labels are the bytes of one thread's run on the same GPU."""
    from segpipe.pipeline.executor import InProcessExecutor
    from segpipe.pipeline.stages import RunContext

    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 300, 260), "uint8"))
    model = tiny_unet(tmp_path / "m.pt", 3, "same")
    outs = []
    for threads in (1, 4):
        out = tmp_path / f"t{threads}.tif"
        run_one(RunOptions.of(input=str(src), output=str(out), model=str(model), tile=32,
                              halo=8, block_pixels=32, device="cuda"),
                RunContext(InProcessExecutor(threads)))
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
