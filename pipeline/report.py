"""The run summary: what was segmented, how, how fast, and how much of each class.

Everything per class comes from the block markers, so the report never re-reads the label
array: pixel counts, areas (:mod:`segpipe.pipeline.areas`: planar m² for a projected CRS,
geodesic m² from per-row counts for a geographic one, µm² for a physical pixel size, else pixel
counts only, and ``summary.areas.note`` says which) and objects, 4-connected regions
merged across block edges (:mod:`segpipe.pipeline.objects`), with their density per km² or mm²
of the area that has a class (nodata excluded). The same table goes to a CSV beside the output
(:func:`write_areas_csv`) and to the Markdown report. With an instance output,
``summary.instances`` adds the instances per class after separation
(:mod:`segpipe.pipeline.instances.summary`). The summary is a
:class:`~segpipe.pipeline.summary.RunSummary`; its JSON form is what the files hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from segpipe.models.foundation import __version__
from segpipe.pipeline import storage
from segpipe.pipeline.areas import AreaBasis, AreaKind, GeodesicAreas, area_basis, class_areas
from segpipe.pipeline.areatable import CSV_COLUMNS, areas_csv
from segpipe.pipeline.io.writers.common import companion_target
from segpipe.pipeline.objects import BlockObjects
from segpipe.pipeline.seamjoin import SeamJoin, SeamWriter
from segpipe.pipeline.summary import (
    AreaSummary,
    ClassRow,
    ImageSummary,
    InstanceSummary,
    ModelSummary,
    RunSummary,
)
from segpipe.pipeline.workdir import BlockRecord

if TYPE_CHECKING:
    from segpipe.models.card import ClassInfo
    from segpipe.pipeline.plan import RunPlan

__all__ = [
    "CSV_COLUMNS",
    "SegmentOutcome",
    "areas_csv",
    "areas_csv_path",
    "artifact_key",
    "class_counts",
    "class_table",
    "summarize",
    "summary_markdown",
    "write_areas_csv",
]

@dataclass(frozen=True)
class SegmentOutcome:
    """What the segment stage did: blocks computed now, reused from before, and failed.

    Counts only: the blocks' records stay in their markers, which the report reads one row of
    blocks at a time (:meth:`~segpipe.pipeline.workdir.WorkDir.finished`), so the driver never
    holds every record. ``workers`` counts the blocks each worker computed now; ``pixels`` are
    the pixels they hold.
    """

    total: int
    reused: int
    computed: int
    pixels: int
    workers: Mapping[str, int]
    failed: Mapping[str, str]
    failed_pixels: int
    seconds: float

    @property
    def megapixels(self) -> float:
        """Megapixels segmented by this attempt."""
        return self.pixels / 1e6


def class_counts(records: Iterable[BlockRecord]) -> dict[int, int]:
    """Pixels per label value over the blocks (nodata under its own value)."""
    total: dict[int, int] = {}
    for r in records:
        _add_counts(total, r)
    return total


def _add_counts(total: dict[int, int], record: BlockRecord) -> None:
    for label, n in record.counts.items():
        total[label] = total.get(label, 0) + n


def class_table(
    basis: AreaBasis,
    classes: Sequence[ClassInfo],
    counts: Mapping[int, int],
    areas: Mapping[int, float] | None,
    objects: Mapping[int, int] | None,
) -> tuple[ClassRow, ...]:
    """``summary.classes``: one row per class, in label order (nodata excluded).

    Densities are objects per km² (geo) or per mm² (microscopy) of the area that has a class.
    """
    unit = basis.unit if areas is not None else None
    valid = sum(areas.get(i, 0.0) for i in range(len(classes))) if areas is not None else 0.0
    # objects per km² (1e6 m²) or per mm² (1e6 µm²) of the area that has a class
    density_unit = {"m2": "per km2", "um2": "per mm2"}.get(unit or "")
    table = []
    for i, c in enumerate(classes):
        area = areas.get(i, 0.0) if areas is not None else None
        n = objects.get(i, 0) if objects is not None else None
        density = n / (valid / 1e6) if density_unit and n is not None and valid > 0 else None
        table.append(ClassRow(
            label=i, name=c.name, color=tuple(c.color), pixels=counts.get(i, 0),
            area=area, area_unit=unit,
            area_ha=area / 1e4 if area is not None and unit == "m2" else None,
            area_mm2=area / 1e6 if area is not None and unit == "um2" else None,
            objects=n, density=density,
            density_unit=density_unit if density is not None else None,
        ))
    return tuple(table)


@dataclass
class _Tally:
    """What the summary needs of the blocks, gathered in one pass over their markers.

    Blocks arrive one at a time in raster order; each adds its pixel counts, its geodesic
    areas (when the grid is geographic) and its objects to the streaming seam join, and is
    dropped: memory of one row of blocks, whatever the image's size.
    """

    plan: RunPlan
    basis: AreaBasis
    join: SeamJoin
    geodesic: GeodesicAreas | None
    counts: dict[int, int] = field(default_factory=dict)
    skipped: int = 0

    @classmethod
    def of(cls, plan: RunPlan, sink: SeamWriter) -> _Tally:
        basis = area_basis(plan.info)
        geodesic = GeodesicAreas(basis) if basis.kind is AreaKind.GEODESIC else None
        return cls(plan, basis, SeamJoin(sink=sink), geodesic)

    def add(self, r: BlockRecord) -> None:
        _add_counts(self.counts, r)
        self.skipped += r.skipped
        if self.geodesic is not None:
            self.geodesic.add(self.plan.tiles.block_core(*r.index).row, r.row_classes,
                              r.row_table())
        self.join.add(BlockObjects.of_record(r))

    def classes(self) -> tuple[ClassRow, ...]:
        """``summary.classes``, once every block was added."""
        areas = (self.geodesic.areas if self.geodesic is not None
                 else class_areas(self.basis, self.counts))
        objects = self.join.finish()
        return class_table(self.basis, self.plan.card.classes, self.counts, areas, objects)


def _tally(plan: RunPlan) -> _Tally:
    """Every finished block's marker, read in raster order, tallied (and the seams written)."""
    writer = SeamWriter(plan.workdir.seams)
    tally = _Tally.of(plan, writer)
    for record in plan.workdir.finished():
        tally.add(record)
    writer.finish(tally.join)
    return tally


