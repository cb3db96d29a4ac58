"""Speed options: channels-last (on by default) keeps the exactness contract on a wide net;
the opt-in backends (ONNX Runtime, torch.compile) and bf16 agree with float32 eager.

Oracles: one forward pass of the plain (NCHW, eager) model on the whole mirror-extended image,
and the default run's labels read back with rasterio.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from segpipe.models import create_model, default_card, load_model, save_checkpoint
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.oracles import assert_labels_match
from tests.pipeline.test_exactness import oracle_labels


def wide_unet(path, width: int = 32, depth: int = 2):
    torch.manual_seed(11)
    config = dict(in_channels=3, num_classes=4, depth=depth, base_width=width, padding="same")
    net = create_model("unet", **config)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1:
                torch.nn.init.kaiming_normal_(p, nonlinearity="relu")
            else:
                p.normal_(0.0, 0.1)
    save_checkpoint(net, path, architecture="unet", config=config,
                    card=default_card("unet", **config))
    return path


def run(tmp_path, src, model, name, **kw):
    out = tmp_path / f"{name}.tif"
    summary = run_one(RunOptions.of(str(src), str(out), model=str(model), device="cpu", **kw))
    with rasterio.open(out) as ds:
        return ds.read(1), summary


@pytest.mark.parametrize("threads", [1, 2])
def test_channels_last_keeps_tiled_equal_to_whole_image_on_a_wide_net(tmp_path, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 150, 190), "uint8", seed=9))
        model = wide_unet(tmp_path / "wide.pt")
        assert load_model(model).channels_last  # the default on the CPU
        labels, summary = run(tmp_path, src, model, "tiled", tile=64, halo=44)
        with rasterio.open(src) as ds:
            image = ds.read()
        _, logits, _ = oracle_labels(model, image, 44,
                                     Normalizer.from_dict(summary["normalizer"]))
        assert_labels_match(labels, logits)  # tiles and the whole image: other kernels
        assert len(np.unique(labels)) > 2
    finally:
        torch.set_num_threads(before)


def test_onnxruntime_backend_agrees_with_eager(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 140, 170), "uint8", seed=3))
    model = wide_unet(tmp_path / "wide.pt", width=8)
    eager, _ = run(tmp_path, src, model, "eager", tile=64, halo=44)
    onnx, summary = run(tmp_path, src, model, "onnx", tile=64, halo=44, backend="onnxruntime",
                        keep_workdir=True)
    from pathlib import Path

    assert (Path(summary["workdir"]) / "model.onnx").is_file()  # exported once, in the run
    assert (eager == onnx).mean() >= 0.999
    assert len(np.unique(onnx)) > 2


def test_bf16_on_the_cpu_agrees_with_float32(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 140, 170), "uint8", seed=5))
    model = wide_unet(tmp_path / "wide.pt", width=8)
    fp32, _ = run(tmp_path, src, model, "fp32", tile=64, halo=44)
    bf16, _ = run(tmp_path, src, model, "bf16", tile=64, halo=44, precision="bf16")
    assert (fp32 == bf16).mean() >= 0.95


@pytest.mark.slow
def test_compile_backend_agrees_with_eager(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", smooth_image((3, 130, 130), "uint8", seed=6))
    model = wide_unet(tmp_path / "wide.pt", width=8)
    eager, _ = run(tmp_path, src, model, "eager", tile=64, halo=44)
    compiled, _ = run(tmp_path, src, model, "compiled", tile=64, halo=44, backend="compile")
    assert (eager == compiled).mean() >= 0.999
