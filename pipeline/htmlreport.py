"""The run report: one self-contained HTML file a person opens to judge a run.

:func:`render_report` writes the page from a :class:`RunReport`: the quicklook, a table and a
bar chart of the class areas (with per class the components and, with instances, the
instances after separation), stage timings and throughput, the model card summary (name,
sha256 prefix, licence, training data), provenance (segpipe version, input, output, options)
and any warnings and failed blocks, and with instances the histogram of their areas (an inline
SVG: :mod:`segpipe.pipeline.histogramsvg`). Images are embedded as ``data:image/png;base64``
URIs and the style sheet is inline: the file needs nothing else, no script and no network.
Every piece of text from the run (paths, names, messages) is escaped with
:func:`html.escape`. Nothing of the input's own metadata (such as a slide's image description)
is shown.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from segpipe.pipeline.histogramsvg import histogram_svg, unit_text
from segpipe.pipeline.legend import LegendEntry, number_text
from segpipe.pipeline.quicklook import drawable_text, legend_font

__all__ = ["RunReport", "bar_chart_png", "data_uri", "render_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #000;
          vertical-align: middle; }
.ok { color: #1a6d1a; } .failed { color: #b00020; font-weight: bold; }
img { max-width: 100%; height: auto; border: 1px solid #ddd;
      background: repeating-conic-gradient(#eee 0 25%, #fff 0 50%) 0 0 / 16px 16px; }
code { font-size: 0.95em; }
"""


