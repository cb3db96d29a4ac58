"""How close ``segpipe inspect --model``'s estimate is to the run it estimates.

Writes a seeded 3-band uint8 GeoTIFF (UTM, 30 m pixels, 2048 × 2048 by default), runs
``segpipe inspect IMAGE --model M --json`` and then ``segpipe run --workers 0`` with the same
model and options, and records estimated against measured run time and peak memory, with their
ratios, in ``benchmarks/results/inspect_estimate.json``. The model is the bundled
``landcover_rgb`` (a real 3-band U-Net) unless ``--model`` names another.

Measured: the run's wall time (process start to exit) and stage times (its summary), and the
peak resident size (RSS) of the ``segpipe run`` process, sampled every 0.1 s; the PSS summed over
its process tree (with Prefect's temporary server) is recorded beside it. The estimate is for
the ``segpipe`` process, so the RSS is what it is compared with. A benchmark record, never a
timed test: the ratios depend on the machine and on its load, which is recorded.

    .venv/bin/python benchmarks/inspect_estimate.py [--size 2048] [--model PATH] [--tile N]

``--forward-only`` checks the forward-pass part alone where only torch is at hand (a GPU
machine): ``time_forward`` on one 572-pixel tile of the default U-Net against batches of 1-64
copies timed directly, fp32 and bf16, written to ``results/inspect_estimate_forward.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).parent / "results" / "inspect_estimate.json"
SEGPIPE = Path(sys.executable).with_name("segpipe")


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    # on a busy machine Prefect's temporary server may need more than its default 20 s
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    return env


def inspect(image: Path, options: list[str]) -> dict:
    cmd = [str(SEGPIPE), "inspect", str(image), "--json", *options]
    start = time.monotonic()
    done = subprocess.run(cmd, env=environment(), capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"segpipe inspect failed ({done.returncode}):\n{done.stderr}")
    report = json.loads(done.stdout)
    report["inspect_seconds"] = round(time.monotonic() - start, 2)
    return report


def run(image: Path, output: Path, options: list[str], interval: float = 0.1) -> dict:
    from memory import tree_pss

    summary = output.with_suffix(".summary.json")
    cmd = [str(SEGPIPE), "run", "--input", str(image), "--output", str(output), "--workers", "0",
           "--quiet", "--summary", str(summary), *options]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    root = psutil.Process(proc.pid)
    peak_rss = peak_pss = samples = 0
    while proc.poll() is None:
        try:
            peak_rss = max(peak_rss, root.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        peak_pss = max(peak_pss, tree_pss(root)[0])
        samples += 1
        time.sleep(interval)
    proc.wait()
    seconds = time.monotonic() - start
    log = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if proc.returncode:
        raise RuntimeError(f"segpipe run failed ({proc.returncode}):\n{log[-4000:]}")
    stages = json.loads(summary.read_text())["stage_seconds"]
    return {"seconds": round(seconds, 2), "peak_rss_bytes": peak_rss,
            "tree_peak_pss_bytes": peak_pss, "samples": samples,
            "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
            "startup_seconds": round(seconds - sum(stages.values()), 2)}


def forward_check(device: str) -> dict:
    """``time_forward``'s batch time and GPU memory against batches timed directly."""
    import numpy as np
    import torch

    from segpipe.models.foundation import Precision
    from segpipe.models.loading import load_model
    from segpipe.pipeline.estimate import time_forward
    from segpipe.pipeline.labels import labels_from_logits

    model = load_model("unet", device)
    tile = np.random.default_rng(0).random((3, 572, 572), dtype=np.float32)
    out: dict = {"device": torch.cuda.get_device_name() if model.device.type == "cuda"
                 else platform.machine(), "torch": torch.__version__, "runs": {}}
    for precision in (Precision.FP32, Precision.BF16):
        for batch in (1, 4, 16, 64):
            est = time_forward(model, tile, precision, batch)
            x = np.repeat(tile[None], batch, 0)
            for _ in range(3):
                labels_from_logits(model.predict(x, precision=precision)).cpu()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if model.device.type == "cuda" else 0
            times = []
            for _ in range(7):
                start = time.perf_counter()
                labels_from_logits(model.predict(x, precision=precision)).cpu()
                times.append(time.perf_counter() - start)
            real_s = sorted(times)[3]
            run = {"timed_batch": est.timed_batch, "estimated_batch_s": est.tile_seconds * batch,
                   "measured_batch_s": real_s,
                   "ratio_s": round(real_s / (est.tile_seconds * batch), 3)}
            if model.device.type == "cuda":
                real = torch.cuda.max_memory_allocated() - base
                run |= {"estimated_device_bytes": est.device_bytes, "measured_device_bytes": real,
                        "ratio_device_bytes": round(real / (est.device_bytes or 1), 3)}
            out["runs"][f"{precision}-batch{batch}"] = run
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--model", default=None, help="default: the bundled landcover_rgb")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--forward-only", action="store_true")
    ap.add_argument("--device", default="auto", help="for --forward-only")
    args, extra = ap.parse_known_args()
    if args.forward_only:
        result = forward_check(args.device)
        path = Path(args.out).with_name("inspect_estimate_forward.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["runs"], indent=1))
        return
    from segpipe.models.bundled import zoo_dir
    from tests.conftest import smooth_image, write_geotiff

    model = args.model or str(zoo_dir() / "landcover_rgb.pt")
    options = ["--model", model, "--device", "cpu", *extra]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        image = write_geotiff(Path(tmp) / "scene.tif",
                              smooth_image((3, args.size, args.size), "uint8"))
        report = inspect(image, options)
        measured = run(image, Path(tmp) / "labels.tif", options)
    est = report["estimate"]
    if est is None:
        raise RuntimeError(f"inspect gave no estimate: {report['problems']}")
    result = {
        "what": "segpipe inspect --model estimate against the measured segpipe run --workers 0",
        "image": f"{args.size}x{args.size}x3 uint8 GeoTIFF, EPSG:32621, 30 m",
        "model": Path(model).name,
        "options": options[2:],
        "plan": {k: report["plan"][k] for k in ("tile", "halo", "extra", "input_size")}
        | {"tiles": report["plan"]["tiles"]["total"]},
        "machine": {"cores": os.cpu_count(), "processor": platform.machine(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "inspect_seconds": report["inspect_seconds"],
        "estimate": est,
        "measured": measured,
        "ratio_seconds": round(measured["seconds"] / est["seconds"], 3),
        "ratio_model_seconds": round(measured["stage_seconds"]["segment"]
                                     / est["time"]["model_seconds"], 3),
        "ratio_peak_memory": round(measured["peak_rss_bytes"] / est["peak_memory_bytes"], 3),
        "note": "ratio = measured / estimated; the machine is shared, see load_average",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_seconds", "ratio_model_seconds",
                                            "ratio_peak_memory")}))


if __name__ == "__main__":
    main()
