"""Peak memory of ``segpipe run`` against image size (DESIGN: memory is O(tiles in flight)).

Runs ``segpipe run`` as a subprocess with its defaults (the local Dask cluster of worker
processes; Prefect's temporary server unless ``PREFECT_API_URL`` is set) on two square
single-band uint8 GeoTIFFs, and samples the PSS (proportional set size: shared pages split
between the processes that share them, so the sum over processes counts each page once) of the
whole process tree every 0.2 s. The model is a 1×1 convolution exported with ``torch.export``,
so the run is I/O-bound and the figure is the pipeline's own memory, not a network's
activations.

Writes ``benchmarks/results/memory.json``: both peaks, the ratio, and the per-process peaks.

    .venv/bin/python benchmarks/memory.py                 # 0.25 and 1 gigapixel (minutes)
    .venv/bin/python benchmarks/memory.py --small 0.06 --large 0.25
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pss import GIB, measure

RESULTS = Path(__file__).parent / "results" / "memory.json"
LIMIT_BYTES = 3 * GIB
MAX_GROWTH = 1.20


def make_input(path: Path, gigapixels: float, seed: int = 0) -> Path:
    """A square single-band uint8 GeoTIFF of about ``gigapixels`` (side a multiple of 512)."""
    import rasterio
    from affine import Affine

    side = max(512, round(math.sqrt(gigapixels * 1e9) / 512) * 512)
    profile = dict(
        driver="GTiff", width=side, height=side, count=1, dtype="uint8", tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", zlevel=1, BIGTIFF="IF_SAFER",
        crs="EPSG:32621", transform=Affine(10.0, 0, 300000.0, 0, -10.0, 5000000.0),
    )
    rng = np.random.default_rng(seed)
    xx = np.arange(side, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, side, 512):
            yy = np.arange(r, r + 512, dtype=np.float32)[:, None]
            strip = 96 + 64 * np.sin(yy / 97.0) * np.cos(xx / 131.0)
            strip += rng.normal(0, 12, strip.shape).astype(np.float32)
            dst.write(np.clip(strip, 0, 255).astype(np.uint8)[None],
                      window=rasterio.windows.Window(0, r, side, 512))
    return path


def make_model(path: Path) -> Path:
    """A 1×1 convolution (1 band → 2 classes) with a card, as a ``torch.export`` program."""
    import torch

    from segpipe.models import ModelCard, Normalization, NormMethod, export_program

    net = torch.nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[[[4.0]]], [[[-4.0]]]]))
        net.bias.copy_(torch.tensor([-2.0, 2.0]))
    card = ModelCard.default(
        "conv1x1", 1, 2, halo=0, margin=0, stride=1,
        normalization=Normalization(NormMethod.SCALE),
    )
    export_program(net.eval(), path, card=card, example_size=64, in_channels=1)
    return path


def run_one(folder: Path, gigapixels: float, model: Path, *, tile: int,
            extra_args: list[str], env: dict[str, str]) -> dict:
    """Make an input of ``gigapixels`` and measure ``segpipe run`` on it."""
    src = make_input(folder / f"in_{gigapixels:g}gp.tif", gigapixels)
    out = folder / f"out_{gigapixels:g}gp.tif"
    segpipe = Path(sys.executable).with_name("segpipe")
    cmd = [str(segpipe), "run", "--input", str(src), "--output", str(out), "--model", str(model),
           "--tile", str(tile), "--device", "cpu", "--quiet", *extra_args]
    with __import__("rasterio").open(src) as ds:
        pixels = ds.width * ds.height
    result = measure(cmd, env)
    del result["output_tail"]
    result.update(gigapixels=round(pixels / 1e9, 4), side=math.isqrt(pixels))
    src.unlink()
    out.unlink(missing_ok=True)
    return result


def curve(sizes: tuple[float, ...], *, tile: int = 512, workdir: str | None = None,
          extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> dict:
    """Time and peak PSS at each of ``sizes`` (gigapixels): the scaling curve."""
    folder = Path(tempfile.mkdtemp(prefix="segpipe-mem-", dir=workdir))
    env = dict(env or os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    try:
        model = make_model(folder / "conv1x1.pt2")
        runs = [run_one(folder, gp, model, tile=tile, extra_args=extra_args or [], env=env)
                for gp in sizes]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    first, last = runs[0], runs[-1]
    ratio = last["peak_pss_bytes"] / first["peak_pss_bytes"]
    for r in runs:
        print(f"  scaling {r['gigapixels']:.3f} GP: {r['seconds']:.1f} s, "
              f"peak PSS {r['peak_pss_gib']:.2f} GiB", flush=True)
    return {
        "what": "time and peak PSS summed over the process tree of `segpipe run` (driver, Dask "
                "workers, Prefect server), sampled every 0.2 s; 1x1 model (I/O-bound)",
        "tile": tile, "runs": runs, "growth_ratio": round(ratio, 3),
        "limits": {"peak_bytes": LIMIT_BYTES, "growth_ratio": MAX_GROWTH},
        "passed": max(r["peak_pss_bytes"] for r in runs) < LIMIT_BYTES and ratio < MAX_GROWTH,
    }


def benchmark(small: float, large: float, *, tile: int = 512, workdir: str | None = None,
              extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> dict:
    """The curve at two sizes, with ``small`` and ``large`` named (what ``memory.json`` holds)."""
    result = curve((small, large), tile=tile, workdir=workdir, extra_args=extra_args, env=env)
    return {
        **result, "small": result["runs"][0], "large": result["runs"][-1],
        "machine": {"cores": os.cpu_count(),
                    "memory_gib": round(psutil.virtual_memory().total / GIB, 1)},
        "model": "1x1 convolution, torch.export program",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=float, default=0.25, help="gigapixels (default 0.25)")
    parser.add_argument("--large", type=float, default=1.0, help="gigapixels (default 1.0)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--workdir", default=None, help="where inputs and outputs go (temp)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--sizes", default=None,
                        help="a curve instead: gigapixels, e.g. 0.06,0.25,1 (writes a PNG too)")
    args, extra = parser.parse_known_args(argv)
    if args.sizes:
        import plots

        curve_result = curve(tuple(float(x) for x in args.sizes.split(",")), tile=args.tile,
                             workdir=args.workdir, extra_args=extra)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(curve_result, indent=2) + "\n")
        plots.draw_scaling(curve_result, Path(args.out).with_suffix(".png"))
        return 0 if curve_result["passed"] else 1
    result = benchmark(args.small, args.large, tile=args.tile, workdir=args.workdir,
                       extra_args=extra)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("growth_ratio", "passed")}
                     | {"small_gib": result["small"]["peak_pss_gib"],
                        "large_gib": result["large"]["peak_pss_gib"]}))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
