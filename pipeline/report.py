"""The run summary: what was segmented, how, how fast, and how much of each class.

Class counts come from the block markers (each finished block reports its per-label counts), so
the report never re-reads the label array. Areas are per pixel area when the input says it
(projected CRS in metres, or a physical pixel size); otherwise pixel counts only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segpipe.models.foundation import __version__
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.workdir import BlockRecord

if TYPE_CHECKING:
    from segpipe.pipeline.plan import RunPlan

__all__ = [
    "SegmentOutcome",
    "artifact_key",
    "class_counts",
    "pixel_area",
    "summarize",
    "summary_markdown",
]


@dataclass(frozen=True)
class SegmentOutcome:
    """What the segment stage did: blocks computed now, reused from before, and failed."""

    total: int
    reused: tuple[BlockRecord, ...]
    records: tuple[BlockRecord, ...]
    failed: Mapping[str, str]
    failed_pixels: int
    seconds: float

    @property
    def megapixels(self) -> float:
        """Megapixels segmented by this attempt."""
        return sum(r.pixels for r in self.records) / 1e6


def class_counts(records: Iterable[BlockRecord]) -> dict[int, int]:
    """Pixels per label value over the blocks (nodata under its own value)."""
    total: dict[int, int] = {}
    for r in records:
        for label, n in r.counts.items():
            total[label] = total.get(label, 0) + n
    return total


def pixel_area(info: RasterInfo) -> tuple[float, str] | None:
    """Area of one pixel and its unit, when the input says (projected CRS or physical size)."""
    if info.transform and info.crs_wkt:
        from rasterio.crs import CRS

        crs = CRS.from_wkt(info.crs_wkt)
        if crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m"):
            a, b, _, d, e, _ = info.transform
            return abs(a * e - b * d), "m2"
        return None
    if info.pixel_size and info.pixel_unit:
        return info.pixel_size[0] * info.pixel_size[1], f"{info.pixel_unit}2"
    return None


def _classes(plan: RunPlan, counts: Mapping[int, int]) -> list[dict[str, Any]]:
    area = pixel_area(plan.info)
    classes = []
    for i, c in enumerate(plan.card.classes):
        entry: dict[str, Any] = {"label": i, "name": c.name, "pixels": counts.get(i, 0)}
        if area:
            entry["area"] = entry["pixels"] * area[0]
            entry["area_unit"] = area[1]
        classes.append(entry)
    return classes


def summarize(plan: RunPlan, outcome: SegmentOutcome, stage_seconds: dict[str, float]) -> dict:
    """The run summary (written as JSON in the work directory and beside the output)."""
    counts = class_counts((*outcome.reused, *outcome.records))
    seconds = stage_seconds.get("segment", 0.0)
    workers: dict[str, int] = {}
    for r in outcome.records:
        workers[r.worker] = workers.get(r.worker, 0) + 1
    o = plan.options
    return {
        "segpipe_version": __version__,
        "input": o.input,
        "output": o.output,
        "workdir": plan.workdir.path,
        "model": {"name": plan.card.name, "sha256": plan.model_sha256, "path": o.inference.model},
        "image": {"height": plan.info.height, "width": plan.info.width,
                  "bands": [b + 1 for b in plan.bands], "level": plan.info.level},
        "tile": plan.tiles.tile,
        "halo": plan.tiles.halo,
        "extra": plan.tiles.extra,
        "margin": plan.geometry.margin,
        "blend": str(o.tiling.blend),
        "precision": str(o.inference.precision),
        "normalizer": plan.normalizer.to_dict() if plan.normalizer else None,
        "tiles": plan.tiles.n_tiles,
        "blocks": outcome.total,
        "blocks_computed": len(outcome.records),
        "blocks_reused": len(outcome.reused),
        "blocks_skipped": sum(r.skipped for r in (*outcome.reused, *outcome.records)),
        "failed_blocks": dict(sorted(outcome.failed.items())),
        "workers": workers,
        "nodata_pixels": counts.get(plan.nodata, 0) + outcome.failed_pixels,
        "classes": _classes(plan, counts),
        "stage_seconds": stage_seconds,
        "megapixels": outcome.megapixels,
        "megapixels_per_second": outcome.megapixels / seconds if seconds else None,
        "warnings": list(plan.warnings),
    }


def summary_markdown(summary: dict) -> str:
    """The summary as a short Markdown report (the Prefect artifact)."""
    lines = [
        f"# segpipe: {Path(summary['input']).name}",
        "",
        f"- input: `{summary['input']}`",
        f"- output: `{summary['output']}`",
        f"- model: {summary['model']['name']} (sha256 `{summary['model']['sha256'][:12]}`)",
        f"- image: {summary['image']['height']} × {summary['image']['width']} px, "
        f"tile {summary['tile']}, halo {summary['halo']}, blend {summary['blend']}",
        f"- tiles: {summary['tiles']}; blocks: {summary['blocks']} "
        f"({summary['blocks_computed']} computed, {summary['blocks_reused']} reused)",
    ]
    mps = summary.get("megapixels_per_second")
    if mps:
        lines.append(f"- speed: {mps:.2f} MP/s")
    if summary["failed_blocks"]:
        failed = ", ".join(f"`{b}`" for b in summary["failed_blocks"])
        lines.append(f"- **failed blocks (nodata)**: {failed}")
    lines += ["", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in summary["stage_seconds"].items()]
    lines += ["", "| label | class | pixels | area |", "|---:|---|---:|---:|"]
    for c in summary["classes"]:
        area = f"{c['area']:.4g} {c['area_unit']}" if "area" in c else ""
        lines.append(f"| {c['label']} | {c['name']} | {c['pixels']} | {area} |")
    lines.append(f"| nodata | | {summary['nodata_pixels']} | |")
    lines += [f"\n> warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines) + "\n"


def artifact_key(input_path: str) -> str:
    """A Prefect artifact key for an input: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", Path(input_path.rstrip("/")).name.lower()).strip("-")
    return f"segpipe-report-{slug or 'input'}"[:100]