def summarize(
    plan: RunPlan, outcome: SegmentOutcome, stage_seconds: Mapping[str, float]
) -> RunSummary:
    """The run summary (written as JSON in the work directory and beside the output).

    The blocks' figures come from their markers, read in block order (so that sums, and the
    summary, do not depend on which block finished first), one row of blocks at a time.
    """
    tally = _tally(plan)
    classes = tally.classes()
    seconds = stage_seconds.get("segment", 0.0)
    o = plan.options
    return RunSummary(
        segpipe_version=__version__,
        input=o.input,
        output=o.output,
        workdir=plan.workdir.path,
        model=ModelSummary(plan.card.name, plan.model_sha256, o.inference.model),
        image=ImageSummary(plan.info.height, plan.info.width, tuple(b + 1 for b in plan.bands),
                           plan.info.level, plan.reading().get("resampling")),
        tile=plan.tiles.tile,
        halo=plan.tiles.halo,
        extra=plan.tiles.extra,
        margin=plan.geometry.margin,
        blend=str(o.tiling.blend),
        precision=str(o.inference.precision),
        normalizer=plan.normalizer,
        tiles=plan.tiles.n_tiles,
        blocks=outcome.total,
        blocks_computed=outcome.computed,
        blocks_reused=outcome.reused,
        blocks_skipped=tally.skipped,
        failed_blocks=dict(sorted(outcome.failed.items())),
        workers=dict(outcome.workers),
        nodata_pixels=tally.counts.get(plan.nodata, 0) + outcome.failed_pixels,
        areas=AreaSummary.from_dict(tally.basis.to_dict()),
        classes=classes,
        instances=_instances(plan, classes),
        stage_seconds={str(k): v for k, v in stage_seconds.items()},
        megapixels=outcome.megapixels,
        megapixels_per_second=outcome.megapixels / seconds if seconds else None,
        warnings=tuple(plan.warnings),
    )


