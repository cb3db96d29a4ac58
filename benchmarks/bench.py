"""``make bench``: segpipe against the bare model, MONAI and a plain rasterio loop, fairly.

Same images, model and torch threads for everyone: 3-band uint8 GeoTIFFs of 2048² and 6144²
(``--quick``: 512² and 1024², one repetition: a smoke test, not a measurement), a same-padding
U-Net of base width 32, tile 512, halo 32. Each contender runs on both sizes in its own child
process (its process tree's PSS sampled every 0.2 s), repetitions interleaved (A B C … A B C …,
5 by default). Every rate is a **marginal rate** between the two sizes, computed per repetition
(fixed costs cancel), reported as the median with min–max, in wall time and per CPU-second
(``getrusage`` of the children).

- bare: the model alone, eager float32, batches of 4 tiles (576²) in memory: the limit;
- segpipe: ``segpipe run`` with its defaults, disk → COG; the same for each opt-in mode
  (``--backend compile`` only with ``--compile``: it compiles for minutes in every run);
- MONAI ``sliding_window_inference``: Gaussian with the same window (576) and overlap (64 px),
  and constant with overlap 0, each **plus the same file I/O as segpipe** (read once with GDAL on
  every core, labels written once as a COG with segpipe's settings: ``fairio.py``);
- rasterio: the loop users write (512² windows, no overlap), plus the same COG written once;
- start-up for one small input and the per-input overhead inside a batch (a 1×1 model);
- the scaling curve (``memory.py``): time and peak PSS at 0.06 and 0.25 GP;
- then issue 17's comparison, ``iolimit.py`` (segpipe against 1 / (1/bare + 1/I/O) and the host
  side against the I/O limit), with the same ``--quick`` and ``--reps`` (``--no-iolimit``
  skips it).

Bare, MONAI and the loop run at their **best layout**: NCHW and channels-last are measured on
their batches first and the faster is used (reported). Every mode's labels are compared with an
independent NCHW eager float32 forward pass over the whole small image (``reference.py``).

Writes ``benchmarks/results/<name>.json``, ``<name>.md`` and PNG plots; BENCHMARKS.md explains.

    .venv/bin/python benchmarks/bench.py [--quick] [--reps N] [--gigapixel] [--name bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import contenders as cs  # noqa: E402
import interleave as il  # noqa: E402
import memory  # noqa: E402
import plots  # noqa: E402
from iolimit import bench_env, machine, torch_threads  # noqa: E402
from workloads import HALO, TILE, make_cheap_model, make_image, make_unet  # noqa: E402

RESULTS = HERE / "results"

#: segpipe's other modes measured besides the default (name → extra CLI arguments)
SEGPIPE_MODES: dict[str, list[str]] = {
    "segpipe in-process": ["--workers", "0"],
    "segpipe bf16": ["--precision", "bf16"],
    "segpipe onnxruntime": ["--backend", "onnxruntime"],
}
#: only with --compile (torch.compile takes minutes to compile on two cores, in every run)
SLOW_MODES: dict[str, list[str]] = {"segpipe compile": ["--backend", "compile"]}
BARE = "bare model"
MONAI_MODES = ("gaussian", "constant")
LOOP = "rasterio loop + I/O"


def layouts(model: Path, threads: int, env: dict[str, str], reps: int) -> dict:
    """Each baseline's layouts measured on its own batches: bare and MONAI 576², the loop 512²."""
    window = cs.best_layout(model, TILE + 2 * HALO, threads, env, reps)
    loop = cs.best_layout(model, TILE, threads, env, reps)
    print(f"  best layout: bare and MONAI {window['best']}, loop {loop['best']}", flush=True)
    return {BARE: window, **{f"MONAI {m} + I/O": window for m in MONAI_MODES}, LOOP: loop}


