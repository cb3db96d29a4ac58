"""How the classes of a run read to a person: name, colour, and area in a sensible unit.

:func:`legend_entries` turns the summary's ``classes`` (and ``areas``, when the summary has
them), in its JSON form (:meth:`~segpipe.pipeline.summary.RunSummary.to_dict`, or a
``summary.json`` read back), into :class:`LegendEntry` items, which the quicklook's legend and
the HTML report both show. Areas are written in hectares (m² below 0.1 ha) for geographic
inputs, mm² (µm² below 0.01 mm²) for microscopy, and as pixel counts when the input states no
pixel size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LegendEntry", "area_text", "legend_entries", "number_text"]

Color = tuple[int, int, int]


@dataclass(frozen=True)
class LegendEntry:
    """One class: its label value, name, colour, pixel count (None: unknown) and area text."""

    label: int
    name: str
    color: Color
    pixels: int | None = None
    area: str = ""  # e.g. "12.3 ha", "0.45 mm²", "1,234 px"; "" when unknown
    area_value: float | None = None  # the summary's area (its unit), None for pixel counts
    share: float | None = None  # fraction of the classified (non-nodata) pixels

    @property
    def present(self) -> bool:
        """Whether the class occurs (unknown counts count as present)."""
        return self.pixels is None or self.pixels > 0

    @property
    def text(self) -> str:
        """Name, area and share on one line: ``water  12.3 ha (4.1 %)``."""
        parts = [self.name]
        if self.area:
            parts.append(self.area)
        if self.share is not None:
            parts.append(f"({100 * self.share:.1f} %)")
        return "  ".join(parts)


def number_text(value: float) -> str:
    """A number with three significant digits, and thousands separators from 1000 on."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def area_text(entry: Mapping[str, Any], areas: Mapping[str, Any] | None = None) -> str:
    """The area of one summary class entry as text, or its pixel count when no area is known.

    ``areas`` is the summary's ``areas`` block; without it the entry's own ``area`` and
    ``area_unit`` (``m2``, ``µm2``...) are used.
    """
    kind = (areas or {}).get("kind")
    pixels = int(entry.get("pixels") or 0)
    area, unit = entry.get("area"), entry.get("area_unit")
    if kind == "pixels" or area is None:
        return f"{pixels:,} px"
    if entry.get("area_ha") is not None:
        return _hectares(float(entry["area_ha"]) * 1e4)
    if entry.get("area_mm2") is not None:
        return _square_millimetres(float(entry["area_mm2"]) * 1e6)
    if unit == "m2":
        return _hectares(float(area))
    if unit in ("um2", "µm2"):
        return _square_millimetres(float(area))
    return f"{number_text(float(area))} {unit or ''}".strip()


def _hectares(square_metres: float) -> str:
    if square_metres >= 1e3:
        return f"{number_text(square_metres / 1e4)} ha"
    return f"{number_text(square_metres)} m²"


def _square_millimetres(square_micrometres: float) -> str:
    if square_micrometres >= 1e4:
        return f"{number_text(square_micrometres / 1e6)} mm²"
    return f"{number_text(square_micrometres)} µm²"


def legend_entries(summary: Mapping[str, Any], colors: Sequence[Color] = ()) -> list[LegendEntry]:
    """One entry per class of the summary, in label order.

    A class's colour is its summary ``color`` when given, else ``colors[label]``, else grey.
    """
    classes = list(summary.get("classes") or [])
    areas = summary.get("areas")
    total = sum(int(c.get("pixels") or 0) for c in classes)
    entries = []
    for c in classes:
        label = int(c["label"])
        raw = c.get("color") or (colors[label] if label < len(colors) else (128, 128, 128))
        pixels = int(c.get("pixels") or 0)
        entries.append(LegendEntry(
            label=label, name=str(c["name"]), color=(int(raw[0]), int(raw[1]), int(raw[2])),
            pixels=pixels, area=area_text(c, areas), area_value=_area_value(c, areas),
            share=pixels / total if total else None,
        ))
    return entries


def _area_value(entry: Mapping[str, Any], areas: Mapping[str, Any] | None) -> float | None:
    if (areas or {}).get("kind") == "pixels" or entry.get("area") is None:
        return None
    return float(entry["area"])
