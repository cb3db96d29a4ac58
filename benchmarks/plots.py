"""The benchmark's Markdown table and PNG plots (matplotlib when installed, else PIL bars)."""

from __future__ import annotations

from pathlib import Path


def markdown(result: dict) -> str:
    """The results as Markdown: throughput table, targets, batch overhead, scaling.

    Every figure is the median over the interleaved repetitions with (min–max).
    """
    from interleave import fmt

    a, b = result["sides"]
    lines = [
        f"## {result['name']} ({'quick: a smoke test' if result['quick'] else 'full'}, "
        f"{result['repetitions']} interleaved repetition(s), {result['minutes']} min, "
        f"load average {result.get('load_before')} before, "
        f"{result['machine']['load_average_at_end']} after)",
        "",
        f"{result['model']}; tile {result['tile']}, halo {result['halo']}; images {a}² and "
        f"{b}², 3-band uint8; {result['machine']['cores']} cores, torch "
        f"{result['machine']['torch']} on {result['threads']} threads in every contender. "
        "Rates are marginal (the two sizes' difference, per repetition); a blank one: the large "
        "image's run took no longer than the small one's (noise swamped it).",
        "",
        "| | marginal MP/s | vs bare | MP per CPU-s | vs bare (CPU) | fixed s | peak PSS GiB "
        "| layout | labels = NCHW eager |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["table"].items():
        agree = f"{100 * row['agreement']:.4f} %" if row.get("agreement") is not None else ""
        lines.append(
            f"| {name} | {fmt(row['rate'], 3)} | {fmt(row['vs_bare'])} | "
            f"{fmt(row['cpu_rate'], 3)} | {fmt(row['cpu_vs_bare'])} | "
            f"{fmt(row['fixed_seconds'], 1)} | {row['peak_pss_gib']:.2f} | "
            f"{row.get('layout') or ''} | {agree} |"
        )
    for name, why in (result.get("left_out") or {}).items():
        lines.append(f"\n{name}: failed, left out ({why}).")
    diffs = result.get("cog_layout_differences") or {}
    lines += ["", "COG layout of the baselines' outputs vs segpipe's: "
              + ("identical (compression, predictor, blocks, overviews, type, nodata)."
                 if not any(diffs.values()) else f"**differs**: {diffs}")]
    lines += ["", "| target | median (min–max) |", "|---|---|"]
    for key, value in result["targets"].items():
        lines.append(f"| {key} | {fmt(value)} |")
    batch = result.get("batch") or {}
    if batch.get("one_input_seconds"):
        lines += ["", f"Small inputs (384², 1×1 model): one input "
                  f"{fmt(batch['one_input_seconds'], 1)} s wall, "
                  f"{fmt(batch['one_input_cpu_seconds'], 1)} CPU-s; per extra input in a batch "
                  f"of six {fmt(batch['per_extra_input_seconds'])} s wall, "
                  f"{fmt(batch['per_extra_input_cpu_seconds'])} CPU-s."]
    scaling = result.get("scaling")
    if scaling:
        lines += ["", "| scaling: gigapixels | seconds | s per GP | peak PSS GiB |",
                  "|---|---|---|---|"]
        for r in scaling["runs"]:
            lines.append(f"| {r['gigapixels']:.3f} | {r['seconds']:.1f} | "
                         f"{r['seconds'] / r['gigapixels']:.0f} | {r['peak_pss_gib']:.2f} |")
        lines.append(f"\nPeak PSS growth from the smallest to the largest: "
                     f"{scaling['growth_ratio']:.3f}× (limit 1.2×).")
    return "\n".join(lines) + "\n"


def draw(result: dict, folder: Path) -> list[Path]:
    """``<name>-throughput.png`` (MP/s and peak PSS per method) and ``<name>-scaling.png``."""
    names = [n for n in result["table"] if result["table"][n]["rate"]]
    rates = [result["table"][n]["rate"]["median"] for n in names]
    pss = [result["table"][n]["peak_pss_gib"] for n in names]
    out = [folder / f"{result['name']}-throughput.png"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _pil_bars(out[0], names, rates, "output MP/s")
        return out
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.barh(names, rates, color="#4477aa")
    ax1.axvline(rates[0], color="k", lw=0.8, ls="--")
    ax1.set_xlabel("marginal output MP/s, median (higher is better)")
    ax1.invert_yaxis()
    ax2.barh(names, pss, color="#cc6677")
    ax2.set_xlabel("peak PSS of the process tree, GiB")
    ax2.invert_yaxis()
    ax2.set_yticklabels([])
    fig.suptitle(f"{result['name']}: {result['model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out[0], dpi=90)
    plt.close(fig)
    scaling = result.get("scaling")
    if scaling:
        out.append(draw_scaling(scaling, folder / f"{result['name']}-scaling.png"))
    return out


def draw_scaling(scaling: dict, path: Path) -> Path:
    """Time and peak PSS against gigapixels (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gp = [r["gigapixels"] for r in scaling["runs"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(gp, [r["seconds"] for r in scaling["runs"]], "o-")
    ax1.set_xlabel("gigapixels")
    ax1.set_ylabel("seconds")
    ax2.plot(gp, [r["peak_pss_gib"] for r in scaling["runs"]], "o-", color="#cc6677")
    ax2.set_ylim(0, max(3.2, max(r["peak_pss_gib"] for r in scaling["runs"]) * 1.1))
    ax2.axhline(3.0, color="k", lw=0.8, ls="--")
    ax2.set_xlabel("gigapixels")
    ax2.set_ylabel("peak PSS GiB (process tree)")
    fig.suptitle("segpipe run with a 1×1 model: time linear, memory flat", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _pil_bars(path: Path, names: list[str], values: list[float], label: str) -> None:
    from PIL import Image, ImageDraw

    width, row = 700, 28
    img = Image.new("RGB", (width, row * (len(names) + 1)), "white")
    d = ImageDraw.Draw(img)
    top = max(values) or 1.0
    for i, (n, v) in enumerate(zip(names, values)):
        y = i * row + 4
        d.text((4, y + 6), n, fill="black")
        d.rectangle([200, y, 200 + int(440 * v / top), y + row - 8], fill="#4477aa")
        d.text((205 + int(440 * v / top), y + 6), f"{v:.3f}", fill="black")
    d.text((200, row * len(names) + 6), label, fill="black")
    img.save(path)
