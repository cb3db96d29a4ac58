"""``segpipe run`` as a Prefect flow: the stages are tasks, the blocks are Dask tasks.

One flow run covers one batch (one or several inputs). For each input the tasks are
``plan`` (inspect the input, load the model, check the work directory), ``ingest``, ``stats``,
``segment`` (one Dask task per block, on the run's cluster), ``export`` and ``report``; they
pass paths and small objects (:class:`~segpipe.pipeline.run.Prepared`, outcomes, summaries),
never arrays. Inputs whose outputs are up to date for the same model and parameters are
skipped. The flow runs on Prefect's temporary local server when ``PREFECT_API_URL`` is unset,
or on the server it names.
"""

import glob
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from segpipe.flows.cluster import Cluster, ClusterSpec, gather_blocks, submit_blocks
from segpipe.flows.progress import Progress
from segpipe.models.errors import InputError, SegpipeError
from segpipe.pipeline.manifest import Manifest, done_blocks
from segpipe.pipeline.run import (
    BlocksFailedError,
    Prepared,
    RunOptions,
    SegmentOutcome,
    artifact_key,
    block_id,
    block_pixels,
    check_output,
    driver_model,
    export_stage,
    failure_message,
    finish,
    ingest_stage,
    is_segpipe_output,
    new_run_id,
    open_run,
    output_is_current,
    pending_blocks,
    plan_run,
    report,
    segment_local,
    stats_stage,
    summary_json,
    summary_markdown,
    write_nodata,
)

log = logging.getLogger("segpipe")

# what a directory given as --input is searched for when no --pattern is given
RASTER_PATTERNS = (
    "*.tif", "*.tiff", "*.svs", "*.ndpi", "*.scn", "*.mrxs", "*.bif", "*.vrt", "*.jp2",
    "*.img", "*.ome.zarr", "*.zarr",
)
OUTPUT_SUFFIX = ".labels.tif"
_RASTER_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".svs", ".ndpi",
                    ".scn", ".mrxs", ".bif", ".vrt", ".jp2", ".img", ".zarr")


@dataclass(frozen=True)
class Execution:
    """How a batch runs: where the blocks go, resume or not, progress display, stall report."""

    scheduler: str | None = None
    workers: int | None = None
    resume: bool = False
    quiet: bool = False
    stall_after: float = 600.0
    verbose: bool = False

    def cluster_spec(self) -> ClusterSpec:
        """The Dask cluster these settings ask for."""
        return ClusterSpec(self.scheduler, self.workers, self.verbose)


class BatchError(RuntimeError):
    """Some inputs of a batch failed (the others were processed)."""


class BatchInputError(SegpipeError):
    """Some inputs of a batch were refused for bad input or usage (exit 2); the others ran."""


# ---------------------------------------------------------------------------------- inputs


def output_name(src: str) -> str:
    """The default output file name for an input: its name without extension + ``.labels.tif``."""
    name = Path(src.rstrip("/")).name
    lower = name.lower()
    for suffix in _RASTER_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)] + OUTPUT_SUFFIX
    return name.split(".")[0] + OUTPUT_SUFFIX


def _is_store(path: Path) -> bool:
    """A directory that is itself a raster (Zarr / OME-Zarr), not a folder of inputs."""
    return any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


