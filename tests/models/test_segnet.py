"""SegNet: pooling indices reused by the decoder, its stride, its halo and tiled exactness."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from segpipe.models import ModelError, create_model, default_card, probe_geometry, save_checkpoint
from segpipe.models.foundation import InputError
from segpipe.models.segnet import SegNet, segnet_halo
from segpipe.pipeline.normalize import Normalizer
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one
from tests.pipeline.oracles import assert_labels_match, assert_logits_close
from tests.pipeline.test_exactness import oracle_labels, run_and_read, spread_weights


def tiny_segnet(depth: int = 2, channels: int = 3, classes: int = 3, seed: int = 0) -> SegNet:
    torch.manual_seed(seed)
    net = SegNet(channels, classes, depth=depth, base_width=4).eval()
    spread_weights(net)
    with torch.no_grad():  # BatchNorm scales back near 1, or the random net is constant
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    return net


def test_forward_keeps_size_for_multiples_of_stride():
    net = tiny_segnet(depth=3, classes=5)
    assert (net.stride, net.padding) == (8, "same")
    with torch.inference_mode():
        assert net(torch.rand(2, 3, 32, 48)).shape == (2, 5, 32, 48)
    with pytest.raises(RuntimeError, match="multiples of the stride 8"):
        net(torch.rand(1, 3, 36, 32))


def test_decoder_places_values_at_the_encoder_maxima():
    # depth 1, identity-like: the unpooled map is zero except where the 2×2 maxima were.
    net = tiny_segnet(depth=1)
    x = torch.rand(1, 4, 8, 8)
    pooled, idx = net.pool(x)
    up = net.unpool(pooled, idx)
    ref = torch.zeros(1, 4, 8, 8)
    blocks = x.reshape(1, 4, 4, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(1, 4, 4, 4, 4)
    arg = blocks.argmax(-1)  # position of the maximum inside each 2×2 window
    for r in range(4):
        for c in range(4):
            a = arg[0, :, r, c]
            rows, cols = 2 * r + a // 2, 2 * c + a % 2
            ref[0, torch.arange(4), rows, cols] = x[0, torch.arange(4), rows, cols]
    assert torch.equal(up, ref)  # copies, no arithmetic: exact (labels-like, no rounding)
    assert any(isinstance(m, torch.nn.MaxUnpool2d) for m in net.modules())


def test_registry_card_and_probe():
    card = default_card("segnet", in_channels=4, num_classes=3, depth=3, base_width=4)
    assert (card.stride, card.margin, card.halo) == (8, 0, segnet_halo(3))
    assert card.architecture["config"]["batch_norm"] is True
    net = create_model("segnet", in_channels=4, num_classes=3, depth=3, base_width=4).eval()
    geometry = probe_geometry(net, 4)  # stride unknown: found from the valid sizes
    assert (geometry.margin, geometry.period, geometry.valid_residues) == (0, 8, frozenset({0}))
    assert geometry.out_channels == 3


@pytest.mark.parametrize(("kwargs", "word"), [({"depth": 0}, "depth"),
                                              ({"base_width": 1.5}, "base_width"),
                                              ({"batch_norm": "no"}, "batch_norm")])
def test_bad_config_names_the_parameter(kwargs, word):
    with pytest.raises(ModelError, match=word):
        create_model("segnet", **kwargs)


def test_halo_is_the_receptive_field_radius():
    # Independent check: perturbing every input pixel farther than the halo from output pixel
    # p (Chebyshev distance) never changes p's logits, for every p modulo the pooling grid.
    depth = 2
    halo = segnet_halo(depth)
    assert halo == 15  # worked by hand: p ≡ 1 (mod 4) reaches 15 px to the left
    net = tiny_segnet(depth=depth)
    size = -(-(2 * halo + 2 * net.stride) // net.stride) * net.stride + net.stride
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(1, 3, size, size, generator=gen)
    with torch.inference_mode():
        base = net(x)
        for p in range(halo + 1, halo + 1 + net.stride):
            far = torch.ones(size, size, dtype=torch.bool)
            far[p - halo : p + halo + 1, p - halo : p + halo + 1] = False
            y = torch.where(far, torch.rand(1, 3, size, size, generator=gen), x)
            # unchanged within the contract: a kernel may round p's sums differently once
            # far inputs change (Winograd tiles mix neighbours); a leak moves it far more
            assert_logits_close(net(y)[0, :, p, p], base[0, :, p, p],
                                scale=float(base.abs().max()))


def test_tiled_run_equals_whole_image_with_the_card_halo(tmp_path, geotiff):
    depth = 2
    config = dict(in_channels=3, num_classes=3, depth=depth, base_width=4)
    net = tiny_segnet(depth=depth, seed=1)  # seed 1: all three classes appear
    model = tmp_path / "segnet.pt"
    save_checkpoint(net, model, architecture="segnet", config=config,
                    card=default_card("segnet", **config))
    src = geotiff((3, 75, 101), "uint8", seed=3)
    labels, summary = run_and_read(tmp_path, src, model, tile=16)  # halo from the card: 15
    assert summary["halo"] == segnet_halo(depth)
    with rasterio.open(src) as ds:
        image = ds.read()
    _, logits, _ = oracle_labels(model, image, summary["halo"],
                                 Normalizer.from_dict(summary["normalizer"]))
    assert_labels_match(labels, logits)
    assert len(np.unique(labels)) == 3


def test_tile_must_be_a_multiple_of_the_stride(tmp_path, geotiff):
    config = dict(in_channels=3, num_classes=3, depth=3, base_width=4)
    model = tmp_path / "segnet.pt"
    save_checkpoint(create_model("segnet", **config), model, architecture="segnet",
                    config=config, card=default_card("segnet", **config))
    out = tmp_path / "out.tif"
    options = RunOptions.of(str(geotiff()), str(out), model=str(model), tile=20, device="cpu")
    with pytest.raises(InputError, match=r"--tile 20 is not a multiple of the model's stride 8"):
        run_one(options)  # the CLI maps InputError to one line and exit 2
    assert not out.exists()
