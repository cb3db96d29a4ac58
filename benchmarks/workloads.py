"""The benchmarks' inputs and models, made by seeded code (nothing is downloaded).

- :func:`make_image`: a 3-band uint8 (or uint16) GeoTIFF (tiled 512, deflate), with structure
  at several scales so segmentations are not trivial, written strip by strip (any size, bounded
  memory).
- :func:`make_unet`: the throughput model, a same-padding U-Net of base width 32 (depth 1 by
  default) with 4 classes and a card (``scale`` normalization, halo 32), as a checkpoint.
- :func:`make_torchvision`: a torchvision network (DeepLabv3, FCN) with random weights, for
  throughput where the model's compute dominates (``benchmarks/gpu.py --arch``).
- :func:`make_cheap_model`: a 1×1 convolution (3 bands → 2 classes) as a ``torch.export``
  program, for runs where the model's own time must be negligible (start-up, batches, scaling).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

TILE = 512
HALO = 32
CLASSES = 4


def make_image(path: Path, side: int, *, bands: int = 3, seed: int = 0,
               dtype: str = "uint8") -> Path:
    """A ``side`` × ``side`` ``bands``-band GeoTIFF (tiled 512, deflate, UTM 21N).

    ``dtype`` ``uint8`` (0–255) or ``uint16`` (the same picture × 257, 0–65535).
    """
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    profile = dict(
        driver="GTiff", width=side, height=side, count=bands, dtype=dtype, tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", zlevel=1, BIGTIFF="IF_SAFER",
        crs="EPSG:32621", transform=Affine(10.0, 0, 300000.0, 0, -10.0, 5000000.0),
        interleave="pixel",
    )
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.01, 0.08, (bands, 2))
    xx = np.arange(side, dtype=np.float32)[None, :]
    step = 512
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, side, step):
            h = min(step, side - r)
            yy = np.arange(r, r + h, dtype=np.float32)[:, None]
            strip = np.empty((bands, h, side), np.float32)
            for b in range(bands):
                fy, fx = freqs[b]
                strip[b] = 128 + 70 * np.sin(yy * fy + b) * np.cos(xx * fx - b)
                strip[b] += 40 * np.sin((yy + xx) / 413.0 + b)
            strip += rng.normal(0, 14, strip.shape).astype(np.float32)
            pixels = np.clip(strip, 0, 255)
            if dtype == "uint16":
                pixels *= 257.0
            dst.write(pixels.astype(dtype), window=Window(0, r, side, h))
    return path


def unet_config(depth: int = 1, width: int = 32) -> dict:
    """The throughput model's registry config: a same-padding U-Net."""
    return dict(in_channels=3, num_classes=CLASSES, depth=depth, base_width=width,
                padding="same")


def make_unet(path: Path, *, depth: int = 1, width: int = 32, seed: int = 0) -> Path:
    """The throughput model as a segpipe checkpoint (card: ``scale``, halo 32)."""
    import dataclasses

    import torch

    from segpipe.models import create_model, default_card, save_checkpoint

    config = unet_config(depth, width)
    torch.manual_seed(seed)
    net = create_model("unet", **config)
    with torch.no_grad():  # varied labels: He-normal weights, small non-zero biases
        for name, p in net.named_parameters():
            if p.ndim > 1:
                torch.nn.init.kaiming_normal_(p, nonlinearity="relu")
            else:
                p.normal_(0.0, 0.1 if "bias" in name else 1.0)
    card = dataclasses.replace(default_card("unet", **config), halo=HALO)
    save_checkpoint(net, path, architecture="unet", config=config, card=card)
    return path


def make_torchvision(path: Path, arch: str, *, seed: int = 0) -> Path:
    """A torchvision network (``deeplabv3_resnet50``, ``fcn_resnet50``, …; random weights,
    nothing downloaded) as a segpipe checkpoint: 3 bands, 4 classes, ``scale``, halo 32."""
    import dataclasses

    import torch

    from segpipe.models import create_model, default_card, save_checkpoint

    config = dict(in_channels=3, num_classes=CLASSES)
    torch.manual_seed(seed)
    net = create_model(arch, **config)
    card = dataclasses.replace(default_card(arch, **config), halo=HALO)
    save_checkpoint(net, path, architecture=arch, config=config, card=card)
    return path


def make_cheap_model(path: Path, bands: int = 3) -> Path:
    """A 1×1 convolution (``bands`` → 2 classes) with a card, as a ``torch.export`` program."""
    import torch

    from segpipe.models import ModelCard, Normalization, NormMethod, export_program

    net = torch.nn.Conv2d(bands, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[[[4.0 / bands]]] * bands, [[[-4.0 / bands]]] * bands]))
        net.bias.copy_(torch.tensor([-2.0, 2.0]))
    card = ModelCard.default(
        "conv1x1", bands, 2, halo=0, margin=0, stride=1,
        normalization=Normalization(NormMethod.SCALE),
    )
    export_program(net.eval(), path, card=card, example_size=64, in_channels=bands)
    return path


def side_for(gigapixels: float, multiple: int = 512) -> int:
    """A square side (a multiple of ``multiple``) of about ``gigapixels``."""
    return max(multiple, round(math.sqrt(gigapixels * 1e9) / multiple) * multiple)