def list_inputs(path: Path, patterns: Sequence[str]) -> list[Path]:
    """Files of folder ``path`` matching ``patterns``, without hidden files and segpipe outputs."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        for p in sorted(path.glob(pattern)):
            if not p.name.startswith(".") and not is_segpipe_output(p):
                found[p] = None
    return list(found)


def expand_inputs(
    inputs: Sequence[str], output: str | None, options: RunOptions, pattern: str | None = None,
    *, output_dir: bool = False,
) -> list[RunOptions]:
    """One :class:`RunOptions` per input file from paths, directories and globs.

    A directory is searched (not recursively) for ``pattern`` (default: common raster
    extensions); a Zarr store is an input itself. Hidden files and outputs segpipe wrote are
    left out. With one input file, ``output`` is the output file (default: beside the input)
    unless it is an existing directory or ``output_dir``; with several inputs (or a directory or
    glob) it is a directory (created when missing; default: beside each input).
    ``options.input`` and ``options.output`` are replaced per input.
    """
    patterns = (pattern,) if pattern else RASTER_PATTERNS
    files: dict[str, None] = {}
    single = len(inputs) == 1
    for spec in inputs:
        p = Path(spec)
        if "://" in spec or (p.exists() and (p.is_file() or _is_store(p))):
            files[spec] = None
        elif p.is_dir():
            found = list_inputs(p, patterns)
            if not found:
                raise InputError(
                    f"--input {spec}: no file in it matches {', '.join(patterns)}; "
                    "choose files with --pattern"
                )
            files.update((str(f), None) for f in found)
            single = False
        elif glob.has_magic(spec):
            found = [Path(f) for f in sorted(glob.glob(spec))]
            found = [f for f in found if not f.name.startswith(".") and not is_segpipe_output(f)]
            if not found:
                raise InputError(f"--input {spec}: the pattern matches no file")
            files.update((str(f), None) for f in found)
            single = False
        else:
            raise InputError(f"--input {spec}: file not found; check the path")
    paths = list(files)
    if output_dir or (output and Path(output).is_dir()):
        single = False
    if single and len(paths) == 1:
        out = output or str(Path(paths[0]).with_name(output_name(paths[0])))
        return [options.for_file(paths[0], out)]
    outdir = Path(output) if output else None
    if outdir is not None:
        if outdir.exists() and not outdir.is_dir():
            raise InputError(
                f"--output {outdir} is a file but {len(paths)} inputs were given; with several "
                "inputs --output is a directory"
            )
        outdir.mkdir(parents=True, exist_ok=True)
    jobs: list[RunOptions] = []
    seen: dict[str, str] = {}
    for src in paths:
        folder = outdir if outdir is not None else Path(src).parent
        out = str(folder / output_name(src))
        if out in seen:
            raise InputError(
                f"inputs {seen[out]} and {src} would both write {out}; rename one or run them "
                "separately"
            )
        seen[out] = src
        jobs.append(options.for_file(src, out))
    return jobs


# ----------------------------------------------------------------------------------- tasks


def retry_on_io_error(task, task_run, state) -> bool:
    """Prefect retry condition: retry a stage on I/O errors only, never on bad input or usage."""
    try:
        state.result()
    except SegpipeError:
        return False
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(name="plan", task_run_name="plan {options.input}", cache_policy=NO_CACHE,
      persist_result=False)
def plan_task(options: RunOptions, resume: bool) -> Prepared | None:
    """Inspect the input, load the model, plan the tiles, open the work directory.

    Returns None when the output is already up to date (same input, model and parameters).
    """
    model = driver_model(options.model)
    if not options.overwrite and output_is_current(options, model.sha256):
        get_run_logger().info("%s is up to date; skipped", options.output)
        return None
    check_output(options)
    prep = plan_run(options, model)
    for w in prep.warnings:
        log.warning(w)
    prep, _, resumed = open_run(prep, resume=resume)
    done = len(done_blocks(prep.workdir)) if resumed else 0
    get_run_logger().info(
        "%s: %d×%d px, %d tiles in %d blocks%s", prep.name, prep.plan.height, prep.plan.width,
        prep.plan.n_tiles, prep.plan.n_blocks, f", resuming ({done} done)" if resumed else "",
    )
    return prep


@task(name="ingest", task_run_name="ingest {prep.name}", cache_policy=NO_CACHE,
      persist_result=False, retries=1, retry_condition_fn=retry_on_io_error)
def ingest_task(prep: Prepared) -> str:
    """Copy the input into the work directory's Zarr (skipped when a resumed run has it)."""
    ingest_stage(prep, _manifest(prep))
    return prep.image_path


@task(name="stats", task_run_name="stats {prep.name}", cache_policy=NO_CACHE,
      persist_result=False)
def stats_task(prep: Prepared) -> Prepared:
    """Normalization statistics, once per image (kept in the manifest)."""
    prep, _ = stats_stage(prep, _manifest(prep))
    return prep


@task(name="segment", task_run_name="segment {prep.name}", cache_policy=NO_CACHE,
      persist_result=False)
def segment_task(prep: Prepared, scheduler: str | None, execution: Execution) -> SegmentOutcome:
    """Segment every unfinished block: one Dask task each on ``scheduler`` (or in-process)."""
    start = time.perf_counter()
    done = done_blocks(prep.workdir)
    todo = pending_blocks(prep.plan, done)
    progress = Progress(
        len(todo), sum(block_pixels(prep.plan, i) for i in todo) / 1e6, quiet=execution.quiet,
        stall_after=execution.stall_after, label=f"segment {prep.name}",
    )
    run_id = new_run_id()
    if scheduler is None:
        outcome = segment_local(
            prep, run_id=run_id, on_block=lambda r: progress.advance(pixels=r.pixels)
        )
    else:
        records, failed = [], {}

        def on_done(record) -> None:
            records.append(record)
            progress.advance(pixels=record.pixels)

        def on_failed(index: tuple[int, int], message: str) -> None:
            failed[block_id(index)] = message
            write_nodata(prep, index)
            progress.advance(failed=True)

        cluster = Cluster.for_address(scheduler)
        futures, by_key = submit_blocks(
            cluster.client(), prep.job(), todo, prep.workdir, run_id, gpu=cluster.gpu_resource
        )
        gather_blocks(
            futures, by_key, on_done=on_done, on_failed=on_failed, on_idle=progress.check_stall
        )
        outcome = SegmentOutcome(
            prep.plan.n_blocks, len(done), tuple(records), failed, time.perf_counter() - start
        )
    if outcome.failed:
        get_run_logger().error(failure_message(prep, outcome.failed))
    return outcome


@task(name="export", task_run_name="export {prep.name}", cache_policy=NO_CACHE,
      persist_result=False, retries=1, retry_condition_fn=retry_on_io_error)
