"""Issue 17's comparison in one run: segpipe against the bound that file I/O and the model set.

(i) **The CPU bound.** A same-padding U-Net of width 32, tile 512, halo 32, 3-band uint8
GeoTIFFs of 2048² and 6144² → COG; every figure a marginal rate between the two sizes (start-up
cancels):

- *bare*: the model alone on the image's tiles, batches of 4 in memory, at its best layout
  (NCHW or channels-last, measured here first);
- *I/O*: the unavoidable file work: read the input once (GDAL, every core), write its labels
  once as a COG with segpipe's settings (``fairio.py``);
- *bound*: where the model takes every core, 1 / (1/bare + 1/I/O), per repetition;
- ``segpipe run`` with its defaults, and its fixed start-up (the intercept of the two-size line,
  and one small 384² input with a 1×1 model);
- MONAI ``sliding_window_inference`` (Gaussian, same window and overlap, best layout) plus the
  same I/O.

(ii) **The host side.** A 1×1 convolution (its compute negligible), 3-band uint16 DEFLATE
GeoTIFFs of 4096² and 8192² → COG: ``segpipe run`` against the unavoidable work done directly
(read once, the same 1×1 model and argmax as a matrix product, write the COG once). The ratio
of their times is "× the I/O limit" (issue target ≤ 1.5).

Every contender's labels are compared with an independent NCHW eager whole-image forward pass
(``reference.py``) on the small size. Repetitions interleaved; medians with min–max, wall time
and CPU seconds. Writes ``benchmarks/results/<name>.json`` and ``<name>.md``. ``--quick``
without MONAI installed leaves MONAI out (said so in the table); a measurement stops without it.
``targets.py`` (``make bench-targets``) runs the same :func:`measure` under a time budget
(:class:`Plan`) and gives each of issue 17's targets its verdict.

    .venv/bin/python benchmarks/iolimit.py [--quick] [--reps 5] [--name iolimit]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import contenders as cs  # noqa: E402
import fairio  # noqa: E402
import interleave as il  # noqa: E402
from workloads import HALO, TILE, make_cheap_model, make_image, make_unet  # noqa: E402

RESULTS = HERE / "results"
STARTUP_SIDE = 384

BARE, IO, SEGPIPE, MONAI = "bare model", "I/O (read once, COG once)", "segpipe", \
    "MONAI gaussian + I/O"
HOST_SEGPIPE, DIRECT = "segpipe, 1x1 model", "direct (read, matmul+argmax, COG)"
STARTUP = "segpipe, one 384² input (1x1)"
BOUND = "bound 1/(1/bare + 1/I/O)"

#: the ratios and start-up figures issue 17 sets targets on (keys of the result; targets.py)
VS_BOUND, VS_MONAI = "segpipe / bound (>= 0.95)", "segpipe / MONAI+I/O (>= 1.05)"
HOST_RATIO = "host side: segpipe time / limit time (<= 1.5)"
INTERCEPT, ONE_INPUT = "intercept_seconds (<= 8)", "one_input_seconds (<= 8)"


@dataclass(frozen=True)
class Plan:
    """What one comparison measures, and how long it may take.

    ``reps`` repetitions at most; with ``budget_minutes``, no repetition after the
    ``min_reps``-th starts once the time so far plus one more repetition (the mean so far)
    would pass the budget, so a slower machine gives fewer repetitions, not a longer run.
    """

    name: str
    sides: tuple[int, int]
    host_sides: tuple[int, int]
    reps: int
    min_reps: int = 1
    budget_minutes: float | None = None
    layout_reps: int = 5
    quick: bool = False
    workdir: str | None = None

    @classmethod
    def of(cls, quick: bool, name: str, **overrides) -> Plan:
        """The full comparison's sizes (2048² → 6144², 4096² → 8192², 5 repetitions), or the
        smoke test's (``quick``: 512² → 1024², 1024² → 2048², one repetition); ``overrides``
        replace fields."""
        base = (cls(name, (512, 1024), (1024, 2048), reps=1, layout_reps=2, quick=True)
                if quick else cls(name, (2048, 6144), (4096, 8192), reps=5))
        return dataclasses.replace(base, **overrides)

    def next_rep(self, done: int, started: float, loop_started: float) -> bool:
        """Whether repetition ``done`` + 1 may start."""
        if done >= self.reps:
            return False
        if done < self.min_reps or self.budget_minutes is None:
            return True
        now = time.monotonic()
        per_rep = (now - loop_started) / done
        return now - started + per_rep <= 60 * self.budget_minutes


def bench_env() -> dict[str, str]:
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return env


def torch_threads() -> int:
    """The torch threads segpipe's own process gets by default: every contender gets them."""
    import torch

    return torch.get_num_threads()


