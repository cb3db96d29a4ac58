"""``segpipe serve``: a Prefect deployment that segments the new files of a folder on a schedule.

``segpipe serve --watch /scans --pattern '*.svs' --output /scans/labels --cron '0 2 * * *'``
creates (or updates) the deployment ``segpipe-watch/segpipe-watch`` on the Prefect server and
keeps serving it: at every scheduled time, and whenever a run is triggered by hand
(``prefect deployment run segpipe-watch/segpipe-watch``, or from the UI), the flow lists the
folder, skips the files whose outputs are up to date for the same model and parameters, and
segments the rest exactly like ``segpipe run`` (same work directories, manifest and resume).
Files modified in the last ``--settle`` seconds are left for the next run (a scanner may still be
writing them). Files segpipe wrote are never inputs (:func:`segpipe.flows.inputs.segpipe_files`):
outputs written into the watched folder are not segmented by the next run. Each run holds the
output folders' locks (:mod:`segpipe.flows.lock`), like ``segpipe run``.

Without ``PREFECT_API_URL`` the deployment lives on a temporary local server, with Prefect's
scheduler running, that ends with the process (:mod:`segpipe.flows.startup`); for schedules that
survive restarts, start a server (``prefect server start``) and point ``PREFECT_API_URL`` at it
(``http://127.0.0.1:4200/api``) for both the server's UI and ``segpipe serve``. Stopping
``segpipe serve`` pauses the schedule; starting it again resumes it.

Runs of the deployment never overlap: its concurrency limit is one run, and a run that comes due
while the previous one is still going is cancelled by the server (Prefect's ``CANCEL_NEW``
strategy), not queued, so short intervals never pile up late runs; the log says so each time.
"""

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from segpipe.flows import interrupt
from segpipe.flows.diskfull import disk_full_reported
from segpipe.flows.execution import Execution
from segpipe.flows.flow import run_batch
from segpipe.flows.inputs import expand_inputs, list_inputs, list_url_inputs
from segpipe.flows.lock import hold_outputs
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.storage import absolute, is_url
from segpipe.pipeline.summary import RunResult

FLOW_NAME = "segpipe-watch"
log = logging.getLogger(__name__)


def settled_files(watch: str, pattern: str, settle: float) -> tuple[list[str], list[str]]:
    """(files to process, files still changing) in ``watch`` matching ``pattern``.

    ``watch`` may be an object-store URL (a prefix); objects age by their LastModified.
    """
    if is_url(watch):
        found = [(u, url_modified(u)) for u in list_url_inputs(watch, (pattern,))]
    elif Path(watch).is_dir():
        found = [(str(p), p.stat().st_mtime) for p in list_inputs(Path(watch), (pattern,))]
    else:
        return [], []
    now = time.time()
    ready: list[str] = []
    young: list[str] = []
    for path, modified in found:
        (young if now - modified < settle else ready).append(path)
    return ready, young


def url_modified(url: str) -> float:
    """When the object at ``url`` was last written (seconds since the epoch)."""
    from segpipe.pipeline.storage import filesystem

    fs, inner = filesystem(url)
    return float(fs.modified(inner).timestamp())


@flow(name=FLOW_NAME, flow_run_name="segpipe watch {watch}")
def watch_folder(
    watch: str, pattern: str, output: str | None, options: RunOptions,
    execution: Execution | None = None, settle: float = 60.0,
) -> list[RunResult]:
    """Segment the files of ``watch`` matching ``pattern`` whose outputs are missing or stale.

    ``options`` holds the settings; its input and output are replaced per file. A file whose
    earlier run failed or was killed is resumed from its work directory (the label key still
    guards it). Returns one summary per file (a :class:`~segpipe.pipeline.summary.SkippedRun`
    for the files already done).
    """
    execution = execution or Execution(quiet=True)
    ready, young = settled_files(watch, pattern, settle)
    logger = get_run_logger()
    if young:
        logger.info("left for the next run (modified in the last %s s): %s", settle, young)
    if not ready:
        logger.info("no file in %s matches %s", watch, pattern)
        return []
    jobs = expand_inputs(ready, output, replace(options, resume=True), output_dir=True)
    with disk_full_reported(jobs), hold_outputs([j.output for j in jobs]):
        return run_batch(jobs, execution)


@dataclass(frozen=True)
class Schedule:
    """When the deployment runs: a cron expression (in ``timezone``) or an interval."""

    cron: str | None = None
    interval: float | None = None
    timezone: str | None = None

    def serve_kwargs(self) -> dict[str, Any]:
        """The schedule arguments of ``Flow.serve``."""
        if self.cron and self.timezone:
            from prefect.schedules import Cron

            return {"schedule": Cron(self.cron, timezone=self.timezone)}
        kw: dict[str, Any] = {}
        if self.cron:
            kw["cron"] = self.cron
        if self.interval:
            kw["interval"] = self.interval
        return kw


def serve_folder(
    watch: str, *, pattern: str, output: str | None, options: RunOptions, execution: Execution,
    schedule: Schedule, name: str = FLOW_NAME, settle: float = 60.0,
) -> None:
    """Create the deployment and serve it until interrupted (blocks; raises KeyboardInterrupt).

    A run in progress when serve is stopped is stopped with it (resumable, as an interrupted
    ``segpipe run``: the next run resumes it).
    """
    logging.getLogger("prefect.runner.state_proposer").addFilter(_SkippedRunSaid())
    parameters = {
        "watch": absolute(watch), "pattern": pattern,
        "output": absolute(output) if output else None,
        "options": options.to_dict(), "execution": asdict(execution), "settle": settle,
    }
    try:
        _serve(name, parameters, f"segpipe: segment new {pattern} files in {watch}", schedule)
    finally:  # a run in progress is a child process: it stops with serve (SIGTERM: "Crashed")
        interrupt.stop_children(grace=10)
    # the runner returns only when it was interrupted (Ctrl-C, SIGTERM): exit as interrupted
    raise KeyboardInterrupt


def _serve(name: str, parameters: dict[str, Any], description: str, schedule: Schedule) -> None:
    """What ``Flow.serve`` of :func:`watch_folder` does, with SIGTERM handled as Ctrl-C is.

    Prefect's runner answers SIGTERM with ``sys.exit(0)`` and leaves its schedules unpaused;
    here SIGTERM unwinds the runner like Ctrl-C (schedules paused, exit 130). One run at a time
    for the deployment; a run due while one is going is cancelled by the server (the runner may
    propose it, limit 2, so that the log can say so).
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.runner import Runner

    class _Runner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            interrupt.on_signal(signal.SIGTERM, None)  # the watchdog, then KeyboardInterrupt

    runner = _Runner(name=name, pause_on_shutdown=True, limit=2)
    runner.add_flow(
        watch_folder, name=name, parameters=parameters, description=description,
        tags=["segpipe"], entrypoint_type=EntrypointType.MODULE_PATH,
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        **schedule.serve_kwargs(),
    )
    print(f"serving deployment {FLOW_NAME}/{name} ({description}); Ctrl-C or SIGTERM stops it",
          flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner.start())


class _SkippedRunSaid(logging.Filter):
    """Says on segpipe's log when the server cancels a due run because the last one is going."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Aborted submission" in message and "CANCELLED" in message.upper():
            log.warning("a scheduled run was skipped: the previous run was still going "
                        "(runs of one deployment never overlap)")
        return True
