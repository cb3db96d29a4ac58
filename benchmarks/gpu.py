"""segpipe on one CUDA GPU: bare-model and end-to-end MP/s, fp32 and bf16, and their agreement.

One self-contained script for a CUDA machine; it needs nothing from the network and finishes in
a few minutes on an H200. It measures, on a same-padding U-Net of base width 32 (depth 4 by
default), tile 512, halo 32, and a seeded 3-band uint8 GeoTIFF of 8192² (and 2048², so fixed
costs can be taken out):

- the bare model: batches already on the GPU, eager, fp32 and bf16 autocast (the limit);
- segpipe end to end, disk → COG, fp32 and bf16: the library's stage sequence in this process
  (``run_one``, what ``segpipe run --workers 0`` runs, minus Prefect), its MP/s on the large
  image and its marginal rate; and ``segpipe run`` itself (the CLI, one Dask worker per GPU)
  when Prefect and Dask are installed;
- label agreement of bf16 with fp32 (end to end), and the batch size chosen for free memory;
- the large fp32 run again with one host thread (the default feeds the GPU from up to four).

Writes ``$OUT/gpu.json`` when ``OUT`` is set, else ``benchmarks/results/gpu.json``
(``gpu-<arch>.json`` with ``--arch``), and prints a summary. segpipe need not be installed: the
repository's folders are mapped onto the ``segpipe`` package when it is not (its dependencies
must be: BENCHMARKS.md, "GPU").

    python3 benchmarks/gpu.py [--side 8192] [--depth 4] [--arch deeplabv3_resnet50] [--skip-cli]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def ensure_segpipe() -> str:
    """Import segpipe; when it is not installed, map the repository's folders onto it."""
    try:
        import segpipe.pipeline.stages

        return "installed"
    except ImportError:
        pass
    shim = Path(tempfile.mkdtemp(prefix="segpipe-shim-"))
    pkg = shim / "segpipe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("pipeline", "models", "flows"):
        (pkg / name).symlink_to(REPO / name)
    sys.path.insert(0, str(shim))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(shim), *filter(None, [os.environ.get("PYTHONPATH")])])
    import segpipe.pipeline.stages  # noqa: F401

    return f"mapped from {REPO}"


DEVICE = "cuda"


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed_cuda(fn, repeat: int) -> float:
    _sync()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync()
    return time.perf_counter() - start


def bare(model_path: Path, batch: int, seconds: float = 8.0) -> dict:
    """The model alone on one batch on the GPU, eager, fp32 and bf16 autocast."""
    import torch
    from workloads import HALO, TILE

    from segpipe.models import load_model

    model = load_model(model_path, device=DEVICE, channels_last=False)
    net = model.module
    assert net is not None
    size = TILE + 2 * HALO
    x = torch.rand(batch, 3, size, size, device=DEVICE)
    out = {}
    for precision in ("fp32", "bf16"):
        def step(p=precision) -> None:
            with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16,
                                                        enabled=p == "bf16"):
                net(x).argmax(1)

        timed_cuda(step, 3)  # warm-up (cuDNN algorithm choice)
        one = timed_cuda(step, 1)
        repeat = max(3, min(200, int(seconds / max(one, 1e-4))))
        t = timed_cuda(step, repeat)
        out[precision] = {"mp_per_s": repeat * batch * TILE * TILE / t / 1e6,
                          "batches": repeat, "seconds": t}
    return out


def end_to_end(image: Path, model: Path, out: Path, precision: str,
               threads: int | None = None) -> dict:
    """The stage sequence in this process (disk → COG); wall seconds and stage seconds.

    ``threads``: host threads running blocks (None: segpipe's default for a GPU).
    """
    from workloads import HALO, TILE

    from segpipe.pipeline.executor import InProcessExecutor
    from segpipe.pipeline.options import RunOptions
    from segpipe.pipeline.stages import RunContext, run_one

    start = time.perf_counter()
    summary = run_one(RunOptions.of(str(image), str(out), model=str(model), tile=TILE,
                                    halo=HALO, device=DEVICE, precision=precision,
                                    overwrite=True), RunContext(InProcessExecutor(threads)))
    return {"seconds": time.perf_counter() - start,
            "stage_seconds": summary["stage_seconds"]}


def cli(image: Path, model: Path, out: Path, precision: str) -> dict:
    """``segpipe run`` (Prefect + one Dask worker per GPU) in a subprocess."""
    from workloads import HALO, TILE

    code = "import sys; from segpipe.flows.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", code, "run", "--input", str(image), "--output", str(out),
           "--model", str(model), "--tile", str(TILE), "--halo", str(HALO), "--device",
           DEVICE, "--precision", precision, "--quiet", "--overwrite"]
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return {"seconds": time.perf_counter() - start}