def prepare(folder: Path, sides: tuple[int, int], host_sides: tuple[int, int],
            env: dict[str, str], layout_reps: int = 5) -> dict:
    """Inputs, models, layouts, references."""
    threads = torch_threads()
    u8 = {s: make_image(folder / f"in_{s}.tif", s, seed=s) for s in sides}
    u8[STARTUP_SIDE] = make_image(folder / f"in_{STARTUP_SIDE}.tif", STARTUP_SIDE, seed=7)
    u16 = {s: make_image(folder / f"in16_{s}.tif", s, seed=s, dtype="uint16")
           for s in host_sides}
    unet = make_unet(folder / "unet.pt")
    cheap = make_cheap_model(folder / "conv1x1.pt2")
    cpu, host = cs.Setup(folder, u8, threads), cs.Setup(folder, u16, threads)
    print("measuring layouts (NCHW vs channels-last) …", flush=True)
    layout = cs.best_layout(unet, TILE + 2 * HALO, threads, env, layout_reps)
    print(f"  best: {layout['best']} {layout['median_seconds']}", flush=True)
    refs = {"unet": cs.reference(cpu, unet, sides[0], env),
            "1x1": cs.reference(host, cheap, host_sides[0], env, halo=0)}
    return {"cpu": cpu, "host": host, "unet": unet, "cheap": cheap, "layout": layout,
            "refs": refs, "threads": threads}


def contenders(p: dict, quick: bool = False
               ) -> tuple[list[il.Contender], list[il.Contender], il.Contender]:
    """(i)'s, (ii)'s and the start-up contender. A smoke test (``quick``) without MONAI
    installed leaves MONAI out, said so; a measurement needs it (the bench extra)."""
    best = p["layout"]["best"]
    cpu, host = p["cpu"], p["host"]
    monai = cs.method(cpu, MONAI, "monai", p["unet"], best, "--mode", "gaussian",
                      note="read once, sliding_window_inference, COG once")
    if importlib.util.find_spec("monai") is None:
        if not quick:
            raise SystemExit("MONAI is not installed: run `make bench-targets` or `make bench` "
                             "(they install the bench extra) first")
        monai = dataclasses.replace(monai, optional=True)
    first = [
        cs.method(cpu, BARE, "bare", p["unet"], best, note="batches of 4 tiles in memory"),
        cs.limit(cpu, IO, "io", note="GDAL on every core; segpipe's COG settings"),
        cs.segpipe(cpu, SEGPIPE, p["unet"], note="defaults, disk → COG"),
        monai,
    ]
    second = [
        cs.segpipe(host, HOST_SEGPIPE, p["cheap"], tile=False, note="defaults, disk → COG"),
        cs.limit(host, DIRECT, "direct", p["cheap"], note="the unavoidable work"),
    ]
    startup = cs.segpipe(cpu, STARTUP, p["cheap"], tile=False, note="start-up")
    return first, second, startup


