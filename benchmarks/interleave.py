"""Interleaved runs of contenders in child processes, and their medians (shared by ``bench.py``
and ``iolimit.py``).

Every contender runs on two image sides in its own child process, repetitions interleaved
(A B C … A B C …), so a change of the machine's load hits all of them alike. Each run records
the child's whole wall time and CPU seconds (``resource.getrusage`` of the children: user +
system of the process and everything it waited for) and, where the child times its own work
(it prints ``seconds`` / ``cpu_seconds``), those. A contender's rate is its **marginal rate**:
(pixels of the large − pixels of the small) / (time of the large − time of the small), computed
per repetition from the two runs of that repetition, so fixed costs (imports, model loading,
start-up) cancel; its intercept is the fixed cost. Figures are medians over the repetitions with
their minimum and maximum.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pss import measure


@dataclass(frozen=True)
class Contender:
    """One contender: its name, its command for an image side, whether it times itself."""

    name: str
    command: Callable[[int, int], list[str]]  # (side, repetition) → argv
    self_timed: bool = False  # use the child's own timed seconds (work only), not the process's
    note: str = ""
    optional: bool = False  # a mode this segpipe may lack: a failure leaves it out, said so


@dataclass
class Runs:
    """Every run so far, and where the benchmark's files are."""

    folder: Path
    env: dict[str, str]
    rows: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def run(self, contender: Contender, side: int, rep: int) -> dict:
        """Run ``contender`` on ``side`` once; record and return its row."""
        result = measure(contender.command(side, rep), self.env)
        inner = _last_json(result["output_tail"], required=contender.self_timed)
        own = inner if contender.self_timed else {}
        row = {
            "method": contender.name, "side": side, "rep": rep,
            "megapixels": side * side / 1e6,
            "process_seconds": result["seconds"], "process_cpu_seconds": result["cpu_seconds"],
            "seconds": own.get("seconds", result["seconds"]),
            "cpu_seconds": own.get("cpu_seconds", result["cpu_seconds"]),
            "peak_pss_gib": result["peak_pss_gib"], "inner": inner,
        }
        self.rows.append(row)
        print(f"  {contender.name:<28} {side:>5}²  {row['seconds']:8.2f} s  cpu "
              f"{row['cpu_seconds']:7.1f} s  (process {row['process_seconds']:.1f} s, "
              f"{row['process_cpu_seconds']:.1f} CPU-s)  PSS {row['peak_pss_gib']:.2f} GiB",
              flush=True)
        return row

    def interleave(self, contenders: Sequence[Contender], sides: Sequence[int], rep: int,
                   after: Callable[[Contender, int, int], None] | None = None) -> None:
        """One repetition: every contender on every side, in order."""
        for c in contenders:
            for side in sides:
                if c.name in self.failed:
                    break
                try:
                    self.run(c, side, rep)
                except RuntimeError as exc:
                    if not c.optional:
                        raise
                    self.failed[c.name] = str(exc).splitlines()[-1][:200]
                    self.rows = [r for r in self.rows if r["method"] != c.name]
                    print(f"  {c.name}: failed, left out ({self.failed[c.name]})", flush=True)
                    break
                if after is not None:
                    after(c, side, rep)


def _last_json(output: str, required: bool) -> dict:
    """The child's last JSON line (what it timed itself), or {} when it printed none."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    if required:
        raise RuntimeError(f"no JSON line in the child's output:\n{output[-2000:]}")
    return {}


# ------------------------------------------------------------------------------ statistics


def spread(values: Sequence[float]) -> dict | None:
    """Median, minimum, maximum and count of ``values`` (None when there are none)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def pairs(rows: list[dict], method: str, small: int, large: int) -> list[tuple[dict, dict]]:
    """The (small, large) runs of ``method`` of each repetition that has both."""
    by_rep: dict[int, dict[int, dict]] = {}
    for r in rows:
        if r["method"] == method and r["side"] in (small, large):
            by_rep.setdefault(r["rep"], {})[r["side"]] = r
    return [(d[small], d[large]) for _, d in sorted(by_rep.items()) if len(d) == 2]


def marginal(rows: list[dict], method: str, small: int, large: int) -> list[dict]:
    """Per repetition: marginal MP/s (wall), MP per CPU-second, fixed seconds (intercept)."""
    out = []
    for a, b in pairs(rows, method, small, large):
        dmp = b["megapixels"] - a["megapixels"]
        dt, dcpu = b["seconds"] - a["seconds"], b["cpu_seconds"] - a["cpu_seconds"]
        rate = dmp / dt if dt > 0 else None
        out.append({
            "rep": a["rep"], "rate": rate, "cpu_rate": dmp / dcpu if dcpu > 0 else None,
            "fixed_seconds": a["seconds"] - a["megapixels"] / rate if rate else None,
            "fixed_cpu_seconds": (a["cpu_seconds"] - a["megapixels"] * dcpu / dmp)
            if dcpu > 0 else None,
        })
    return out


def summarize(per_rep: list[dict]) -> dict:
    """Median (min–max) of each figure of :func:`marginal`'s list."""
    keys = ("rate", "cpu_rate", "fixed_seconds", "fixed_cpu_seconds")
    return {k: spread([r.get(k) for r in per_rep]) for k in keys}


def ratio(a: list[dict], b: list[dict], key: str = "rate") -> dict | None:
    """Median (min–max) of ``a[key] / b[key]`` over the repetitions both have."""
    bs = {r["rep"]: r[key] for r in b}
    return spread([r[key] / bs[r["rep"]] for r in a
                   if r[key] and bs.get(r["rep"])])


def fmt(s: dict | None, digits: int = 2) -> str:
    """``median (min–max)`` of a :func:`spread`, or an empty string."""
    if not s:
        return ""
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"
