"""Overhead of everything that is not the model, as a ratio measured in one run.

DESIGN.md: reading, padding, normalizing, stitching and writing cost under 10 % of the model's
own time. This segments a synthetic GeoTIFF in one process, then times the model alone on the
same number of batches of the same shape, and writes the ratio (segment stage / model alone − 1)
to benchmarks/results/overhead.json.

    python benchmarks/overhead.py [--size 3072] [--tile 512] [--width 16] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segpipe.models import create_model, default_card, load_model, save_checkpoint
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.stages import run_one

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import smooth_image, write_geotiff


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=3072)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--width", type=int, default=16, help="U-Net base width")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "overhead.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        src = write_geotiff(d / "in.tif", smooth_image((3, args.size, args.size), "uint8"))
        config = dict(in_channels=3, num_classes=4, depth=2, base_width=args.width)
        torch.manual_seed(0)
        save_checkpoint(create_model("unet", **config), d / "m.pt", architecture="unet",
                        config=config, card=default_card("unet", **config))
        summary = run_one(RunOptions.of(str(src), str(d / "out.tif"), model=str(d / "m.pt"),
                                        tile=args.tile, batch_size=args.batch_size,
                                        device=args.device))
        segment = summary["stage_seconds"]["segment"]
        model = load_model(d / "m.pt", device=summary.get("device", "cpu")
                           if args.device == "auto" else args.device)
        n_tiles, size = summary["tiles"], args.tile + 2 * summary["halo"] + summary["extra"]
        x = np.random.default_rng(0).standard_normal(
            (args.batch_size, 3, size, size)).astype(np.float32)
        xt = torch.from_numpy(x).to(model.device)
        model(xt)  # warm-up
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(0, n_tiles, args.batch_size):
            model(xt).argmax(1).cpu()
        model_only = time.perf_counter() - t
    result = {
        "image": f"{args.size}x{args.size}x3 uint8",
        "tile": args.tile, "halo": summary["halo"], "model_input": size, "tiles": n_tiles,
        "unet_base_width": args.width, "batch_size": args.batch_size,
        "device": str(model.device), "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "segment_stage_s": round(segment, 3), "model_only_s": round(model_only, 3),
        "overhead_ratio": round(segment / model_only - 1, 4),
        "stage_seconds": summary["stage_seconds"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
