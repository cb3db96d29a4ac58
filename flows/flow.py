"""``segpipe run`` as a Prefect flow over the library's stage sequence.

One flow run covers one batch (one or several inputs). For each input it runs
:func:`segpipe.pipeline.stages.run_one`, the stage sequence the library defines once, with a
stage caller that wraps every stage function in a Prefect task: the tasks add retries (on I/O
errors only, for ingest and export), run names, logs and the Markdown report artifact, and
nothing else. Blocks run on the :class:`~segpipe.flows.cluster.DaskExecutor` (a LocalCluster, or
``--scheduler``), or in this process with ``--workers 0``. The flow runs on Prefect's temporary
local server when ``PREFECT_API_URL`` is unset, or on the server it names.

Keep this module without ``from __future__ import annotations``: Prefect validates the flow's
parameters from its annotations, and served runs fail with string annotations.
"""

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from segpipe.flows.cluster import Cluster, DaskExecutor
from segpipe.flows.execution import Execution
from segpipe.models.foundation import BatchError, BatchInputError, SegpipeError
from segpipe.pipeline import storage
from segpipe.pipeline.executor import BlockExecutor, InProcessExecutor
from segpipe.pipeline.inputchecks import warn_if_all_nodata
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.outputs import workdir_of
from segpipe.pipeline.plan import RunPlan
from segpipe.pipeline.report import SegmentOutcome, artifact_key, summary_markdown
from segpipe.pipeline.stages import RunContext, Stage, report_stage, run_one
from segpipe.pipeline.summary import RunResult, RunSummary
from segpipe.pipeline.visuals import report_files

log = logging.getLogger("segpipe")

# stages that read or write files and may meet a passing I/O error
_IO_STAGES = frozenset({Stage.INGEST, Stage.EXPORT})


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry on I/O errors only, never on bad input or usage."""
    try:
        state.result()
    except SegpipeError:
        return False
    except OSError:
        return True
    except Exception:
        return False
    return False


def _subject(args: tuple[Any, ...]) -> str:
    first = args[0]
    return Path(getattr(first, "input", None) or first.options.input).name


def report_and_publish(
    plan: RunPlan, outcome: SegmentOutcome, times: dict[str, float]
) -> RunSummary:
    """The report stage, plus Prefect artifacts: the Markdown summary and the HTML report's link.

    The HTML report lies beside the output, or in the work directory when blocks failed.
    """
    summary = report_stage(plan, outcome, times)
    key = artifact_key(plan.options.input)
    markdown = summary_markdown(summary)
    _, target = report_files(summary)
    if storage.exists(target):
        page = storage.basename(target)
        uri = target if storage.is_url(target) else Path(target).absolute().as_uri()
        markdown += f"\nHTML report: [{page}]({uri}) (`{target}`)\n"
        create_link_artifact(
            uri, link_text=page, key=f"{key[:95]}-html",
            description=f"segpipe run report (HTML) for {plan.options.input}",
        )
    create_markdown_artifact(
        markdown, key=key, description=f"segpipe run summary for {plan.options.input}",
    )
    return summary


def prefect_stage(stage: Stage, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one stage function as a Prefect task (the stage caller of the flow).

    The task's one parameter is a handle, the run's work directory: the stage's own arguments
    (options, the plan, the outcome) are closed over, so Prefect never serializes, hashes or
    walks them (it visits every parameter to find upstream tasks).
    """
    if stage is Stage.REPORT:
        fn = report_and_publish

    def run_stage(workdir: str) -> Any:
        return fn(*args)

    wrapped = task(
        name=str(stage), task_run_name=f"{stage} {_subject(args)}", cache_policy=NO_CACHE,
        persist_result=False, retries=1 if stage in _IO_STAGES else 0,
        retry_condition_fn=retry_on_io_error,
    )(run_stage)
    return wrapped(stage_handle(args))


def stage_handle(args: tuple[Any, ...]) -> str:
    """The work directory of a stage's arguments (the plan's, or the options' before planning)."""
    first = args[0]
    return first.workdir.path if isinstance(first, RunPlan) else workdir_of(first)


def _executor(execution: Execution, cluster: Cluster) -> BlockExecutor:
    spec = execution.cluster_spec()
    if spec.in_process:
        return InProcessExecutor()
    if spec.scheduler is None and spec.workers is None:
        from segpipe.flows.autoexec import AutoExecutor

        return AutoExecutor(cluster)  # small inputs need no cluster
    return DaskExecutor(cluster)


def run_batch(jobs: Sequence[RunOptions], execution: Execution,
              preflighted: bool = False) -> list[RunResult]:
    """Segment ``jobs`` one after another on one cluster (inside a flow); returns summaries.

    With one input its error propagates as is; with several, an input that fails is reported
    and the others go on, then :class:`BatchError` (or :class:`BatchInputError` when every
    failure was bad input) lists the failures. ``preflighted``: the caller ran the preflight
    checks on every job.
    """
    summaries: list[RunResult] = []
    failures: dict[str, str] = {}
    usage = True
    with Cluster(execution.cluster_spec()) as cluster:
        ctx = RunContext(_executor(execution, cluster), prefect_stage, execution.progress,
                         preflighted)
        for options in jobs:
            try:
                summaries.append(run_one(options, ctx))
                warn_if_all_nodata(summaries[-1])
            except SegpipeError as exc:
                if len(jobs) == 1:
                    raise
                failures[options.input] = str(exc)
                usage = usage and exc.exit_code == 2
                _warn(execution, f"{options.input} failed: {exc}")
            except Exception as exc:
                if len(jobs) == 1:
                    raise
                failures[options.input] = f"{type(exc).__name__}: {exc}"
                usage = False
                _warn(execution, f"{options.input} failed: {failures[options.input]}")
    if failures:
        raise (BatchInputError if usage else BatchError)(
            f"{len(failures)} of {len(jobs)} inputs failed: "
            + "; ".join(f"{k}: {v}" for k, v in failures.items())
        )
    return summaries


def _warn(execution: Execution, message: str) -> None:
    get_run_logger().error(message)
    if not execution.quiet:
        print(f"warning: {message}", file=sys.stderr, flush=True)


@flow(name="segpipe-run", flow_run_name="segpipe run {inputs}")
def segpipe_run(
    inputs: list[str], jobs: list[RunOptions], execution: Execution | None = None,
    preflighted: bool = False,
) -> list[RunResult]:
    """Segment ``jobs``, one per input, into label masks (``inputs``: as the user gave them).

    The caller expanded the inputs (paths, folders, globs) into jobs once
    (:func:`~segpipe.flows.inputs.expand_inputs`), and with ``preflighted`` checked each.
    Returns one summary per input (a :class:`~segpipe.pipeline.summary.SkippedRun` for an
    up-to-date output).
    """
    return run_batch(jobs, execution or Execution(), preflighted)


__all__ = ["Execution", "run_batch", "segpipe_run"]