def summarize(rows: list[dict], p: dict, sides: tuple[int, int],
              host_sides: tuple[int, int], agree: dict, layouts: dict) -> dict:
    m = {n: il.marginal(rows, n, *sides) for n in (BARE, IO, SEGPIPE, MONAI)}
    m.update({n: il.marginal(rows, n, *host_sides) for n in (HOST_SEGPIPE, DIRECT)})
    bound = []
    ios = {r["rep"]: r for r in m[IO]}
    for b in m[BARE]:
        io = ios.get(b["rep"], {"rate": None, "cpu_rate": None})
        row = {"rep": b["rep"]}
        for key in ("rate", "cpu_rate"):
            row[key] = (1 / (1 / b[key] + 1 / io[key])) if b[key] and io[key] else None
        bound.append(row)
    m[BOUND] = bound
    startup = [r for r in rows if r["method"] == STARTUP]
    order = (BARE, IO, BOUND, SEGPIPE, MONAI, HOST_SEGPIPE, DIRECT)
    table = {n: {**il.summarize(m[n]), "agreement": agree.get(n)} for n in order}
    ratios = {
        VS_BOUND: il.ratio(m[SEGPIPE], bound),
        "segpipe / bound, per CPU-second": il.ratio(m[SEGPIPE], bound, "cpu_rate"),
        "segpipe / bare": il.ratio(m[SEGPIPE], m[BARE]),
        VS_MONAI: il.ratio(m[SEGPIPE], m[MONAI]),
        "segpipe / MONAI+I/O, per CPU-second": il.ratio(m[SEGPIPE], m[MONAI], "cpu_rate"),
        HOST_RATIO: il.ratio(m[DIRECT], m[HOST_SEGPIPE]),
        "host side, CPU-seconds / limit's": il.ratio(m[DIRECT], m[HOST_SEGPIPE], "cpu_rate"),
    }
    return {
        "table": table, "ratios": ratios,
        "startup": {INTERCEPT: table[SEGPIPE]["fixed_seconds"],
                    ONE_INPUT: il.spread([r["seconds"] for r in startup]),
                    "one_input_cpu_seconds": il.spread([r["cpu_seconds"] for r in startup])},
        "layouts": layouts, "per_rep": m,
    }


