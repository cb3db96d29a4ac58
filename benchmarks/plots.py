"""The benchmark's Markdown table and PNG plots (matplotlib when installed, else PIL bars)."""

from __future__ import annotations

from pathlib import Path


def markdown(result: dict) -> str:
    """The results as Markdown: throughput table, targets, batch overhead, scaling."""
    a, b = result["sides"]
    lines = [
        f"## {result['name']} ({'quick' if result['quick'] else 'full'}, "
        f"{result['repetitions']} repetition(s), {result['minutes']} min)",
        "",
        f"{result['model']}; tile {result['tile']}, halo {result['halo']}; images {a}² and "
        f"{b}², 3-band uint8; {result['machine']['cores']} cores, torch "
        f"{result['machine']['torch']}.",
        "",
        "| | output MP/s | vs bare | MP per CPU-s | vs bare | fixed s | peak PSS GiB "
        "| labels = fp32 eager | how |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["table"].items():
        fixed = f"{row['fixed_seconds']:.1f}" if "fixed_seconds" in row else ""
        agree = f"{100 * row['agreement']:.4f} %" if "agreement" in row else ""
        cpu = f"{row['cpu_rate']:.4f}" if row.get("cpu_rate") else ""
        cpu_ratio = f"{row['cpu_vs_bare']:.2f}" if row.get("cpu_vs_bare") else ""
        lines.append(
            f"| {name} | {row['rate']:.3f} | {row['vs_bare']:.2f} | {cpu} | {cpu_ratio} | "
            f"{fixed} | {row['peak_pss_gib']:.2f} | {agree} | {row['note']} |"
        )
    lines += ["", "| target | measured |", "|---|---|"]
    for key, value in result["targets"].items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    batch = result.get("batch") or {}
    if batch:
        lines += ["", f"Small inputs (384², 1×1 model): one input {batch['one_input_seconds']:.1f}"
                  f" s, six inputs {batch['six_inputs_seconds']:.1f} s: "
                  f"{batch['per_extra_input_seconds']:.2f} s per extra input."]
        if batch.get("per_extra_input_cpu_seconds") is not None:
            lines.append(f"CPU (process tree): one input {batch['one_input_cpu_seconds']:.1f} s, "
                         f"six {batch['six_inputs_cpu_seconds']:.1f} s: "
                         f"{batch['per_extra_input_cpu_seconds']:.2f} s per extra input.")
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
    names = list(result["table"])
    rates = [result["table"][n]["rate"] for n in names]
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
    ax1.set_xlabel("output MP/s (higher is better)")
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