def agreement(a: Path, b: Path) -> float:
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return float((x.read(1) == y.read(1)).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=8192)
    ap.add_argument("--small", type=int, default=2048)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--arch", default="unet",
                    help="unet (base width 32, --depth) or a torchvision network such as "
                    "deeplabv3_resnet50 (random weights); results go to gpu-<arch>.json "
                    "for any other than unet")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="run every step on the CPU (to check the script, not to measure)")
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = "cpu" if args.cpu_dry_run else "cuda"
    t0 = time.perf_counter()
    result: dict = {"what": "segpipe on one CUDA GPU", "errors": {}}
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else HERE / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_name = "gpu.json" if args.arch == "unet" else f"gpu-{args.arch}.json"
    folder = Path(tempfile.mkdtemp(prefix="segpipe-gpu-"))

    def step(name: str, fn):
        print(f"[{time.perf_counter() - t0:6.1f} s] {name} …", flush=True)
        try:
            result[name] = fn()
        except Exception as exc:  # keep going: report what worked
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        (out_dir / json_name).write_text(json.dumps(result, indent=2, default=str))

    try:
        result["segpipe"] = ensure_segpipe()
        import torch

        if DEVICE == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: nothing to measure (--cpu-dry-run checks the script)")
            return 2
        from workloads import HALO, TILE, make_image, make_torchvision, make_unet

        from segpipe.models import load_model
        from segpipe.models.foundation import Precision
        from segpipe.pipeline.batches import default_batch_size

        gpu = torch.cuda.get_device_properties(0) if DEVICE == "cuda" else None
        result["machine"] = {
            "gpu": gpu.name if gpu else "none (CPU dry run)",
            "gpu_memory_gib": round(gpu.total_memory / 2**30) if gpu else None,
            "torch": torch.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        if args.arch == "unet":
            model = make_unet(folder / "unet.pt", depth=args.depth)
            result["model"] = f"U-Net same padding, depth {args.depth}, base width 32, 4 classes"
        else:
            model = make_torchvision(folder / f"{args.arch}.pt", args.arch)
            result["model"] = f"torchvision {args.arch}, random weights, 4 classes"
        loaded = load_model(model, device=DEVICE)
        size = TILE + 2 * HALO
        batch = default_batch_size(loaded, Precision.FP32, (3, size, size))
        result["batch_size_fitted"] = batch
        del loaded
        step("bare", lambda: bare(model, batch))
        images = {}
        step("images", lambda: {s: str(images.setdefault(s, make_image(
            folder / f"in_{s}.tif", s, seed=s))) for s in (args.small, args.side)})
        runs: dict = {}
        for precision in ("fp32", "bf16"):
            for side in (args.small, args.side):
                name = f"end_to_end_{precision}_{side}"
                step(name, lambda p=precision, s=side: end_to_end(
                    images[s], model, folder / f"out_{p}_{s}.tif", p))
                runs[(precision, side)] = result.get(name)
        step(f"end_to_end_fp32_{args.side}_one_host_thread", lambda: end_to_end(
            images[args.side], model, folder / "out_one_thread.tif", "fp32", threads=1))
        step("agreement_bf16_vs_fp32", lambda: agreement(
            folder / f"out_fp32_{args.side}.tif", folder / f"out_bf16_{args.side}.tif"))
        if not args.skip_cli:
            for precision in ("fp32", "bf16"):
                step(f"cli_{precision}_{args.side}", lambda p=precision: cli(
                    images[args.side], model, folder / f"cli_{p}.tif", p))
        summarize(result, runs, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        result["minutes"] = round((time.perf_counter() - t0) / 60, 2)
        (out_dir / json_name).write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps({k: v for k, v in result.items() if k != "bare"}, indent=2,
                         default=str)[:6000])
        print(f"wrote {out_dir / json_name}")
    return 0


def summarize(result: dict, runs: dict, args) -> None:
    """MP/s end to end (whole run and marginal) against the bare model, per precision."""
    small, large = args.small * args.small / 1e6, args.side * args.side / 1e6
    table = {}
    for precision in ("fp32", "bf16"):
        a, b = runs.get((precision, args.small)), runs.get((precision, args.side))
        bare_rate = (result.get("bare") or {}).get(precision, {}).get("mp_per_s")
        if not (a and b):
            continue
        whole = large / b["seconds"]
        marginal = (large - small) / (b["seconds"] - a["seconds"])
        cli_run = result.get(f"cli_{precision}_{args.side}")
        table[precision] = {
            "bare_mp_per_s": bare_rate, "end_to_end_mp_per_s": whole,
            "marginal_mp_per_s": marginal,
            "end_to_end_vs_bare": whole / bare_rate if bare_rate else None,
            "marginal_vs_bare": marginal / bare_rate if bare_rate else None,
            "cli_mp_per_s": large / cli_run["seconds"] if cli_run else None,
            "stage_seconds_large": b["stage_seconds"],
        }
    one = result.get(f"end_to_end_fp32_{args.side}_one_host_thread")
    if one and "fp32" in table:
        table["fp32"]["one_host_thread_mp_per_s"] = large / one["seconds"]
        table["fp32"]["one_host_thread_stage_seconds"] = one["stage_seconds"]
    result["summary"] = table
    for p, row in table.items():
        bare_text = f"{row['bare_mp_per_s']:.1f}" if row["bare_mp_per_s"] else "?"
        print(f"{p}: bare {bare_text} MP/s, end to end {row['end_to_end_mp_per_s']:.1f} MP/s "
              f"(marginal {row['marginal_mp_per_s']:.1f}); ratio "
              f"{row['end_to_end_vs_bare'] or 0:.3f}; stages {row['stage_seconds_large']}")


if __name__ == "__main__":
    sys.exit(main())
