"""A model without a card gets the raw pixel values as float32: no scaling, no statistics.

The oracle is the eager network on the whole mirror-extended image fed ``image.astype(float32)``
(numpy only; segpipe's normalizer is not involved).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from segpipe.models import NormMethod, create_model, export_program, export_torchscript
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.oracles import (
    assert_labels_match,
    forward_side,
    whole_image_labels,
    whole_image_logits,
)
from tests.pipeline.test_exactness import spread_weights

DEPTH = 2
PERIOD = 2**DEPTH  # a valid U-Net of depth 2 takes one side in every 4


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(11)
    net = create_model("unet", in_channels=1, num_classes=3, depth=DEPTH, base_width=4).eval()
    spread_weights(net)
    return net


def margin_of(net) -> int:
    side = next(n for n in range(64, 64 + PERIOD) if forward_side(net, 1, n))
    return (side - forward_side(net, 1, side)) // 2


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_cardless_model_sees_raw_float32_pixels(tmp_path, net, fmt, dtype):
    path = tmp_path / ("m.ts" if fmt == "torchscript" else "m.pt2")
    if fmt == "torchscript":
        export_torchscript(net, path, card=None)
    else:
        export_program(net, path, card=None, in_channels=1)
    image = smooth_image((1, 61, 47), dtype, seed=3)
    if dtype == "uint16":
        image //= 512  # raw values up to 127: far from the 0..1 that scaling would give
    src = write_geotiff(tmp_path / "in.tif", image)
    out = tmp_path / "out.tif"
    summary = run_one(RunOptions.of(str(src), str(out), model=str(path), tile=16, device="cpu"))
    assert summary["normalizer"]["method"] == NormMethod.NONE

    with rasterio.open(out) as ds:
        labels = ds.read(1)
    with rasterio.open(src) as ds:
        pixels = ds.read()
    logits = whole_image_logits(net, pixels.astype(np.float32), margin_of(net), PERIOD)
    assert_labels_match(labels, logits)
    assert len(np.unique(labels)) > 1  # a non-trivial segmentation
    if dtype == "uint16":  # scaled pixels (÷ 65535) would give other labels
        scaled = whole_image_labels(net, pixels / np.float32(65535), margin_of(net), PERIOD)
        assert (scaled != labels).any()