def _instances(plan: RunPlan, classes: Sequence[ClassRow]) -> InstanceSummary | None:
    """Instance counts per class with an instance output, else None.

    :mod:`segpipe.pipeline.instances.summary` says how they differ from ``objects``.
    """
    if not plan.options.instances.wanted:
        return None
    from segpipe.pipeline.instances.summary import instance_summary

    return instance_summary(plan, classes)


def summary_markdown(summary: RunSummary) -> str:
    """The summary as a short Markdown report (the Prefect artifact)."""
    lines = [
        f"# segpipe: {Path(summary.input).name}",
        "",
        f"- input: `{summary.input}`",
        f"- output: `{summary.output}`",
        f"- model: {summary.model.name} (sha256 `{summary.model.sha256[:12]}`)",
        f"- image: {summary.image.height} × {summary.image.width} px, "
        f"tile {summary.tile}, halo {summary.halo}, blend {summary.blend}",
        f"- tiles: {summary.tiles}; blocks: {summary.blocks} "
        f"({summary.blocks_computed} computed, {summary.blocks_reused} reused)",
    ]
    if summary.megapixels_per_second:
        lines.append(f"- speed: {summary.megapixels_per_second:.2f} MP/s")
    if summary.failed_blocks:
        failed = ", ".join(f"`{b}`" for b in summary.failed_blocks)
        lines.append(f"- **failed blocks (nodata)**: {failed}")
    lines += ["", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in summary.stage_seconds.items()]
    lines += ["", f"Areas: {summary.areas.note}.", ""]
    lines += ["| label | class | pixels | area | objects | density |",
              "|---:|---|---:|---:|---:|---:|"]
    for c in summary.classes:
        objects = "" if c.objects is None else str(c.objects)
        density = ("" if c.density is None or c.density_unit is None
                   else f"{c.density:.4g} {_UNITS[c.density_unit]}")
        lines.append(f"| {c.label} | {c.name} | {c.pixels} | {_area_text(c)} | "
                     f"{objects} | {density} |")
    lines.append(f"| nodata | | {summary.nodata_pixels} | | | |")
    lines += _instance_lines(summary.instances)
    lines += [f"\n> warning: {w}" for w in summary.warnings]
    return "\n".join(lines) + "\n"


def _instance_lines(instances: InstanceSummary | None) -> list[str]:
    """The instance counts (after separation), when the run made instances."""
    if not instances:
        return []
    counts = ", ".join(f"{c.name} {c.instances}" for c in instances.classes)
    return ["", f"Instances ({instances.method}, after separation and minimum area; the "
                f"objects column counts regions before separation): {instances.total} "
                f"({counts}); {instances.clipped} larger than the halo."]


_UNITS = {"m2": "m²", "um2": "µm²", "per km2": "per km²", "per mm2": "per mm²"}


def _area_text(c: ClassRow) -> str:
    if c.area is None:
        return ""
    unit = c.area_unit or ""
    text = f"{c.area:.4g} {_UNITS.get(unit, unit)}"
    if c.area_ha is not None:
        return f"{text} ({c.area_ha:.4g} ha)"
    if c.area_mm2 is not None:
        return f"{text} ({c.area_mm2:.4g} mm²)"
    return text


def areas_csv_path(output: str) -> str:
    """Where the class table goes beside an output: ``mask.tif`` → ``mask.areas.csv``."""
    return companion_target(output, "areas", ".csv")


def write_areas_csv(output: str, summary: RunSummary) -> str:
    """Write the class table beside ``output``, atomically; returns its path."""
    path = areas_csv_path(output)
    storage.write_text(path, areas_csv(summary.to_dict()))
    return path


def artifact_key(input_path: str) -> str:
    """A Prefect artifact key for an input: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", Path(input_path.rstrip("/")).name.lower()).strip("-")
    return f"segpipe-report-{slug or 'input'}"[:100]