def build(setup: cs.Setup, model: Path, best: dict, compile_: bool) -> list[il.Contender]:
    """Every throughput contender, in the order each repetition runs them."""
    out = [cs.method(setup, BARE, "bare", model, best[BARE]["best"],
                     note="eager float32, batches of 4 tiles in memory")]
    modes = {"segpipe": [], **SEGPIPE_MODES, **(SLOW_MODES if compile_ else {})}
    out += [cs.segpipe(setup, n, model, extra, note="disk → COG", optional=n != "segpipe")
            for n, extra in modes.items()]
    out += [cs.method(setup, f"MONAI {m} + I/O", "monai", model,
                      best[f"MONAI {m} + I/O"]["best"], "--mode", m,
                      note="read once, sliding_window_inference, COG once") for m in MONAI_MODES]
    out.append(cs.method(setup, LOOP, "loop", model, best[LOOP]["best"],
                         note="512² windows, no overlap, COG once"))
    return out


def small_inputs(folder: Path, cheap: Path) -> list[il.Contender]:
    """One small input (start-up) and a folder of six (per-input overhead), 1×1 model."""
    batch = folder / "batch"
    batch.mkdir()
    for i in range(6):
        make_image(batch / f"scan{i}.tif", 384, seed=i)
    (folder / "one").mkdir()
    shutil.copy(batch / "scan0.tif", folder / "one" / "scan0.tif")

    def run(src: Path, n: int):
        def command(side: int, rep: int) -> list[str]:
            return [cs.SEGPIPE, "run", "--input", str(src), "--output",
                    str(folder / f"out_{n}"), "--model", str(cheap), "--quiet", "--overwrite"]
        return command

    return [il.Contender("start-up, one input", run(folder / "one", 1)),
            il.Contender("batch of 6 inputs", run(batch, 6))]


def summarize(rows: list[dict], sides: tuple[int, int], agree: dict, best: dict) -> dict:
    """Marginal rates, ratios to bare, start-up and per-input overhead; targets."""
    names = list(dict.fromkeys(r["method"] for r in rows if r["side"] in sides))
    per = {n: il.marginal(rows, n, *sides) for n in names}
    table = {}
    for n in names:
        pss = max(r["peak_pss_gib"] for r in rows if r["method"] == n)
        table[n] = {**il.summarize(per[n]), "vs_bare": il.ratio(per[n], per[BARE]),
                    "cpu_vs_bare": il.ratio(per[n], per[BARE], "cpu_rate"),
                    "peak_pss_gib": pss, "agreement": agree.get(n),
                    "layout": best.get(n, {}).get("best") if n in best else
                    ("channels_last (segpipe default)" if n.startswith("segpipe") else None)}
    one = [r for r in rows if r["method"] == "start-up, one input"]
    six = {r["rep"]: r for r in rows if r["method"] == "batch of 6 inputs"}
    extra = [(six[r["rep"]]["seconds"] - r["seconds"]) / 5 for r in one if r["rep"] in six]
    extra_cpu = [(six[r["rep"]]["cpu_seconds"] - r["cpu_seconds"]) / 5 for r in one
                 if r["rep"] in six]
    batch = {"one_input_seconds": il.spread([r["seconds"] for r in one]),
             "one_input_cpu_seconds": il.spread([r["cpu_seconds"] for r in one]),
             "per_extra_input_seconds": il.spread(extra),
             "per_extra_input_cpu_seconds": il.spread(extra_cpu)}
    monai = per.get("MONAI gaussian + I/O", [])
    targets = {
        "segpipe marginal / bare (>= 0.95)": table["segpipe"]["vs_bare"],
        "segpipe / MONAI gaussian + I/O (>= 1.05)": il.ratio(per["segpipe"], monai),
        "segpipe / MONAI gaussian + I/O, per CPU-second":
            il.ratio(per["segpipe"], monai, "cpu_rate"),
        "fixed start-up, one input, s (<= 8)": batch["one_input_seconds"],
        "fixed start-up, intercept, s (<= 8)": table["segpipe"]["fixed_seconds"],
        "per extra input in a batch, s (<= 0.5)": batch["per_extra_input_seconds"],
    }
    return {"table": table, "batch": batch, "targets": targets, "layouts": best}


