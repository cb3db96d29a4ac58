"""Make the demo: a georeferenced land-cover scene and a small U-Net trained on it.

    python scripts/make_demo.py DEST

writes DEST/scene.tif (3-band uint16, EPSG:32621, 30 m pixels, 3000 × 3200, with a nodata
corner), DEST/truth.tif (the classes the scene was drawn from) and DEST/unet.pt (a segpipe
checkpoint with its model card). Seeded: the same files every time. Idempotent: existing files
are kept. A later issue replaces the scene with a real Landsat sample.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from scipy.ndimage import gaussian_filter

from segpipe.models import ClassInfo, ModelCard, Normalization, create_model, save_checkpoint

CLASSES = (
    ClassInfo("water", (31, 120, 180)),
    ClassInfo("vegetation", (51, 160, 44)),
    ClassInfo("bare/urban", (227, 26, 28)),
)
# mean reflectance (x 10000) of each class in three bands, roughly red, nir, swir
SIGNATURES = np.array([[600, 400, 200], [500, 3500, 1500], [2200, 2600, 3000]], np.float64)
H, W = 3000, 3200
NODATA = 0


def make_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    field = gaussian_filter(rng.standard_normal((h, w)), 25)
    field = (field - field.mean()) / field.std()
    classes = np.digitize(field, [-0.7, 0.9]).astype(np.uint8)
    texture = gaussian_filter(rng.standard_normal((3, h, w)), (0, 2, 2)) * 350
    scene = SIGNATURES[classes].transpose(2, 0, 1) + texture + rng.normal(0, 120, (3, h, w))
    return np.clip(scene, 1, 65535).astype(np.uint16), classes


def train(scene: np.ndarray, classes: np.ndarray, steps: int = 120):
    torch.manual_seed(0)
    config = dict(in_channels=3, num_classes=3, depth=2, base_width=8, padding="valid")
    net = create_model("unet", **config)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(1)
    size, margin = 92, 20  # a valid input size for depth 2; output 52
    valid = (scene != NODATA).all(axis=0)
    mean = scene[:, valid].mean(axis=1)
    std = scene[:, valid].std(axis=1)
    x_all = ((scene - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    start = time.monotonic()
    for _ in range(steps):
        r = rng.integers(300, scene.shape[1] - size, 8)
        c = rng.integers(0, scene.shape[2] - size, 8)
        x = np.stack([x_all[:, a : a + size, b : b + size] for a, b in zip(r, c)])
        y = np.stack([classes[a + margin : a + size - margin, b + margin : b + size - margin]
                      for a, b in zip(r, c)])
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)),
                                                 torch.from_numpy(y).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"trained {steps} steps in {time.monotonic() - start:.0f} s, last loss {loss.item():.3f}")
    card = ModelCard(
        name="demo-landcover-unet", bands=3, classes=CLASSES,
        normalization=Normalization("meanstd", mean=tuple(mean.tolist()),
                                    std=tuple(std.tolist())),
        stride=4, pixel_size=30.0, pixel_size_unit="m",
        architecture={"name": "unet", "config": config},
        license="CC0-1.0", training_data="synthetic scene made by scripts/make_demo.py",
        description="Tiny valid-padding U-Net (Ronneberger et al. 2015), depth 2, for the demo.",
    )
    return net, config, card


def main(dest: str) -> None:
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    scene_path, truth_path, model_path = out / "scene.tif", out / "truth.tif", out / "unet.pt"
    rng = np.random.default_rng(0)
    scene, classes = make_scene(rng, H, W)
    scene[:, :300, :400] = NODATA  # a nodata corner, as at the edge of a satellite swath
    profile = dict(driver="GTiff", height=H, width=W, dtype="uint16", count=3,
                   crs="EPSG:32621", transform=Affine(30, 0, 600000, 0, -30, 5500000),
                   tiled=True, blockxsize=256, blockysize=256, compress="lzw", nodata=NODATA)
    if not scene_path.exists():
        with rasterio.open(scene_path, "w", **profile) as dst:
            dst.write(scene)
        print(f"wrote {scene_path}")
    if not truth_path.exists():
        with rasterio.open(truth_path, "w", **{**profile, "count": 1, "dtype": "uint8",
                                                "nodata": None}) as dst:
            dst.write(classes[None])
    if not model_path.exists():
        net, config, card = train(scene, classes)
        save_checkpoint(net, model_path, architecture="unet", config=config, card=card)
        print(f"wrote {model_path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/demo")