@dataclass(frozen=True)
class RunReport:
    """Everything the page shows.

    ``summary`` is the run summary's JSON form (:meth:`~segpipe.pipeline.summary.RunSummary.
    to_dict`, what ``summary.json`` holds: a page can be made from any run's file); ``classes``
    one legend entry per class; ``model`` the card's name, licence, training data and
    description; ``options`` the run options by their command-line names.
    """

    summary: Mapping[str, Any]
    classes: Sequence[LegendEntry]
    model: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    quicklook_png: bytes | None = None
    quicklook_note: str = ""  # why there is no quicklook, when there is none
    quicklook_seconds: float | None = None  # time taken by the quicklook (after the summary)
    quicklook_caption: str = ""  # what else it shows (instance outlines), in words


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,…`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def bar_chart_png(classes: Sequence[LegendEntry], width: int = 640) -> bytes:
    """Horizontal bars, one per class in its colour, as long as its area (or pixel count)."""
    font, _ = legend_font()
    use_area = all(c.area_value is not None for c in classes)
    values = [(c.area_value if use_area else c.pixels) or 0 for c in classes]
    top = max(values, default=0) or 1
    row, pad = 22, 8
    names = [font.getlength(drawable_text(c.name)) for c in classes]
    areas = [font.getlength(drawable_text(c.area)) for c in classes]
    name_w = min(220, 12 + int(max(names, default=0)))
    value_w = 12 + int(max(areas, default=0))
    bar_w = max(120, width - name_w - value_w - 2 * pad)
    image = Image.new("RGB", (name_w + bar_w + value_w + 2 * pad, 2 * pad + row * len(classes)),
                      "white")
    draw = ImageDraw.Draw(image)
    for i, (entry, value) in enumerate(zip(classes, values)):
        y = pad + i * row
        draw.text((pad, y + 4), drawable_text(entry.name), fill="black", font=font)
        length = round(bar_w * float(value) / float(top))
        x0 = pad + name_w
        if length > 0:
            draw.rectangle([x0, y + 3, x0 + length - 1, y + row - 4], fill=entry.color,
                           outline="black")
        draw.text((x0 + length + 6, y + 4), drawable_text(entry.area), fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _unit(unit: Any) -> str:
    """``per km2`` → ``per km²``."""
    return str(unit or "").replace("m2", "m²")


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Collection[int] = ()
) -> str:
    """An HTML table; cells are already HTML (escape text before)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(r)
        ) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f"<table><tbody>{rows}</tbody></table>"


def _status(summary: Mapping[str, Any]) -> str:
    failed = summary.get("failed_blocks") or {}
    if failed:
        return (f'<p class="failed">{len(failed)} of {_e(summary.get("blocks", "?"))} blocks '
                "failed: they are nodata, no output was written; this report is in the work "
                f"directory <code>{_e(summary.get('workdir', ''))}</code>.</p>")
    return f'<p class="ok">Done: <code>{_e(summary.get("output", ""))}</code></p>'


def _count(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def _density(item: Mapping[str, Any]) -> str:
    density = item.get("density")
    if density is None:
        return ""
    return f"{number_text(float(density))} {_unit(item.get('density_unit'))}"


def _classes_section(report: RunReport) -> str:
    summary, extra = report.summary, {int(c["label"]): c for c in report.summary["classes"]}
    instances = _instance_rows(summary)
    has_objects = any(c.get("objects") is not None for c in extra.values())
    header = ["", "label", "class", "pixels", "area", "share"]
    if instances:  # two counts: the header says which is which, the text below how
        header += ["components", "component density", "instances", "instance density"]
    elif has_objects:
        header += ["objects", "density"]
    rows = []
    for entry in report.classes:
        swatch = '<span class="swatch" style="background: rgb({},{},{})"></span>'.format(
            *entry.color)
        share = "" if entry.share is None else f"{100 * entry.share:.1f} %"
        row = [swatch, _e(entry.label), _e(entry.name), _e(f"{entry.pixels or 0:,}"),
               _e(entry.area), _e(share)]
        if has_objects or instances:
            item = extra.get(entry.label, {})
            row += [_e(_count(item.get("objects"))), _e(_density(item))]
        if instances:
            item = instances.get(entry.label, {})
            row += [_e(_count(item.get("instances"))), _e(_density(item))]
        rows.append(row)
    rows.append(["", "", "nodata", _e(f"{int(summary.get('nodata_pixels') or 0):,}"), "", ""]
                + [""] * (len(header) - 6))
    note = (summary.get("areas") or {}).get("note")
    chart = data_uri(bar_chart_png(report.classes)) if report.classes else ""
    parts = ["<h2>Classes</h2>"]
    if note:
        parts.append(f"<p>{_e(note)}</p>")
    parts.append(_table(header, rows, numeric=set(range(3, len(header)))))
    if instances:
        parts.append(f"<p>{_e(_counts_text(summary['instances']))}</p>")
    if chart:
        parts.append(f'<p><img alt="bar chart of the class areas" src="{chart}"></p>')
    return "\n".join(parts)


def _instance_rows(summary: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    """``summary["instances"]["classes"]`` by label value; empty for a run without instances."""
    return {int(c["label"]): c for c in (summary.get("instances") or {}).get("classes") or []}


def _counts_text(instances: Mapping[str, Any]) -> str:
    """In words, which count is which."""
    unit = unit_text(instances.get("area_unit"))
    min_area = float(instances.get("min_area") or 0)
    kept = (f"dropping those under --instance-min-area {number_text(min_area)} {unit} "
            f"({int(instances.get('min_area_pixels') or 0):,} px)" if min_area > 0
            else "with no minimum area (--instance-min-area 0)")
    split = ("after a watershed separated touching objects"
             if instances.get("method") == "watershed"
             else "without separating touching objects (--instance-method components)")
    clipped = int(instances.get("clipped") or 0)
    return (
        "Components: the 4-connected regions of each class, joined across tile and block "
        "seams, before any separation and with no minimum area. Instances: the objects of the "
        f"instance labels, {split}, {kept}; {int(instances.get('total') or 0):,} in all"
        + (f", {clipped:,} of them in clumps wider than --instance-max-diameter "
           f"{instances.get('max_diameter')} px (their separation may differ from the whole "
           "image's)" if clipped else "")
        + ". Densities are per mm² (microscopy) or km² (maps) of the area that has a class."
    )


def _instances_section(summary: Mapping[str, Any]) -> str:
    """The histogram of instance areas (log-spaced bins), when the run made instances."""
    histogram = (summary.get("instances") or {}).get("histogram")
    if not histogram:
        return ""
    unit = unit_text(histogram.get("unit"))
    figure = histogram_svg(histogram["edges"], histogram["counts"], histogram.get("unit"))
    return (
        "<h2>Instance areas</h2>\n"
        f"<p>Instances per bin of area ({_e(unit)}, log-spaced bins from the smallest to the "
        "largest instance; every bin holds its lower edge, the last also its upper).</p>\n"
        f'<figure class="histogram">{figure}</figure>'
    )


def _timing_section(summary: Mapping[str, Any], quicklook_seconds: float | None) -> str:
    seconds = {str(k): float(v) for k, v in (summary.get("stage_seconds") or {}).items()}
    if quicklook_seconds is not None:  # made after the summary's report time was taken
        seconds["report: quicklook"] = quicklook_seconds
    rows = [[_e(k), _e(f"{v:.2f}")] for k, v in seconds.items()]
    rows.append(["<b>total</b>", _e(f"{sum(seconds.values()):.2f}")])
    mps = summary.get("megapixels_per_second")
    facts = [
        ("megapixels segmented", f"{float(summary.get('megapixels') or 0):.2f}"),
        ("throughput", f"{mps:.2f} MP/s" if mps else "n/a"),
        ("tiles", summary.get("tiles", "")),
        ("blocks", f"{summary.get('blocks', '')} ({summary.get('blocks_computed', 0)} computed, "
                   f"{summary.get('blocks_reused', 0)} reused)"),
        ("workers", ", ".join(f"{k}: {v}" for k, v in (summary.get("workers") or {}).items())),
    ]
    return ("<h2>Time</h2>\n" + _table(["stage", "seconds"], rows, numeric={1}) + "\n"
            + _pairs(facts))


def _model_section(summary: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    info = dict(summary.get("model") or {})
    sha = str(info.get("sha256") or "")
    facts = [
        ("name", model.get("name") or info.get("name", "")),
        ("sha256", f"{sha[:12]}…" if sha else ""),
        ("file", info.get("path") or ""),
        ("licence", model.get("license") or "not stated"),
        ("training data", model.get("training_data") or "not stated"),
    ]
    if model.get("description"):
        facts.append(("description", model["description"]))
    if model.get("metrics"):
        facts.append(("metrics", json.dumps(model["metrics"], sort_keys=True)))
    return "<h2>Model</h2>\n" + _pairs(facts)


def _provenance_section(summary: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    image = dict(summary.get("image") or {})
    norm = (summary.get("normalizer") or {}).get("method", "")
    facts = [
        ("segpipe", summary.get("segpipe_version", "")),
        ("input", summary.get("input", "")),
        ("output", summary.get("output", "")),
        ("image", f"{image.get('width', '?')} × {image.get('height', '?')} px, bands "
                  f"{image.get('bands', '')}, level {image.get('level', 0)}"),
        ("tiling", f"tile {summary.get('tile')}, halo {summary.get('halo')}, margin "
                   f"{summary.get('margin')}, blend {summary.get('blend')}"),
        ("precision", summary.get("precision", "")),
        ("normalization", norm),
    ]
    areas = summary.get("areas") or {}
    if areas.get("pixel_size"):
        facts.append(("pixel size", f"{areas['pixel_size']} {areas.get('pixel_unit') or ''}"))
    parts = ["<h2>Provenance</h2>", _pairs(facts)]
    if options:
        shown = [(k, "(default)" if v is None else v) for k, v in options.items()]
        parts += ["<h3>Options</h3>", _pairs(shown)]
    return "\n".join(parts)


def _problems_section(summary: Mapping[str, Any]) -> str:
    parts = []
    warnings = list(summary.get("warnings") or [])
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        parts.append(f"<h2>Warnings</h2>\n<ul>{items}</ul>")
    failed = dict(summary.get("failed_blocks") or {})
    if failed:
        rows = [[_e(k), _e(v)] for k, v in sorted(failed.items())]
        parts.append("<h2>Failed blocks</h2>\n" + _table(["block", "error"], rows))
    return "\n".join(parts)


def render_report(report: RunReport) -> str:
    """The report page (a complete HTML document)."""
    summary = report.summary
    name = Path(str(summary.get("input", "")).rstrip("/")).name or "input"
    if report.quicklook_png is not None:
        look = (f'<p><img alt="quicklook of {_e(name)}: the classes over the image" '
                f'src="{data_uri(report.quicklook_png)}"></p>')
        if report.quicklook_caption:
            look += f"\n<p>{_e(report.quicklook_caption)}</p>"
    else:
        look = f"<p>No quicklook: {_e(report.quicklook_note or 'not written')}</p>"
    body = "\n".join([
        f"<h1>segpipe: {_e(name)}</h1>",
        _status(summary),
        "<h2>Quicklook</h2>",
        look,
        _classes_section(report),
        _instances_section(summary),
        _timing_section(summary, report.quicklook_seconds),
        _model_section(summary, report.model),
        _provenance_section(summary, report.options),
        _problems_section(summary),
    ])
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>segpipe report: {_e(name)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
