"""The host side's ceiling: what segpipe's stages cost with the model's own time taken out.

On a fast GPU the model is not what limits a run: reading, ingesting, normalizing, stitching,
counting objects and writing the COG are. This measures that host side on any machine, with
the model a 1×1 convolution (its forward pass a small share of the run, as a U-Net's is on an
H200), in the stage sequence of ``segpipe run --workers 0`` (no Prefect, no Dask), on a
3-band uint8 GeoTIFF, tile 512, halo 32:

- blocks in turn (one host thread, torch on every core): the CPU default;
- blocks on host threads (``--threads``, default: every core, at most 4; torch on one core
  each): what a GPU's blocks get.

Each configuration runs in a fresh process, the two alternating, ``--runs`` times each. Writes
``benchmarks/results/hostside.json`` (every run's whole and stage seconds) and
``hostside.md`` (medians, minimum and maximum), and prints the table.

    .venv/bin/python benchmarks/hostside.py [--side 8192] [--runs 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"


def one_run(image: str, model: str, out: str, threads: int) -> dict:
    """The stage sequence in this process; whole and stage seconds (run in a child process)."""
    import torch
    from workloads import HALO, TILE

    from segpipe.pipeline.executor import InProcessExecutor
    from segpipe.pipeline.options import RunOptions
    from segpipe.pipeline.stages import RunContext, run_one

    if threads > 1:  # each host thread's torch on one core, as beside a GPU
        torch.set_num_threads(1)
    options = RunOptions.of(image, out, model=model, tile=TILE, halo=HALO, device="cpu",
                            overwrite=True)
    start = time.perf_counter()
    summary = run_one(options, RunContext(InProcessExecutor(threads)))
    return {"threads": threads, "seconds": time.perf_counter() - start,
            "stage_seconds": summary["stage_seconds"]}


def child(image: Path, model: Path, out: Path, threads: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from hostside import one_run; "
            f"print(json.dumps(one_run({str(image)!r}, {str(model)!r}, {str(out)!r}, {threads})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def table(runs: list[dict], megapixels: float) -> tuple[dict, str]:
    """Per configuration: median/min/max of the whole run and of each stage; MP/s."""
    summary: dict = {}
    for threads in sorted({r["threads"] for r in runs}):
        mine = [r for r in runs if r["threads"] == threads]
        stages = {s: spread([r["stage_seconds"][s] for r in mine])
                  for s in mine[0]["stage_seconds"]}
        whole = spread([r["seconds"] for r in mine])
        summary[str(threads)] = {"seconds": whole, "stages": stages,
                                 "mp_per_s": megapixels / whole["median"]}
    names = list(next(iter(summary.values()))["stages"])
    lines = ["| host threads | whole run (s) | MP/s | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for threads, row in summary.items():
        cells = [f"{row['stages'][s]['median']:.2f}" for s in names]
        w = row["seconds"]
        lines.append(f"| {threads} | {w['median']:.2f} ({w['min']:.2f}–{w['max']:.2f}) | "
                     f"{row['mp_per_s']:.1f} | " + " | ".join(cells) + " |")
    return summary, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=8192)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    from workloads import make_cheap_model, make_image

    with tempfile.TemporaryDirectory(prefix="segpipe-host-") as tmp:
        folder = Path(tmp)
        image = make_image(folder / "in.tif", args.side, seed=1)
        model = make_cheap_model(folder / "conv1x1.pt2")
        runs = []
        for rep in range(args.runs):
            for threads in (1, args.threads):
                r = child(image, model, folder / f"out_{threads}.tif", threads)
                print(f"  run {rep + 1}: {threads} host thread(s) {r['seconds']:.2f} s "
                      f"(segment {r['stage_seconds']['segment']:.2f} s)", flush=True)
                runs.append(r)
        same = (folder / "out_1.tif").read_bytes() == (folder / f"out_{args.threads}.tif"
                                                        ).read_bytes()
    megapixels = args.side * args.side / 1e6
    summary, text = table(runs, megapixels)
    result = {"what": "host side with a 1x1 model, stage sequence in one process",
              "side": args.side, "cores": os.cpu_count(), "same_bytes": same,
              "summary": summary, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hostside.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "hostside.md").write_text(
        f"{args.side}² ({megapixels:.0f} MP), {os.cpu_count()} cores, medians of "
        f"{args.runs} runs (min–max); label files identical: {same}\n\n{text}\n")
    print(text)
    print(f"label files identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
