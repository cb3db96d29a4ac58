"""``make bench``: segpipe against the bare model, MONAI and a plain rasterio loop, in one run.

Same image and model for everyone: 3-band uint8 GeoTIFFs of 2048² and 6144² (``--quick``: 1024²
and 3072²), a same-padding U-Net of base width 32, tile 512, halo 32. Each contender runs in its
own child process, its process tree's PSS sampled every 0.2 s; repetitions are interleaved
(A B C … A B C …) and the best time of each is kept, so a busy machine slows all contenders
alike and the ratios hold even where absolute rates do not.

- bare: the model alone, eager float32, batches of 4 tiles (576²) already in memory: the limit;
- segpipe: ``segpipe run`` in a subprocess with its defaults (COG output) on both sizes: the
  marginal rate (difference of the two runs, so fixed costs cancel) and the fixed start-up
  (the intercept); the same for each opt-in speed mode, with its labels' agreement with the
  default (bit-exact float32) labels;
- MONAI ``sliding_window_inference``: Gaussian with the same window (576) and overlap (64 px),
  and constant with overlap 0, on the large image in memory;
- rasterio: 512² windows, no overlap, read → model → GeoTIFF, on the large image;
- start-up for one small input and the per-input overhead inside a batch (a 1×1 model);
- the scaling curve (``memory.py``): time and peak PSS at 0.06 and 0.25 GP (``--gigapixel``
  adds 1 GP).

Writes ``benchmarks/results/<name>.json``, ``<name>.md`` and PNG plots; BENCHMARKS.md explains.

    .venv/bin/python benchmarks/bench.py [--quick] [--reps N] [--gigapixel] [--name bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import memory  # noqa: E402
import plots  # noqa: E402
from pss import measure  # noqa: E402
from workloads import HALO, TILE, make_cheap_model, make_image, make_unet  # noqa: E402

RESULTS = HERE / "results"
PY = sys.executable
SEGPIPE = str(Path(sys.executable).with_name("segpipe"))

#: segpipe's other modes measured besides the default (name → extra CLI arguments)
SEGPIPE_MODES: dict[str, list[str]] = {
    "segpipe in-process": ["--workers", "0"],
    "segpipe bf16": ["--precision", "bf16"],
    "segpipe onnxruntime": ["--backend", "onnxruntime"],
}
#: full mode only (torch.compile takes minutes to compile on two cores)
SLOW_MODES: dict[str, list[str]] = {"segpipe compile": ["--backend", "compile"]}


@dataclass
class Bench:
    """One benchmark run: where its files are, its settings and what it measured."""

    folder: Path
    quick: bool
    env: dict[str, str]
    runs: list[dict] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)

    def record(self, method: str, size: int, result: dict, megapixels: float,
               seconds: float | None = None) -> None:
        seconds = result["seconds"] if seconds is None else seconds
        self.runs.append({
            "method": method, "side": size, "megapixels": round(megapixels, 4),
            "seconds": round(seconds, 3), "wall_seconds": result["seconds"],
            "cpu_seconds": result.get("cpu_seconds"),
            "cpu_timed": bool(result.get("cpu_timed")),
            "peak_pss_gib": result["peak_pss_gib"],
            "per_process_at_peak": result.get("per_process_at_peak", {}),
        })
        print(f"  {method:<22} {size:>5}²  {seconds:8.2f} s  {megapixels / seconds:6.3f} MP/s"
              f"  cpu {result.get('cpu_seconds') or 0:7.1f} s"
              f"  peak PSS {result['peak_pss_gib']:.2f} GiB", flush=True)


def child(bench: Bench, method: str, *args: str) -> dict:
    """Run ``methods.py`` in a child process; its JSON merged with the measured wall and PSS."""
    result = measure([PY, str(HERE / "methods.py"), method, *args], bench.env)
    inner = json.loads(result["output_tail"].strip().splitlines()[-1])
    # the timed part's own CPU seconds (the process's imports and loading are not in them)
    return {**result, **inner, "wall_seconds": result["seconds"], "seconds": inner["seconds"]}


def segpipe(bench: Bench, name: str, image: Path, model: Path, extra: list[str],
            out: Path) -> dict:
    """``segpipe run`` with its defaults (plus ``extra``) in a subprocess."""
    cmd = [SEGPIPE, "run", "--input", str(image), "--output", str(out), "--model", str(model),
           "--tile", str(TILE), "--halo", str(HALO), "--quiet", "--overwrite", *extra]
    return measure(cmd, bench.env)


def one_rep(bench: Bench, images: dict[int, Path], model: Path, cheap: Path, rep: int,
            bare_tiles: int) -> None:
    small, large = sorted(images)
    r = child(bench, "bare", "--image", str(images[small]), "--model", str(model),
              "--tiles", str(bare_tiles))
    bench.record("bare model", small, r, r["megapixels"])
    modes = {"segpipe": [], **SEGPIPE_MODES, **({} if bench.quick else SLOW_MODES)}
    for name, extra in modes.items():
        for side in (small, large):
            out = bench.folder / f"{name.replace(' ', '_')}_{side}.tif"
            try:
                r = segpipe(bench, name, images[side], model, extra, out)
            except RuntimeError as exc:  # a mode this segpipe lacks: say so, go on
                if name == "segpipe":
                    raise
                print(f"  {name}: failed, left out ({str(exc).splitlines()[-1][:120]})")
                break
            bench.record(name, side, r, side * side / 1e6)
            if side == small and rep == 0:
                keep = bench.folder / f"keep_{out.name}"
                shutil.copy(out, keep)
                bench.outputs[name] = keep
            out.unlink(missing_ok=True)
    for mode in ("gaussian", "constant"):
        r = child(bench, "monai", "--image", str(images[large]), "--model", str(model),
                  "--mode", mode)
        bench.record(f"MONAI {mode}", large, r, r["megapixels"])
    out = bench.folder / "rasterio.tif"
    r = child(bench, "rasterio", "--image", str(images[large]), "--model", str(model),
              "--out", str(out))
    bench.record("rasterio loop", large, r, r["megapixels"])
    out.unlink(missing_ok=True)
    startup_and_batch(bench, cheap)


def startup_and_batch(bench: Bench, cheap: Path) -> None:
    """One small input (start-up), and batches of 1 and 6 small inputs (per-input overhead)."""
    folder = bench.folder / "batch"
    if not folder.exists():
        folder.mkdir()
        for i in range(6):
            make_image(folder / f"scan{i}.tif", 384, seed=i)
        (bench.folder / "one").mkdir()
        shutil.copy(folder / "scan0.tif", bench.folder / "one" / "scan0.tif")
    for name, src, n in (("start-up, one input", bench.folder / "one", 1),
                         ("batch of 6 inputs", folder, 6)):
        outdir = bench.folder / f"out_{n}"
        cmd = [SEGPIPE, "run", "--input", str(src), "--output", str(outdir), "--model",
               str(cheap), "--quiet", "--overwrite"]
        r = measure(cmd, bench.env)
        bench.record(name, 384, r, n * 384 * 384 / 1e6)
        shutil.rmtree(outdir, ignore_errors=True)


def agreement(reference: Path, other: Path) -> float:
    """Fraction of pixels whose labels are equal in two label GeoTIFFs."""
    import rasterio

    with rasterio.open(reference) as a, rasterio.open(other) as b:
        return float((a.read(1) == b.read(1)).mean())


# ------------------------------------------------------------------------------ summary


def best(runs: list[dict], method: str, side: int | None = None) -> dict | None:
    """The fastest run of ``method`` (at ``side``), with the median time of its runs."""
    rows = [r for r in runs if r["method"] == method and (side is None or r["side"] == side)]
    if not rows:
        return None
    top = min(rows, key=lambda r: r["seconds"])
    return {**top, "median_seconds": statistics.median(r["seconds"] for r in rows),
            "runs": len(rows), "peak_pss_gib": max(r["peak_pss_gib"] for r in rows)}


def summarize(bench: Bench, sides: tuple[int, int]) -> dict:
    """Rates, marginal rates, fixed costs and ratios from the recorded runs."""
    small, large = sides
    table: dict[str, dict] = {}
    bare = best(bench.runs, "bare model")
    assert bare is not None
    bare_rate = bare["megapixels"] / bare["seconds"]
    table["bare model"] = {"rate": bare_rate, "peak_pss_gib": bare["peak_pss_gib"],
                           "note": "eager float32, batches of 4 tiles in memory"}
    for name in ("segpipe", *SEGPIPE_MODES, *SLOW_MODES):
        a, b = best(bench.runs, name, small), best(bench.runs, name, large)
        if a is None or b is None:
            continue
        rate = (b["megapixels"] - a["megapixels"]) / (b["seconds"] - a["seconds"])
        table[name] = {
            "rate": rate, "fixed_seconds": a["seconds"] - a["megapixels"] / rate,
            "seconds": {small: a["seconds"], large: b["seconds"]},
            "peak_pss_gib": max(a["peak_pss_gib"], b["peak_pss_gib"]),
            "note": "marginal rate, disk → COG",
        }
        if name in bench.outputs and "segpipe" in bench.outputs:
            table[name]["agreement"] = agreement(bench.outputs["segpipe"], bench.outputs[name])
    for name in ("MONAI gaussian", "MONAI constant", "rasterio loop"):
        r = best(bench.runs, name, large)
        if r is not None:
            table[name] = {"rate": r["megapixels"] / r["seconds"],
                           "peak_pss_gib": r["peak_pss_gib"],
                           "note": "image in memory" if "MONAI" in name else "disk → GeoTIFF"}
    _cpu_rates(bench, table, sides)
    for row in table.values():
        row["vs_bare"] = row["rate"] / bare_rate
        if row.get("cpu_rate") and table["bare model"].get("cpu_rate"):
            row["cpu_vs_bare"] = row["cpu_rate"] / table["bare model"]["cpu_rate"]
    one = best(bench.runs, "start-up, one input")
    six = best(bench.runs, "batch of 6 inputs")
    overhead = {}
    if one and six:
        overhead = {"one_input_seconds": one["seconds"], "six_inputs_seconds": six["seconds"],
                    "per_extra_input_seconds": (six["seconds"] - one["seconds"]) / 5,
                    "one_input_cpu_seconds": one.get("cpu_seconds"),
                    "six_inputs_cpu_seconds": six.get("cpu_seconds"),
                    "per_extra_input_cpu_seconds":
                        (six["cpu_seconds"] - one["cpu_seconds"]) / 5
                        if one.get("cpu_seconds") and six.get("cpu_seconds") else None,
                    "peak_pss_gib": max(one["peak_pss_gib"], six["peak_pss_gib"])}
    monai = table.get("MONAI gaussian", {}).get("rate")
    fastest = max((n for n in table if n.startswith("segpipe")
                   and table[n].get("agreement", 1.0) >= 0.9999),
                  key=lambda n: table[n]["rate"], default=None)
    targets = {
        "marginal_vs_bare (>= 0.95)": table.get("segpipe", {}).get("vs_bare"),
        "fastest_exactish_vs_monai_gaussian (>= 1.05)":
            (table[fastest]["rate"] / monai) if fastest and monai else None,
        "fastest_mode": fastest,
        "fixed_startup_seconds (<= 8)": overhead.get("one_input_seconds"),
        "fixed_startup_extrapolated_seconds": table.get("segpipe", {}).get("fixed_seconds"),
        "per_extra_input_seconds (<= 0.5)": overhead.get("per_extra_input_seconds"),
    }
    return {"table": table, "batch": overhead, "targets": targets}


def _cpu_rates(bench: Bench, table: dict, sides: tuple[int, int]) -> None:
    """MP per CPU-second (a steadier figure than wall time on a shared machine).

    In-process contenders: the timed part's CPU; segpipe: the difference of the two sizes'
    process-tree CPU (fixed costs cancel, as for the marginal rate).
    """
    small, large = sides
    for name, row in table.items():
        if name.startswith("segpipe"):
            a, b = best(bench.runs, name, small), best(bench.runs, name, large)
            if a and b and a.get("cpu_seconds") and b.get("cpu_seconds"):
                row["cpu_rate"] = (b["megapixels"] - a["megapixels"]) / (
                    b["cpu_seconds"] - a["cpu_seconds"])
        else:
            r = best(bench.runs, name)
            if r and r.get("cpu_seconds") and r.get("cpu_timed"):
                row["cpu_rate"] = r["megapixels"] / r["cpu_seconds"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024² and 3072², one repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 2; quick 1)")
    ap.add_argument("--gigapixel", action="store_true", help="add the 1 GP scaling point")
    ap.add_argument("--no-scaling", action="store_true", help="skip the scaling curve")
    ap.add_argument("--depth", type=int, default=1, help="U-Net depth (default 1)")
    ap.add_argument("--name", default=None, help="results file stem (default bench[-quick])")
    ap.add_argument("--workdir", default=None, help="where inputs and outputs go (temp)")
    ap.add_argument("--from-json", default=None,
                    help="recompute the tables and plots of an earlier results JSON")
    args = ap.parse_args(argv)
    if args.from_json:
        return resummarize(Path(args.from_json))
    sides = (1024, 3072) if args.quick else (2048, 6144)
    reps = args.reps or (1 if args.quick else 2)
    name = args.name or ("bench-quick" if args.quick else "bench")
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    # a busy machine can take longer than Prefect's default 20 s to start its temporary server
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    folder = Path(tempfile.mkdtemp(prefix="segpipe-bench-", dir=args.workdir))
    bench = Bench(folder, args.quick, env)
    start = time.monotonic()
    try:
        images = {s: make_image(folder / f"in_{s}.tif", s, seed=s) for s in sides}
        model = make_unet(folder / "unet.pt", depth=args.depth)
        cheap = make_cheap_model(folder / "conv1x1.pt2")
        for rep in range(reps):
            print(f"repetition {rep + 1}/{reps}", flush=True)
            one_rep(bench, images, model, cheap, rep, bare_tiles=16 if args.quick else 48)
        summary = summarize(bench, sides)
        scaling = None
        if not args.no_scaling:
            sizes = (0.01, 0.06) if args.quick else (0.06, 0.25)
            scaling = memory.curve((*sizes, 1.0) if args.gigapixel else sizes,
                                   workdir=str(folder), env=env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "name": name, "quick": args.quick, "repetitions": reps,
        "minutes": round((time.monotonic() - start) / 60, 1),
        "machine": machine(), "sides": sides, "tile": TILE, "halo": HALO,
        "model": f"U-Net, same padding, depth {args.depth}, base width 32, 3 bands → 4 classes",
        **summary, "scaling": scaling, "runs": bench.runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(plots.markdown(result))
    plots.draw(result, RESULTS)
    print(plots.markdown(result))
    return 0


def resummarize(path: Path) -> int:
    """The summary, Markdown and plots of a results JSON again (label agreements kept)."""
    old = json.loads(path.read_text())
    bench = Bench(Path("."), old["quick"], {}, runs=old["runs"])
    summary = summarize(bench, tuple(old["sides"]))
    for name, row in summary["table"].items():
        if "agreement" in old["table"].get(name, {}):
            row["agreement"] = old["table"][name]["agreement"]
    result = {**old, **summary}
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(plots.markdown(result))
    plots.draw(result, path.parent)
    print(plots.markdown(result))
    return 0


def machine() -> dict:
    import psutil
    import torch

    return {"cores": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "torch": torch.__version__, "load_average_at_end": os.getloadavg(),
            "numpy": np.__version__}


if __name__ == "__main__":
    sys.exit(main())