def agreements(setup: cs.Setup, contenders: list[il.Contender], ref: Path, side: int) -> dict:
    """Every contender's labels on the small image against the NCHW eager reference."""
    out = {BARE: cs.agreement(ref, cs.labels_npy(setup, side))}
    for c in contenders:
        if c.name != BARE and cs.kept(setup, c.name, side).exists():
            out[c.name] = cs.agreement(ref, cs.kept(setup, c.name, side))
    return out


def layout_differences(setup: cs.Setup, contenders: list[il.Contender], side: int) -> dict:
    """Where the baselines' COGs are laid out unlike segpipe's (empty: alike)."""
    import fairio

    theirs = fairio.cog_layout(cs.output(setup, "segpipe", side))
    return {c.name: fairio.layout_diff(fairio.cog_layout(cs.output(setup, c.name, side)), theirs)
            for c in contenders if c.name.startswith(("MONAI", "rasterio"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="512² and 1024², one repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5; quick 1)")
    ap.add_argument("--gigapixel", action="store_true", help="add the 1 GP scaling point")
    ap.add_argument("--no-scaling", action="store_true", help="skip the scaling curve")
    ap.add_argument("--no-iolimit", action="store_true", help="skip iolimit.py afterwards")
    ap.add_argument("--compile", action="store_true",
                    help="also measure --backend compile (minutes of compiling per run)")
    ap.add_argument("--depth", type=int, default=1, help="U-Net depth (default 1)")
    ap.add_argument("--name", default=None, help="results file stem (default bench[-quick])")
    ap.add_argument("--workdir", default=None, help="where inputs and outputs go (temp)")
    args = ap.parse_args(argv)
    sides = (512, 1024) if args.quick else (2048, 6144)
    reps = args.reps or (1 if args.quick else 5)
    name = args.name or ("bench-quick" if args.quick else "bench")
    env, load_before = bench_env(), [round(x, 2) for x in os.getloadavg()]
    folder = Path(tempfile.mkdtemp(prefix="segpipe-bench-", dir=args.workdir))
    start = time.monotonic()
    try:
        images = {s: make_image(folder / f"in_{s}.tif", s, seed=s) for s in sides}
        setup = cs.Setup(folder, images, torch_threads())
        model = make_unet(folder / "unet.pt", depth=args.depth)
        cheap = make_cheap_model(folder / "conv1x1.pt2")
        best = layouts(model, setup.threads, env, reps=2 if args.quick else 5)
        ref = cs.reference(setup, model, sides[0], env)
        contenders = build(setup, model, best, args.compile)
        smalls = small_inputs(folder, cheap)
        runs = il.Runs(folder, env)
        keep = cs.keep_output(setup, {c.name for c in contenders}, sides[0])
        for rep in range(reps):
            print(f"repetition {rep + 1}/{reps}", flush=True)
            runs.interleave(contenders, sides, rep, keep)
            for c in smalls:
                runs.run(c, 384, rep)
        summary = summarize(runs.rows, sides, agreements(setup, contenders, ref, sides[0]),
                            best)
        summary["left_out"] = runs.failed
        summary["cog_layout_differences"] = layout_differences(setup, contenders, sides[1])
        scaling = None
        if not args.no_scaling:
            sizes = (0.01, 0.06) if args.quick else (0.06, 0.25)
            scaling = memory.curve((*sizes, 1.0) if args.gigapixel else sizes,
                                   workdir=str(folder), env=env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "name": name, "quick": args.quick, "repetitions": reps,
        "minutes": round((time.monotonic() - start) / 60, 1), "load_before": load_before,
        "machine": machine(), "threads": setup.threads, "sides": sides, "tile": TILE,
        "halo": HALO,
        "model": f"U-Net, same padding, depth {args.depth}, base width 32, 3 bands → 4 classes",
        **summary, "scaling": scaling, "runs": runs.rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(plots.markdown(result))
    plots.draw(result, RESULTS)
    print(plots.markdown(result))
    if args.no_iolimit:
        return 0
    import iolimit

    return iolimit.main([*(["--quick"] if args.quick else []), "--reps", str(reps),
                         *(["--workdir", args.workdir] if args.workdir else [])])


if __name__ == "__main__":
    sys.exit(main())