def markdown(result: dict) -> str:
    a, b = result["sides"]
    c, d = result["host_sides"]
    lines = [
        f"## {result['name']} ({result['repetitions']} interleaved repetition(s), "
        f"{result['minutes']} min, load average {result['load_before']} before, "
        f"{result['machine']['load_average_at_end']} after)", "",
        f"(i) U-Net width 32, tile {TILE}, halo {HALO}, 3-band uint8 {a}² → {b}² (marginal); "
        f"(ii) 1×1 model, 3-band uint16 DEFLATE {c}² → {d}²; {result['machine']['cores']} "
        f"cores, torch {result['machine']['torch']} on {result['threads']} threads for every "
        f"contender; best layout of the baselines: **{result['layouts']['best']}** "
        f"(median s per batch of 4: {_layout_text(result['layouts'])}). A blank rate: the "
        "large image's run took no longer than the small one's (noise swamped it).", "",
        "| | marginal MP/s | MP per CPU-s | fixed s (intercept) | labels = NCHW eager |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["table"].items():
        agree = f"{100 * row['agreement']:.4f} %" if row.get("agreement") is not None else ""
        lines.append(f"| {name} | {il.fmt(row['rate'], 3)} | {il.fmt(row['cpu_rate'], 3)} | "
                     f"{il.fmt(row['fixed_seconds'], 1)} | {agree} |")
    lines += ["", "| ratio (issue 17 target) | median (min–max) |", "|---|---|"]
    for key, value in result["ratios"].items():
        lines.append(f"| {key} | {il.fmt(value)} |")
    for key, value in result["startup"].items():
        lines.append(f"| start-up: {key} | {il.fmt(value, 1)} |")
    diffs = result["cog_layout_differences"]
    lines += ["", "COG layout of the direct writers vs segpipe's output: "
              + ("identical (compression, predictor, blocks, overviews, type, nodata)."
                 if not any(diffs.values()) else f"**differs**: {json.dumps(diffs)}")]
    lines += [f"\n**Left out** (failed; no figures): {n}: {why}"
              for n, why in result.get("left_out", {}).items()]
    return "\n".join(lines) + "\n"


def _layout_text(layouts: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in layouts["median_seconds"].items())


def measure(plan: Plan) -> dict:
    """Prepare, run the interleaved repetitions, check labels and COG layouts: the result."""
    sides, host_sides = plan.sides, plan.host_sides
    env, load_before = bench_env(), [round(x, 2) for x in os.getloadavg()]
    folder = Path(tempfile.mkdtemp(prefix="segpipe-iolimit-", dir=plan.workdir))
    start = time.monotonic()
    try:
        p = prepare(folder, sides, host_sides, env, plan.layout_reps)
        first, second, startup = contenders(p, plan.quick)
        runs = il.Runs(folder, env)
        keep1 = cs.keep_output(p["cpu"], {SEGPIPE, MONAI}, sides[0])
        keep2 = cs.keep_output(p["host"], {HOST_SEGPIPE, DIRECT}, host_sides[0])
        loop_started, done = time.monotonic(), 0
        while plan.next_rep(done, start, loop_started):
            print(f"repetition {done + 1}/{plan.reps} "
                  f"({(time.monotonic() - start) / 60:.1f} min so far)", flush=True)
            runs.interleave(first, sides, done, keep1)
            runs.interleave(second, host_sides, done, keep2)
            runs.run(startup, STARTUP_SIDE, done)
            done += 1
        agree = agreements(p, sides, host_sides)
        diffs = {
            "I/O vs segpipe": fairio.layout_diff(
                fairio.cog_layout(cs.output(p["cpu"], IO, sides[1])),
                fairio.cog_layout(cs.output(p["cpu"], SEGPIPE, sides[1]))),
            "direct vs segpipe (1x1)": fairio.layout_diff(
                fairio.cog_layout(cs.output(p["host"], DIRECT, host_sides[1])),
                fairio.cog_layout(cs.output(p["host"], HOST_SEGPIPE, host_sides[1]))),
        }
        summary = summarize(runs.rows, p, sides, host_sides, agree, p["layout"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"name": plan.name, "quick": plan.quick, "repetitions": done,
            "minutes": round((time.monotonic() - start) / 60, 1), "load_before": load_before,
            "machine": machine(), "threads": p["threads"], "sides": sides,
            "host_sides": host_sides, "cog_layout_differences": diffs,
            "left_out": runs.failed, **summary, "runs": runs.rows}


def agreements(p: dict, sides: tuple[int, int], host_sides: tuple[int, int]) -> dict:
    """Each contender's labels of the small image against the NCHW eager reference (a
    contender left out has none)."""
    out = {BARE: cs.agreement(p["refs"]["unet"], cs.labels_npy(p["cpu"], sides[0]))}
    for setup, ref, side, names in ((p["cpu"], "unet", sides[0], (SEGPIPE, MONAI)),
                                    (p["host"], "1x1", host_sides[0], (HOST_SEGPIPE, DIRECT))):
        out.update({n: cs.agreement(p["refs"][ref], cs.kept(setup, n, side))
                    for n in names if cs.kept(setup, n, side).exists()})
    return out


def write(result: dict, text: str) -> None:
    """``results/<name>.json`` (everything) and ``<name>.md`` (``text``); ``text`` printed."""
    RESULTS.mkdir(exist_ok=True)
    name = result["name"]
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 512² → 1024², 1024² → 2048², one repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5; quick 1)")
    ap.add_argument("--name", default=None, help="results file stem (default iolimit[-quick])")
    ap.add_argument("--workdir", default=None, help="where inputs and outputs go (temp)")
    args = ap.parse_args(argv)
    name = args.name or ("iolimit-quick" if args.quick else "iolimit")
    reps = {"reps": args.reps} if args.reps else {}
    plan = Plan.of(args.quick, name, workdir=args.workdir, **reps)
    result = measure(plan)
    write(result, markdown(result))
    return 0


def machine() -> dict:
    import psutil
    import torch

    return {"cores": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "torch": torch.__version__,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}


if __name__ == "__main__":
    sys.exit(main())
