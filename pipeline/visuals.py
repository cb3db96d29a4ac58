"""What a person looks at after a run: the quicklook PNG and the HTML report, from the summary.

:func:`write_visuals` runs in the report stage, once the summary exists (so the legend and the
report show the class areas) and before the work directory is removed (the quicklook reads the
label array there). Beside the output ``mask.tif`` it writes ``mask.quicklook.png``
(:mod:`segpipe.pipeline.quicklook`) and ``mask.report.html`` (:mod:`segpipe.pipeline.htmlreport`),
each atomically; with instances (the instance pass ran before) the quicklook outlines them.
When blocks failed no output exists, so both go into the work directory, next to the summary,
and the report names the failed blocks.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from segpipe.models.foundation import SegpipeError
from segpipe.pipeline import storage
from segpipe.pipeline.htmlreport import RunReport, render_report
from segpipe.pipeline.io.writers.common import companion_target
from segpipe.pipeline.legend import LegendEntry, legend_entries
from segpipe.pipeline.quicklook import QuicklookSpec, display_bands, write_quicklook

if TYPE_CHECKING:
    from segpipe.pipeline.plan import RunPlan
    from segpipe.pipeline.summary import RunSummary

__all__ = ["quicklook_spec", "report_files", "write_visuals"]

log = logging.getLogger("segpipe")


def report_files(summary: RunSummary) -> tuple[str, str]:
    """Where a run's quicklook and HTML report go: beside the output, or in the work directory.

    The work directory when blocks failed (then no output exists).
    """
    png = companion_target(summary.output, "quicklook", ".png")
    page = companion_target(summary.output, "report", ".html")
    if summary.failed_blocks:
        folder = summary.workdir
        name = storage.basename
        return storage.join(folder, name(png)), storage.join(folder, name(page))
    return png, page


def quicklook_spec(plan: RunPlan, classes: tuple[LegendEntry, ...],
                   outlines: bool = False) -> QuicklookSpec:
    """The quicklook of a run: its input, label array, classes, nodata rule and RGB bands.

    ``outlines``: draw the instances' outlines (the instance pass's array in the work
    directory); :func:`write_visuals` asks for them whenever the run made instances.
    """
    from segpipe.pipeline.instances.stage import instances_path

    card = plan.card
    bands = display_bands(plan.info.channel_names, plan.bands, card.band_names)
    return QuicklookSpec(
        input=plan.options.input, labels_path=plan.workdir.labels, classes=classes,
        label_nodata=plan.nodata, nodata=plan.info.nodata, bands=bands,
        preview=None if plan.source_array else plan.workdir.preview,
        instances_path=instances_path(plan.workdir) if outlines else None,
        reader=plan.reader_options,
    )


def _options(plan: RunPlan) -> dict[str, Any]:
    """The run options by their command-line names (the groups flattened)."""
    flat: dict[str, Any] = {}
    for key, value in plan.options.to_dict().items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return {k: (str(v) if v is not None else None) for k, v in flat.items()}


def _model(plan: RunPlan) -> dict[str, Any]:
    card = plan.card
    return {"name": card.name, "license": card.license, "training_data": card.training_data,
            "description": card.description, "metrics": card.metrics}


def _caption(asked: bool, drawn: bool) -> str:
    """What the quicklook shows of the instances, in words (nothing for a run without them)."""
    if not asked:
        return ""
    if drawn:
        return "Black lines: the outlines of the instances (after separation)."
    return ("No instance outlines: the instances are only a few quicklook pixels across, and "
            "their lines would hide the classes.")


def write_visuals(plan: RunPlan, summary: RunSummary) -> list[str]:
    """Write the quicklook and the HTML report of a finished run; their paths.

    A quicklook that cannot be made (the input unreadable now, a full disk) is logged as a
    warning and the report says so; a report that cannot be written is logged as a warning.
    Either way the run's outputs stand. The legend and the page read the summary's JSON form,
    as a report of any run's ``summary.json`` would.
    """
    png, page = report_files(summary)
    colors = tuple(c.color for c in plan.card.classes)
    data = summary.to_dict()
    classes = tuple(legend_entries(data, colors))
    written, image, note, caption = [], None, "", ""
    # instances exist once their pass finished, which a run with failed blocks never reaches
    outlines = summary.instances is not None and not summary.failed_blocks
    start = time.perf_counter()
    try:
        look = write_quicklook(quicklook_spec(plan, classes, outlines), png)
        image = storage.read_bytes(png)
        written.append(png)
        caption = _caption(outlines, look.outlined)
    except (OSError, SegpipeError) as exc:
        note = f"the quicklook could not be written: {exc}"
        log.warning("%s: %s", plan.name, note)
    report = RunReport(
        summary=data, classes=classes, model=_model(plan), options=_options(plan),
        quicklook_png=image, quicklook_note=note, quicklook_seconds=time.perf_counter() - start,
        quicklook_caption=caption,
    )
    try:
        storage.write_text(page, render_report(report))
        written.append(page)
    except OSError as exc:
        log.warning("%s: the HTML report could not be written: %s", plan.name, exc)
    return written
