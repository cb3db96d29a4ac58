"""Valid-padding nets whose crop depends on the input size's parity (ceil-mode pooling).

``MaxPool2d(2, ceil_mode=True)`` pads odd sizes at the bottom/right, so such a net loses an odd
number of pixels on some sizes and, with two poolings, an even number that is not a symmetric
crop on others. The probe must keep only the sizes that crop the same on every side, and the
tiled labels must equal one forward pass over the whole image (computed here without segpipe).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from segpipe.models import export_torchscript, probe_geometry
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.conftest import smooth_image, write_geotiff
from tests.pipeline.oracles import (
    assert_labels_match,
    forward_side,
    whole_image_logits,
)


class CeilNet(nn.Module):
    """Valid 3×3 convolutions around ``depth`` ceil-mode poolings and as many upsamplings."""

    def __init__(self, depth: int, channels: int = 1, classes: int = 3, width: int = 4) -> None:
        super().__init__()
        self.down = nn.ModuleList(
            nn.Conv2d(channels if i == 0 else width, width, 3) for i in range(depth)
        )
        self.up = nn.ModuleList(nn.Conv2d(width, width, 3) for _ in range(depth))
        self.head = nn.Conv2d(width, classes, 3)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.down:
            x = self.pool(torch.relu(conv(x)))
        for conv in self.up:
            x = nn.functional.interpolate(torch.relu(conv(x)), scale_factor=2.0, mode="nearest")
        return self.head(x)


def ceil_net(depth: int) -> CeilNet:
    torch.manual_seed({1: 1, 2: 3}[depth])  # seeds giving several classes on the test image
    net = CeilNet(depth).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.5 if p.ndim > 1 else 0.1)
    return net


# depth → (margin, period, valid residue): measured below with direct forward passes
SYMMETRIC = {1: (4, 2, 0), 2: (10, 4, 2)}


@pytest.mark.parametrize("depth", [1, 2])
def test_direct_forwards_show_the_parity_dependence(depth):
    net = ceil_net(depth)
    margin, period, residue = SYMMETRIC[depth]
    diffs = {n: n - forward_side(net, 1, n) for n in range(64, 72)}
    assert any(d % 2 for d in diffs.values())  # odd crops exist (7 px on odd sides at depth 1)
    assert {d for n, d in diffs.items() if n % period == residue} == {2 * margin}
    if depth == 2:  # another even crop exists, made by padding at the bottom/right
        assert {d for d in diffs.values() if d % 2 == 0} == {2 * margin - 2, 2 * margin}


@pytest.mark.parametrize("depth", [1, 2])
def test_probe_keeps_the_symmetric_sizes(depth):
    margin, period, residue = SYMMETRIC[depth]
    geometry = probe_geometry(ceil_net(depth), 1)
    assert (geometry.margin, geometry.period) == (margin, period)
    assert geometry.valid_residues == {residue}


def test_probe_refuses_a_net_without_symmetric_sizes_and_says_why():
    from segpipe.models import ModelError

    def odd_everywhere(x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 1:, 1:] if x.shape[-1] % 2 else x[:, :, 3:, 3:]

    with pytest.raises(ModelError, match=r"odd number: the margin would not be symmetric"):
        probe_geometry(odd_everywhere, 1, stride=4, base=16)


@pytest.mark.parametrize("depth", [1, 2])
def test_tiled_labels_equal_the_whole_image(tmp_path, depth):
    net = ceil_net(depth)
    margin, period, _ = SYMMETRIC[depth]
    path = tmp_path / "ceil.ts"
    export_torchscript(net, path, card=None)  # no card: raw pixels, geometry probed
    src = write_geotiff(tmp_path / "in.tif", smooth_image((1, 53, 70), "float32", seed=depth))
    out = tmp_path / "out.tif"
    summary = run_one(RunOptions.of(str(src), str(out), model=str(path), tile=16, device="cpu"))
    assert summary["halo"] == margin

    with rasterio.open(out) as ds:
        labels = ds.read(1)
    with rasterio.open(src) as ds:
        pixels = ds.read().astype(np.float32)
    assert_labels_match(labels, whole_image_logits(net, pixels, margin, period))
    assert len(np.unique(labels)) > 1
