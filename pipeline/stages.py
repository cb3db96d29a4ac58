"""The stage sequence of a run, defined once: plan → ingest → stats → segment → export → report.

With an instance output asked for (``--instance-labels``, ``--measurements``, ``--detections``)
the instance pass (:mod:`segpipe.pipeline.instances.stage`) runs between segment and export.

:func:`run_one` runs the stages for one input over its work directory; where the blocks run is
the :class:`~segpipe.pipeline.executor.BlockExecutor`'s business (in-process or Dask). Every
caller goes through here: ``segpipe run`` (inside the Prefect flow, with ``--workers 0`` too),
``segpipe serve``, and the tests' exactness oracle. The Prefect flow passes a ``call`` that wraps
each stage function in a Prefect task (retries, logs, artifacts); without Prefect the stages are
called directly.

Each stage records itself in the manifest when it finishes, in this order, which is the contract
for resume: a resumed run skips finished stages and finished blocks; a kept work directory whose
blocks are all done only runs the export again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from segpipe.models.foundation import BlocksFailedError, OutputExistsError, __version__
from segpipe.pipeline import storage
from segpipe.pipeline.backends import prepare_backend
from segpipe.pipeline.executor import BlockExecutor, InProcessExecutor, new_run_id
from segpipe.pipeline.feed import Feed, assemble_preview
from segpipe.pipeline.io.durable import sync_tree
from segpipe.pipeline.io.gdal import streaming_env
from segpipe.pipeline.io.heldreader import holding_readers, input_reader
from segpipe.pipeline.io.writers import ExportJob, write_outputs
from segpipe.pipeline.io.zarrstore import create_array, info_attrs
from segpipe.pipeline.labels import label_dtype
from segpipe.pipeline.normalize import Normalizer, compute_normalizer
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.outputs import (
    check_output_exists,
    cut_off_output,
    output_is_current,
    sidecar,
    write_sidecar,
)
from segpipe.pipeline.plan import RunPlan, plan_run
from segpipe.pipeline.quicklook import MAX_SIDE as QUICKLOOK_SIDE
from segpipe.pipeline.report import SegmentOutcome, summarize, write_areas_csv
from segpipe.pipeline.segment import write_nodata
from segpipe.pipeline.summary import RunResult, RunSummary, SkippedRun
from segpipe.pipeline.visuals import write_visuals
from segpipe.pipeline.workdir import BlockRecord, Manifest, WorkState

__all__ = ["Progress", "RunContext", "Stage", "StageCaller", "run_one"]

log = logging.getLogger("segpipe")
T = TypeVar("T")


class Stage(StrEnum):
    """The stages, in order."""

    PLAN = "plan"
    INGEST = "ingest"
    STATS = "stats"
    SEGMENT = "segment"
    INSTANCES = "instances"  # only when an instance output is asked for
    EXPORT = "export"
    REPORT = "report"


class Progress(Protocol):
    """What the segment stage reports to (``segpipe.flows.progress.Progress`` is one)."""

    def advance(self, n: int = 1, *, pixels: int | None = None, failed: bool = False) -> None:
        """``n`` more blocks finished."""

    def check_stall(self) -> bool:
        """Nothing finished for a while; report a stall if it lasts."""


class _Quiet:
    def advance(self, n: int = 1, *, pixels: int | None = None, failed: bool = False) -> None:
        pass

    def check_stall(self) -> bool:
        return False


class StageCaller(Protocol):
    """How a stage function is called: directly, or wrapped (the flow: as a Prefect task)."""

    def __call__(self, stage: Stage, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` as stage ``stage``; return its result."""
        ...


