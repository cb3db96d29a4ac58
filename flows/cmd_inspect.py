"""``segpipe inspect PATH``: what segpipe reads from an input and how ``segpipe run`` would cut it.

The library is :mod:`segpipe.pipeline.inspect`; this command prints its report as text, or as
JSON with ``--json`` (the schema ``segpipe.inspect/1``, documented in the README). It takes
``run``'s source, tiling and model options, so the plan it shows is the one ``run`` would make
with the same options. It exits 0 when it could inspect, also when ``run`` would refuse (the
reasons are listed under problems), and 2 for an input or model it cannot read. torch is
imported only when the command runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import click

from segpipe.flows.clioptions import option_decorator
from segpipe.pipeline.options import InferenceOptions, RunOptions, SourceOptions, TilingOptions

__all__ = ["inspect", "render"]

_GROUPS = {"source": SourceOptions, "tiling": TilingOptions, "inference": InferenceOptions}


@click.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema segpipe.inspect/1).")
@option_decorator(*_GROUPS.values())
def inspect(path: str, as_json: bool, **kw: Any) -> None:
    """Show what segpipe reads from PATH and how `segpipe run` would tile it.

    Format, size, bands, dtype, nodata, CRS, pixel size, pyramid levels and the tile plan.
    With --model also the level run would read, any problem run would refuse (exit code still
    0), and run time and peak memory estimated from one tile through the model on this machine.
    """
    from segpipe.pipeline.inspect import inspect_input

    groups = {
        name: cls(**{f.name: kw[f.name] for f in dataclasses.fields(cls)})
        for name, cls in _GROUPS.items()
    }
    report = inspect_input(RunOptions(input=path, output="", **groups))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(render(report.to_dict()))


# ------------------------------------------------------------------------------ the text


def render(d: dict[str, Any]) -> str:
    """The text report of a ``segpipe inspect --json`` object."""
    sections = [_input(d["input"]), _plan(d["plan"], d["model"] is not None)]
    if d["model"] is not None:
        sections.append(_model(d["model"]))
        sections.append(_estimate(d["estimate"], bool(d["problems"])))
    else:
        sections.append(_bundled(d["bundled_choice"]))
    if d["problems"]:
        sections.append(_list("problems (segpipe run would refuse; fix them first)",
                              d["problems"]))
    if d["warnings"]:
        sections.append(_list("warnings", d["warnings"]))
    return "\n\n".join(sections)


def _rows(title: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join([title, *(f"  {k.ljust(width)}  {v}" for k, v in rows)])


def _list(title: str, items: list[str]) -> str:
    return "\n".join([title, *(f"  - {item}" for item in items)])


def _size(width: int, height: int) -> str:
    return f"{width} × {height}"


def _length(p: dict[str, Any] | None) -> str:
    if p is None:
        return "unknown (nothing in the metadata)"
    unit = f" {p['unit']}" if p["unit"] else " (unit unknown)"
    if math.isclose(p["x"], p["y"], rel_tol=1e-9):
        return f"{p['x']:.6g}{unit}"
    return f"{p['x']:.6g} × {p['y']:.6g}{unit} (x × y)"


def _input(d: dict[str, Any]) -> str:
    bands = d["bands"]
    nodata = "none declared" if d["nodata"] is None else str(d["nodata"])
    crs = d["crs"]
    crs_text = "none"
    if crs is not None:
        code = f" (EPSG:{crs['epsg']})" if crs["epsg"] is not None else " (no EPSG code)"
        crs_text = f"{crs['name']}{code}, {crs['kind']}"
    driver = f", {d['driver']}" if d["driver"] else ""
    rows = [
        ("format", f"{d['format']}{driver} (read by {d['reader']})"),
        ("size", f"{_size(d['width'], d['height'])} px, {len(bands)} "
                 f"band{'s' if len(bands) != 1 else ''}, {d['dtype']}, nodata {nodata}"),
        ("bands", ", ".join(f"{b['number']} {b['name']}" for b in bands)),
        ("CRS", crs_text),
        *_georef_rows(d),
        ("mask", _mask(d.get("mask"), nodata)),
        ("pixel size", _length(d["pixel_size"])),
    ]
    for lv in d["levels"]:
        size = _length(lv["pixel_size"]) if lv["pixel_size"] else "pixel size unknown"
        rows.append((f"level {lv['level']}", f"{_size(lv['width'], lv['height'])} px, "
                                             f"downsample {lv['downsample']:.4g}, {size}"))
    return _rows(d["path"], rows)


def _crs_name(crs: dict[str, Any] | None) -> str:
    if crs is None:
        return "no CRS"
    code = f" (EPSG:{crs['epsg']})" if crs["epsg"] is not None else " (no EPSG code)"
    return f"{crs['name']}{code}"


def _georef_rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    """GCPs and RPCs, when the input has them."""
    rows = []
    gcps = d.get("gcps")
    if gcps:
        rows.append(("GCPs", f"{gcps['count']} ground control points, {_crs_name(gcps['crs'])}"))
    if d.get("rpcs"):
        rows.append(("RPCs", "yes (rational polynomial coefficients, kept in GeoTIFF outputs)"))
    return rows


def _mask(m: dict[str, Any] | None, nodata: str) -> str:
    """The mask GDAL reports, and what segpipe makes of it."""
    if m is None:
        return "none (no mask band, alpha band or nodata value)"
    if m["kind"] == "alpha":
        return (f"alpha band {m['band']}: transparent pixels are nodata; not a model band "
                "unless --bands names it")
    if m["kind"] == "per_dataset":
        return "per-dataset mask band: the pixels it masks are nodata"
    return f"nodata value {nodata}"


def _plan(d: dict[str, Any], with_model: bool) -> str:
    t, b, p = d["tiles"], d["blocks"], d["padded"]
    origin = "from the model" if d["from_model"] else (
        "from --tile (default 512) and --halo (default 0); --model shows run's own plan"
        if not with_model else "from the options: the model could not be probed"
    )
    extra = f" + {d['extra']} px to a size the model takes" if d["extra"] else ""
    ring = f", each with a ring of {b['ring']} tile" if b["ring"] else ""
    rows = [
        ("tile", f"{d['tile']} px, halo {d['halo']} px{extra}: model input "
                 f"{d['input_size']} × {d['input_size']} px"),
        ("tiles", f"{t['rows']} × {t['cols']} = {t['total']}"),
        ("blocks", f"{b['rows']} × {b['cols']} = {b['total']} of up to "
                   f"{b['tiles_per_side']} × {b['tiles_per_side']} tiles{ring}"),
        ("padded", f"{_size(p['width'], p['height'])} px read (mirrored beyond the border)"),
    ]
    title = f"tile plan: level {d['level']}, {_size(d['width'], d['height'])} px ({origin})"
    return _rows(title, rows)


def _model(d: dict[str, Any]) -> str:
    card = f"card {d['card']!r}" if d["card"] else "no card"
    bands = "unknown" if d["bands"] is None else str(d["bands"])
    if d["band_names"]:
        bands += f" ({', '.join(d['band_names'])})"
    read = ",".join(map(str, d["bands_read"])) if d["bands_read"] else "—"
    margin = "not probed" if d["margin"] is None else f"{d['margin']} px"
    stride = "not probed" if d["stride"] is None else f"{d['stride']} px"
    rows = [
        ("model", f"{d['model']} ({d['format']}, {card})"),
        ("bands", f"takes {bands}; reads input band(s) {read}"),
        ("classes", f"{len(d['classes'])}: {', '.join(d['classes'])}"),
        ("geometry", f"margin {margin}, stride {stride}"),
        ("device", f"{d['device']}, batches of {d['batch_size']} tiles"),
    ]
    return _rows("model", rows)


def _estimate(d: dict[str, Any] | None, problems: bool) -> str:
    if d is None:
        why = "fix the problems below first" if problems else "not asked for"
        return f"estimate: none ({why})"
    t, m = d["time"], d["memory"]
    device = f"; on the GPU {_bytes(d['device_memory_bytes'])}" if d[
        "device_memory_bytes"] is not None else ""
    rows = [
        ("run time", f"about {_seconds(d['seconds'])}: model {_seconds(t['model_seconds'])} "
                     f"({d['tiles']} tiles × {d['tile_seconds']:.3g} s), plan "
                     f"{_seconds(t['plan_seconds'])}, reading and writing "
                     f"{_seconds(t['io_seconds'])}, start-up about "
                     f"{_seconds(t['startup_seconds'])}"),
        ("peak memory", f"about {_bytes(d['peak_memory_bytes'])}: process "
                        f"{_bytes(m['process_bytes'])} (model {_bytes(m['model_bytes'])}), "
                        f"forward pass {_bytes(m['forward_bytes'])}, block "
                        f"{_bytes(m['block_bytes'])}, Prefect and Dask about "
                        f"{_bytes(m['orchestration_bytes'])}{device}"),
    ]
    title = (f"estimate: segpipe run --workers 0 on this machine ({d['device']}, batches of "
             f"{d['batch_size']}), from one tile through the model")
    return _rows(title, rows)


def _bundled(d: dict[str, Any]) -> str:
    if d["model"] is None:
        return _rows("model", [("bundled", "none fits (see problems); pass --model PATH")])
    return _rows("model", [
        ("bundled", f"segpipe run would use {d['model']}"),
        ("why", d["reason"]),
        ("estimate", f"add --model {d['model']} for its plan, problems and estimate"),
    ])


def _seconds(s: float) -> str:
    if s < 0.1:
        return "< 0.1 s"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"
