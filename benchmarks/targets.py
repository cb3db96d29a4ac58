"""``make bench-targets``: issue 17's targets on this CPU, measured side by side in one run, each
with its verdict.

The measurement is ``iolimit.py``'s (its docstring says what each contender does), with the
sizes of the full comparison and a time budget, so that it fits about 20–25 minutes on two
quiet cores: at most ``--reps`` (5) interleaved repetitions, at least ``--min-reps`` (3), and
no further one once it would end past ``--budget-minutes``. The targets (issue 17, item 4):

1. host side with a 1×1 model: ``segpipe run``'s marginal time against the I/O limit's (read
   once, the same 1×1 model as one matrix product + argmax, the COG written once) ≤ 1.5×
   (stretch 1.25×), 3-band uint16 4096² → 8192²;
2. ``segpipe run`` default (exact), marginal rate 2048² → 6144² (width-32 same-padding U-Net,
   tile 512, halo 32, 3-band uint8 GeoTIFF → COG) ≥ 0.95× the bound 1 / (1/bare + 1/I/O) and
   ≥ 1.05× MONAI ``sliding_window_inference`` plus the same I/O, both baselines at their best
   layout (NCHW or channels-last, measured first and reported);
3. fixed start-up ≤ 8 s, both as the intercept of the two-size line and as one 384² input.

A verdict reads the median over the repetitions; "not every run" says the min–max range
crosses the goal. The ratios per CPU-second (no target) and every contender's label agreement
with an independent NCHW eager whole-image forward pass (``reference.py``) are reported beside.
Writes ``benchmarks/results/targets.json`` (every run) and ``targets.md`` (the verdicts, then
``iolimit.py``'s table), and prints them. ``--smoke``: tiny images, one repetition, written as
``targets-smoke.*`` (checks the script in about 2 minutes; measures nothing).

    .venv/bin/python benchmarks/targets.py [--smoke] [--reps 5] [--min-reps 3]
        [--budget-minutes 24] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interleave as il
import iolimit

#: the 1-minute load average above which figures are not a measurement (BENCHMARKS.md)
QUIET_LOAD = 1.5


@dataclass(frozen=True)
class Target:
    """One of issue 17's targets: where its figure is in ``iolimit``'s result, and its goal."""

    label: str
    section: str  # "ratios" or "startup" of the result
    key: str
    goal: float
    at_most: bool  # the figure must be ≤ goal (else ≥ goal)
    stretch: float | None = None
    digits: int = 2

    def figure(self, result: dict) -> dict | None:
        """Median, min, max and count of the figure (None when it was not measured)."""
        return result[self.section].get(self.key)

    def meets(self, value: float, goal: float | None = None) -> bool:
        goal = self.goal if goal is None else goal
        return value <= goal if self.at_most else value >= goal

    def goal_text(self) -> str:
        sign = "≤" if self.at_most else "≥"
        extra = f" (stretch {sign} {self.stretch:g})" if self.stretch is not None else ""
        return f"{sign} {self.goal:g}{extra}"

    def verdict(self, result: dict) -> str:
        s = self.figure(result)
        if not s:
            return "not measured"
        if not self.meets(s["median"]):
            return "**fail**"
        text = "**pass**"
        if self.stretch is not None and self.meets(s["median"], self.stretch):
            text += ", stretch met"
        if not (self.meets(s["min"]) and self.meets(s["max"])):
            text += " (not every run)"
        return text


TARGETS = (
    Target("host side, 1×1 model: segpipe marginal time / the I/O limit's", "ratios",
           iolimit.HOST_RATIO, 1.5, at_most=True, stretch=1.25),
    Target("`segpipe run` default marginal / bound 1/(1/bare + 1/I/O)", "ratios",
           iolimit.VS_BOUND, 0.95, at_most=False),
    Target("`segpipe run` default marginal / MONAI Gaussian + the same I/O", "ratios",
           iolimit.VS_MONAI, 1.05, at_most=False),
    Target("fixed start-up: intercept of the two-size line (s)", "startup",
           iolimit.INTERCEPT, 8, at_most=True, digits=1),
    Target(f"fixed start-up: one {iolimit.STARTUP_SIDE}² input, 1×1 model (s)", "startup",
           iolimit.ONE_INPUT, 8, at_most=True, digits=1),
)


def verdicts(result: dict) -> list[dict]:
    """Each target's goal, figure and verdict (the JSON's ``targets``)."""
    return [{"target": t.label, "goal": t.goal_text(), "figure": t.figure(result),
             "verdict": t.verdict(result).replace("*", "")} for t in TARGETS]


def markdown(result: dict) -> str:
    """The verdicts, the figures without a target, label agreement, then iolimit's table."""
    a, b = result["sides"]
    c, d = result["host_sides"]
    load = result["load_before"][0]
    lines = [
        f"## Issue 17 targets on this CPU ({result['name']}: {result['repetitions']} "
        f"interleaved repetition(s), {result['minutes']} min)", "",
        f"U-Net {a}² → {b}², 1×1 model {c}² → {d}² (uint16), marginal rates, medians "
        f"(min–max) of wall time; baselines at their best layout: "
        f"**{result['layouts']['best']}**.", "",
    ]
    if load > QUIET_LOAD or result["quick"]:
        why = "a smoke test" if result["quick"] else f"load average {load} at the start"
        lines += [f"> **Not a measurement** ({why}): only quiet-machine figures count.", ""]
    lines += ["| target | goal | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {t.label} | {t.goal_text()} | {il.fmt(t.figure(result), t.digits)} | "
              f"{t.verdict(result)} |" for t in TARGETS]
    judged = {t.key for t in TARGETS}
    lines += ["", "| without a target | median (min–max) |", "|---|---|"]
    lines += [f"| {key} | {il.fmt(value)} |" for key, value in result["ratios"].items()
              if key not in judged]
    lines += [f"| start-up: {key} | {il.fmt(value, 1)} |"
              for key, value in result["startup"].items() if key not in judged]
    agree = [f"{name} {100 * row['agreement']:.3f} %" for name, row in result["table"].items()
             if row.get("agreement") is not None]
    lines += ["", "Labels equal to an independent NCHW eager whole-image forward pass: "
              + "; ".join(agree) + ".", "", "### The measurement", "",
              iolimit.markdown(result)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny images, one repetition: checks the script (~2 min), no figures")
    ap.add_argument("--reps", type=int, default=5, help="repetitions at most (default 5)")
    ap.add_argument("--min-reps", type=int, default=3, help="repetitions at least (default 3)")
    ap.add_argument("--budget-minutes", type=float, default=24.0,
                    help="no repetition beyond --min-reps that would end past this (default 24)")
    ap.add_argument("--workdir", default=None, help="where inputs and outputs go (temp)")
    args = ap.parse_args(argv)
    if args.smoke:
        plan = iolimit.Plan.of(True, "targets-smoke", workdir=args.workdir)
    else:
        plan = iolimit.Plan.of(False, "targets", workdir=args.workdir,
                               reps=max(args.reps, args.min_reps), min_reps=args.min_reps,
                               budget_minutes=args.budget_minutes)
    result = iolimit.measure(plan)
    result["targets"] = verdicts(result)
    iolimit.write(result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
