"""The in-process contenders, each run in its own child process by ``bench.py`` (so its peak
PSS is its own): the bare model, MONAI's ``sliding_window_inference`` and a plain rasterio
window loop. Prints one JSON line with the timed seconds and output megapixels.

    python benchmarks/methods.py bare --image in.tif --model m.pt [--tiles 32] [--variant fp32]
    python benchmarks/methods.py monai --image in.tif --model m.pt --mode gaussian|constant
    python benchmarks/methods.py rasterio --image in.tif --model m.pt --out out.tif

Timing starts with the data in memory (bare, MONAI: the normalized image as a tensor) or with
the file closed (rasterio: reading, the model and writing are all timed); imports, model
loading and warm-up are not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import HALO, TILE


def read_normalized(path: str) -> np.ndarray:
    """The whole image as float32 (bands, h, w) scaled to [0, 1] (the card's ``scale``)."""
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read().astype(np.float32) / np.float32(255.0)


def tiles_of(x: np.ndarray, count: int) -> np.ndarray:
    """``count`` tiles of (bands, T + 2H, T + 2H) from the mirror-extended image, row by row."""
    ext = np.pad(x, ((0, 0), (HALO, HALO), (HALO, HALO)), mode="symmetric")
    size = TILE + 2 * HALO
    out = []
    for r in range(0, x.shape[1], TILE):
        for c in range(0, x.shape[2], TILE):
            out.append(ext[:, r : r + size, c : c + size])
    return np.stack([out[i % len(out)] for i in range(count)])


def _load(model: str, variant: str):
    """The model as plain eager PyTorch (NCHW float32: no channels-last, no compile)."""
    from segpipe.models import load_model

    try:
        return load_model(model, device="cpu", channels_last=False)
    except TypeError:  # a segpipe from before channels-last (the baseline): NCHW anyway
        return load_model(model, device="cpu")


def run_bare(args) -> dict:
    """The model alone on batches of 4 tiles already in memory, eager float32 (the limit)."""
    model = _load(args.model, "fp32")
    tiles = tiles_of(read_normalized(args.image), args.tiles)
    batches = [torch.from_numpy(np.ascontiguousarray(tiles[i : i + 4]))
               for i in range(0, len(tiles), 4)]
    model(batches[0]).argmax(1)  # warm-up (oneDNN primitives)
    start, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        model(b).argmax(1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu,
            "megapixels": len(tiles) * TILE * TILE / 1e6,
            "tiles": len(tiles), "threads": torch.get_num_threads()}


def run_monai(args) -> dict:
    """MONAI ``sliding_window_inference`` on the image in memory, same window as segpipe."""
    from monai.inferers import sliding_window_inference

    model = _load(args.model, "fp32")
    x = torch.from_numpy(read_normalized(args.image))[None]
    window = TILE + 2 * HALO
    # Gaussian: scan interval int(window * (1 - overlap)) == TILE, as segpipe's tiles
    overlap = (2 * HALO - 0.5) / window if args.mode == "gaussian" else 0.0

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return model(batch)

    with torch.inference_mode():
        predictor(x[:, :, :window, :window])  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        logits = sliding_window_inference(
            x, roi_size=(window, window), sw_batch_size=4, predictor=predictor,
            overlap=overlap, mode=args.mode, sigma_scale=0.125, padding_mode="reflect",
            progress=False,
        )
        labels = logits.argmax(1).to(torch.uint8).numpy()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu,
            "megapixels": labels.size / 1e6, "overlap": overlap, "mode": args.mode}


def run_rasterio(args) -> dict:
    """The loop users write themselves: 512² windows, no overlap, batches of 4, a GeoTIFF out."""
    import rasterio
    from rasterio.windows import Window

    net = _load(args.model, "fp32")
    net(torch.zeros(1, 3, TILE, TILE))  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    with rasterio.open(args.image) as src:
        profile = src.profile | {"count": 1, "dtype": "uint8", "nodata": 255}
        windows = [Window(c, r, min(TILE, src.width - c), min(TILE, src.height - r))
                   for r in range(0, src.height, TILE) for c in range(0, src.width, TILE)]
        with rasterio.open(args.out, "w", **profile) as dst:
            for i in range(0, len(windows), 4):
                group = windows[i : i + 4]
                x = np.stack([src.read(window=w).astype(np.float32) / 255.0 for w in group])
                labels = net(torch.from_numpy(x)).argmax(1).to(torch.uint8).numpy()
                for w, lab in zip(group, labels):
                    dst.write(lab[None], window=w)
        megapixels = src.width * src.height / 1e6
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "megapixels": megapixels}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=["bare", "monai", "rasterio"])
    ap.add_argument("--image", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tiles", type=int, default=32)
    ap.add_argument("--mode", default="gaussian", choices=["gaussian", "constant"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run = {"bare": run_bare, "monai": run_monai, "rasterio": run_rasterio}[args.method]
    print(json.dumps({**run(args), "cpu_timed": True}))


if __name__ == "__main__":
    main()