def _direct(stage: Stage, fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


def _quiet(total: int, megapixels: float, label: str) -> Progress:
    return _Quiet()


@dataclass(frozen=True)
class RunContext:
    """How to run the stages: the block executor, a stage caller and a progress factory.

    ``call(stage, fn, *args)`` runs one stage function (directly, or as a Prefect task);
    ``progress(blocks, megapixels, label)`` makes the segment stage's progress display.
    ``preflighted``: the caller already ran :func:`~segpipe.pipeline.plan.preflight` on every
    input (the command line does, before Prefect or Dask start): the plan does not again.
    """

    executor: BlockExecutor = field(default_factory=InProcessExecutor)
    call: StageCaller = _direct
    progress: Callable[[int, float, str], Progress] = _quiet
    preflighted: bool = False


# ------------------------------------------------------------------------------ the stages


def plan_stage(options: RunOptions, preflighted: bool = False) -> RunPlan | None:
    """Check everything and open the work directory; None when the output is up to date."""
    plan = plan_run(options, preflighted=preflighted)
    if options.instances.wanted:  # refuse bad instance settings before any block runs
        from segpipe.pipeline.instances.stage import instance_options

        instance_options(plan)
    if not options.overwrite and output_is_current(
        options.output, plan.label_key(), plan.export_key()
    ):
        log.info("%s is up to date; skipped", options.output)
        return None
    if not cut_off_output(options):
        check_output_exists(options)
    elif not options.resume and not options.overwrite:
        raise OutputExistsError(
            f"--output {options.output} exists: this work directory's run was stopped while "
            "writing it; pass --resume to finish it (or --overwrite)"
        )
    for w in plan.warnings:
        log.warning(w)
    manifest, state = plan.workdir.open(_new_manifest(plan), resume=options.resume)
    if state is not WorkState.NEW:
        log.info("%s: %s work directory %s", plan.name, state, plan.workdir.path)
    if manifest.normalizer is not None:
        plan = plan.with_normalizer(Normalizer.from_dict(dict(manifest.normalizer)))
    return plan


def _new_manifest(plan: RunPlan) -> Manifest:
    t = plan.tiles
    return Manifest(
        key=plan.label_key(), output=storage.absolute(plan.options.output),
        export=plan.export_key(), segpipe_version=__version__,
        plan={"height": t.height, "width": t.width, "tile": t.tile, "halo": t.halo,
              "extra": t.extra, "block": t.block, "ring": t.ring, "blocks": t.n_blocks},
    )


def ingest_stage(plan: RunPlan) -> None:
    """Create the work directory's arrays (once): the input's copy, its mask band, the labels.

    The copy itself is made block by block ahead of the segmentation (:mod:`~segpipe.pipeline.
    feed`), not here: this stage only creates the empty arrays the blocks fill.
    """
    if Stage.INGEST in plan.workdir.require().stages:
        return
    start = time.perf_counter()
    feed = plan.feed()
    if feed is not None:
        _create_image_arrays(plan, feed)
    _create_label_arrays(plan)
    if plan.mask is not None:
        plan.mask.prepare(plan.options.input, plan.info)
    prepare_backend(plan)
    plan.workdir.clear_done()  # fresh label arrays: no block of them is finished
    sync_tree(plan.workdir.path)  # what the ingest wrote is on the disk before the manifest says so
    plan.workdir.record_stage(Stage.INGEST, time.perf_counter() - start)


def _create_image_arrays(plan: RunPlan, feed: Feed) -> None:
    """The empty copy of the input (and of its mask band) that the feed tasks fill."""
    info, t = plan.info, plan.tiles.tile
    storage.remove_tree(feed.markers)  # a fresh copy: no block of it is fed
    storage.makedirs(feed.markers)
    create_array(feed.image_path, (info.bands, info.height, info.width), (info.bands, t, t),
                 info.dtype, attrs=info_attrs(info))
    if feed.valid_path is not None:
        create_array(feed.valid_path, (info.height, info.width), (t, t), "bool",
                     fill_value=True)


def _create_label_arrays(plan: RunPlan) -> None:
    t = plan.tiles
    create_array(
        plan.workdir.labels, (t.height, t.width), (t.tile, t.tile),
        str(label_dtype(plan.num_classes)), fill_value=plan.nodata,
    )
    if plan.probabilities_path:
        k = plan.geometry.out_channels
        create_array(plan.probabilities_path, (k, t.height, t.width), (k, t.tile, t.tile),
                     "float16")


def image_statistics(plan: RunPlan) -> Normalizer:
    """The normalization statistics of the plan's image, from its sampled windows.

    Read from the input at the planned level with its own mask band (opened with the plan's
    reader options, as planning and the feed open it), or from the Zarr array that is
    segmented in place.
    """
    selected = list(plan.bands)
    path, level = ((plan.source_array, 0) if plan.source_array
                   else (plan.options.input, plan.info.level))
    with input_reader(path, level=level, options=plan.reader_options) as reader:  # planning's
        return compute_normalizer(
            plan.normalization, dtype=plan.info.dtype, bands=len(selected),
            nodata=plan.info.nodata, read=lambda w: reader.read(w)[selected],
            shape=plan.info.shape, valid=reader.read_mask,
        )


def stats_stage(plan: RunPlan) -> RunPlan:
    """Normalization statistics, once per run, before any block runs (kept in the manifest).

    From the windows :func:`~segpipe.pipeline.normalize.sample_windows` picks, read from the
    input at the planned level (or from the Zarr array segmented in place): never from a
    second read of the work directory's copy, which the blocks write as they go.
    """
    if plan.normalizer is not None:
        return plan
    start = time.perf_counter()
    with streaming_env():
        normalizer = image_statistics(plan)
    manifest = replace(plan.workdir.require(), normalizer=normalizer.to_dict())
    plan.workdir.save(manifest.with_stage(Stage.STATS, time.perf_counter() - start))
    return plan.with_normalizer(normalizer)


class _Sink:
    """The segment stage's :class:`~segpipe.pipeline.executor.BlockSink`.

    Counts the blocks, their pixels and their workers and drops the records (the report reads
    them back from the markers, a row of blocks at a time); a failed block becomes nodata and
    is listed.
    """

    def __init__(self, plan: RunPlan, progress: Progress) -> None:
        self.job = plan.job()
        self.progress = progress
        self.computed = 0
        self.pixels = 0
        self.workers: dict[str, int] = {}
        self.failures: dict[str, str] = {}
        self.failed_pixels = 0

    def done(self, record: BlockRecord) -> None:
        self.computed += 1
        self.pixels += record.pixels
        self.workers[record.worker] = self.workers.get(record.worker, 0) + 1
        self.progress.advance(pixels=record.pixels)

    def failed(self, index: tuple[int, int], message: str) -> None:
        self.failures[f"{index[0]}_{index[1]}"] = message
        write_nodata(self.job, index)
        self.failed_pixels += self.job.tiles.block_core(*index).size
        self.progress.advance(failed=True)

    def idle(self) -> None:
        self.progress.check_stall()


def segment_stage(plan: RunPlan, ctx: RunContext) -> SegmentOutcome:
    """Segment every block without a marker on the executor; failed blocks become nodata."""
    start = time.perf_counter()
    reused = plan.workdir.done_ids()
    todo = [i for i in plan.tiles.block_indices() if f"{i[0]}_{i[1]}" not in reused]
    megapixels = sum(plan.tiles.block_core(*i).size for i in todo) / 1e6
    sink = _Sink(plan, ctx.progress(len(todo), megapixels, f"segment {plan.name}"))
    ctx.executor.run(sink.job, todo, new_run_id(), sink)
    _save_preview(plan, sink.job.feed)
    if not sink.failures:
        plan.workdir.record_stage(Stage.SEGMENT, time.perf_counter() - start)
    return SegmentOutcome(
        plan.tiles.n_blocks, len(reused), sink.computed, sink.pixels, sink.workers,
        sink.failures, sink.failed_pixels, time.perf_counter() - start,
    )


def _save_preview(plan: RunPlan, feed: Feed | None) -> None:
    """The quicklook's decimation of level 0, from what the feed tasks kept (when they did)."""
    if feed is None:
        return
    info = plan.info
    preview = assemble_preview(feed, plan.tiles, info.bands, info.dtype, QUICKLOOK_SIDE)
    if preview is not None:
        preview.save(plan.workdir.preview)


def export_stage(plan: RunPlan) -> list[str]:
    """Write the output files (atomically) from the label array; returns their paths."""
    start = time.perf_counter()
    storage.remove(sidecar(plan.options.output))  # it described the old output
    job = export_job(plan)
    written = write_outputs(job)
    if job.options.vectors:
        from segpipe.pipeline.vectors import write_vectors

        written.append(write_vectors(job))
    if plan.options.instances.wanted:
        from segpipe.pipeline.instances.tables import write_instance_tables

        written += write_instance_tables(plan)
    plan.workdir.record_stage(Stage.EXPORT, time.perf_counter() - start)
    return written


def export_job(plan: RunPlan) -> ExportJob:
    """What the writers need, from the plan."""
    names = tuple(c.name for c in plan.card.classes)
    one = plan.geometry.out_channels == 1
    return ExportJob(
        labels_path=plan.workdir.labels, out=plan.options.output, info=plan.info,
        class_names=names, colors=tuple(c.color for c in plan.card.classes),
        nodata=plan.nodata, tags=provenance_tags(plan),
        options=plan.options.export, probabilities_path=plan.probabilities_path,
        probability_names=names[-1:] if one else names,
        image_path=plan.workdir.image if storage.exists(plan.workdir.image) else None,
        instances_path=_instances_path(plan),
    )


def _instances_path(plan: RunPlan) -> str | None:
    """The instance id array the export writes, when the run asks for instances."""
    if not plan.options.instances.wanted:
        return None
    from segpipe.pipeline.instances.stage import instances_path

    return instances_path(plan.workdir)


def instance_stage(plan: RunPlan) -> None:
    """The instance pass (``instances.zarr``), unless a finished one has the same settings."""
    from segpipe.pipeline.instances.stage import instance_stage as run_pass

    run_pass(plan)


def provenance_tags(plan: RunPlan) -> dict[str, str]:
    """Tags written into outputs: model hash, version and the tiling parameters."""
    return {
        "SEGPIPE_VERSION": __version__,
        "SEGPIPE_MODEL": plan.card.name,
        "SEGPIPE_MODEL_SHA256": plan.model_sha256,
        "SEGPIPE_TILE": str(plan.tiles.tile),
        "SEGPIPE_HALO": str(plan.tiles.halo),
        "SEGPIPE_BLEND": str(plan.options.tiling.blend),
        "SEGPIPE_NORMALIZE": str(plan.normalization.method),
        "SEGPIPE_PRECISION": str(plan.options.inference.precision),
    }


def report_stage(
    plan: RunPlan, outcome: SegmentOutcome, times: dict[str, float]
) -> RunSummary:
    """The summary: JSON in the work directory; on success beside the output, workdir dropped."""
    start = time.perf_counter()
    summary = summarize(plan, outcome, times).with_seconds(
        **{Stage.REPORT: time.perf_counter() - start})
    text = json.dumps(summary.to_dict(), indent=2, default=str)
    storage.write_text(storage.join(plan.workdir.path, "summary.json"), text)
    start = time.perf_counter()
    write_visuals(plan, summary)  # quicklook and HTML report, while the label array exists
    summary = summary.with_seconds(visuals=time.perf_counter() - start)  # not in the HTML's
    if not outcome.failed:
        write_sidecar(plan.options.output, plan.label_key(), plan.export_key(),
                      summary.to_dict())
        write_areas_csv(plan.options.output, summary)
        if not plan.options.keep_workdir:
            plan.workdir.remove()
    return summary


def failure_message(plan: RunPlan, failed: dict[str, str]) -> str:
    """One line on failed blocks: how many, which, the first error, and what to do."""
    ids = sorted(failed)
    shown = ", ".join(ids[:10]) + (", …" if len(ids) > 10 else "")
    return (
        f"{len(ids)} of {plan.tiles.n_blocks} blocks of {plan.options.input} failed after "
        f"retries ({shown}; first error: {failed[ids[0]]}); they are nodata in the label array "
        f"and no output was written. Partial results are kept in {plan.workdir.path}: fix the "
        "cause and rerun with --resume"
    )


# ---------------------------------------------------------------------------- the sequence


def run_one(options: RunOptions, ctx: RunContext | None = None) -> RunResult:
    """All stages for one input; its summary (a :class:`SkippedRun` when it was up to date).

    Raises :class:`BlocksFailedError` (exit 1) when blocks failed after their retries: they are
    nodata in the label array, the summary is in the work directory, and nothing is written at
    the output path.
    """
    with holding_readers():  # planning's open of the input serves the statistics
        return _run_stages(options, ctx or RunContext())


def _run_stages(options: RunOptions, ctx: RunContext) -> RunResult:
    """:func:`run_one`'s stages, in order."""
    times: dict[str, float] = {}

    def timed(stage: Stage, fn: Callable[..., T], *args: Any) -> T:
        start = time.perf_counter()
        result = ctx.call(stage, fn, *args)
        times[stage] = time.perf_counter() - start
        return result

    plan = timed(Stage.PLAN, plan_stage, options, ctx.preflighted)
    if plan is None:
        return SkippedRun(options.input, options.output)
    timed(Stage.INGEST, ingest_stage, plan)
    plan = timed(Stage.STATS, stats_stage, plan)
    outcome = timed(Stage.SEGMENT, segment_stage, plan, ctx)
    if outcome.failed:
        timed(Stage.REPORT, report_stage, plan, outcome, times)
        raise BlocksFailedError(failure_message(plan, dict(outcome.failed)))
    if plan.options.instances.wanted:
        timed(Stage.INSTANCES, instance_stage, plan)
    timed(Stage.EXPORT, export_stage, plan)
    return timed(Stage.REPORT, report_stage, plan, outcome, times)