def export_task(prep: Prepared) -> str:
    """Write the output file from the label array (beside it, renamed at the end)."""
    export_stage(prep, _manifest(prep))
    return prep.options.output


@task(name="report", task_run_name="report {prep.name}", cache_policy=NO_CACHE,
      persist_result=False)
def report_task(prep: Prepared, outcome: SegmentOutcome, times: dict[str, float]) -> dict:
    """The run summary: JSON in the work directory (and beside the output), Prefect artifact."""
    start = time.perf_counter()
    summary = report(prep, outcome, times)
    summary["stage_seconds"]["report"] = time.perf_counter() - start
    if outcome.failed:
        Path(prep.workdir, "summary.json").write_text(summary_json(summary))
    else:
        finish(prep, summary)
    create_markdown_artifact(
        summary_markdown(summary), key=artifact_key(prep.options.input),
        description=f"segpipe run summary for {prep.options.input}",
    )
    return summary


def _manifest(prep: Prepared) -> Manifest:
    manifest = Manifest.load(prep.workdir)
    if manifest is None:
        raise RuntimeError(f"the work directory {prep.workdir} lost its manifest during the run")
    return manifest




# ----------------------------------------------------------------------------------- flows


def segment_one(options: RunOptions, execution: Execution, cluster: Cluster) -> dict:
    """All stages for one input (inside a flow); returns its summary."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    prep = plan_task(options, execution.resume)
    times["plan"] = time.perf_counter() - t
    if prep is None:
        return {"input": options.input, "output": options.output, "skipped": "up to date"}
    t = time.perf_counter()
    ingest_task(prep)
    times["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    prep = stats_task(prep)
    times["stats"] = time.perf_counter() - t
    scheduler = None
    if not execution.cluster_spec().in_process:
        t = time.perf_counter()
        scheduler = cluster.address  # starts the local cluster on first use
        if time.perf_counter() - t > 0.01:
            times["cluster"] = time.perf_counter() - t
    t = time.perf_counter()
    outcome = cast(SegmentOutcome, segment_task(prep, scheduler, execution))
    times["segment"] = time.perf_counter() - t
    if outcome.failed:
        report_task(prep, outcome, times)
        raise BlocksFailedError(failure_message(prep, outcome.failed))
    t = time.perf_counter()
    export_task(prep)
    times["export"] = time.perf_counter() - t
    return report_task(prep, outcome, times)


def run_batch(jobs: Sequence[RunOptions], execution: Execution) -> list[dict]:
    """Segment ``jobs`` one after another on one cluster (inside a flow); returns summaries.

    With one input its error propagates as is; with several, an input that fails is reported
    and the others go on, then :class:`BatchError` lists the failures.
    """
    summaries, failures, usage = [], {}, True
    with Cluster(execution.cluster_spec()) as cluster:
        for options in jobs:
            try:
                summaries.append(segment_one(options, execution, cluster))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                if len(jobs) == 1:
                    raise
                failures[options.input] = f"{type(exc).__name__}: {exc}"
                usage = usage and isinstance(exc, SegpipeError)
                get_run_logger().error("%s failed: %s", options.input, failures[options.input])
                if not execution.quiet:
                    print(f"warning: {options.input} failed: {exc}", file=sys.stderr, flush=True)
    if failures:
        raise (BatchInputError if usage else BatchError)(
            f"{len(failures)} of {len(jobs)} inputs failed: "
            + "; ".join(f"{k}: {v}" for k, v in failures.items())
        )
    return summaries


@flow(name="segpipe-run", flow_run_name="segpipe run {inputs}")
def segpipe_run(
    inputs: list[str], output: str | None, options: RunOptions,
    execution: Execution | None = None, pattern: str | None = None,
) -> list[dict]:
    """Segment one or several rasters (paths, directories, globs) into label masks.

    ``options`` holds the settings (model, tile, halo, ...); its input and output are replaced
    per input. Returns one summary per input (``{"skipped": ...}`` for up-to-date outputs).
    """
    execution = execution or Execution()
    jobs = expand_inputs(inputs, output, options, pattern)
    return run_batch(jobs, execution)


# ------------------------------------------------------------------------- logging settings


class _DropLibraryRecords(logging.Filter):
    """Drops Prefect's and distributed's records from the console (they stay in the API)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(("prefect", "distributed"))


def configure_logging(verbose: bool) -> None:
    """Console logging for the CLI: quiet Prefect and Dask unless ``verbose``.

    Prefect still sends its run logs to the API (the UI shows them); only the console is
    filtered. ``verbose`` shows them, and segpipe's own INFO messages.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    if verbose:
        logging.getLogger("segpipe").setLevel(logging.INFO)
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.CRITICAL + 1)
        elif not any(isinstance(f, _DropLibraryRecords) for f in handler.filters):
            handler.addFilter(_DropLibraryRecords())


__all__ = [
    "BatchError",
    "BatchInputError",
    "Execution",
    "configure_logging",
    "expand_inputs",
    "output_name",
    "run_batch",
    "segpipe_run",
]
