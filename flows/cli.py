"""The ``segpipe`` command line: a thin layer over the flows and the library.

Bad usage or bad input prints one line ``error: ...`` on stderr and exits 2, with no traceback
and no output file (an output folder another run holds is such a case); a run whose blocks
failed, or that filled the disk, exits 1; Ctrl-C or SIGTERM exits 130; anything unexpected
exits 1 (``SEGPIPE_DEBUG=1`` shows the traceback). The options are built from the option
dataclasses (:mod:`segpipe.flows.clioptions`). Importing this module imports neither torch nor
Prefect: ``segpipe --help`` answers at once.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from segpipe.flows import interrupt
from segpipe.flows.clioptions import execution_from, groups_from, segment_options
from segpipe.flows.cmd_evaluate import evaluate as evaluate_command
from segpipe.flows.cmd_inspect import inspect as inspect_command
from segpipe.flows.cmd_train import train as train_command
from segpipe.flows.lock import release_all
from segpipe.models.foundation import SegpipeError, __version__
from segpipe.models.location import is_url
from segpipe.pipeline.options import RunOptions

if TYPE_CHECKING:
    from segpipe.pipeline.summary import RunResult


@click.group()
@click.version_option(__version__, prog_name="segpipe")
def cli() -> None:
    """Segment gigapixel slide scans and satellite rasters, tile by tile, exactly."""


def _prefect_defaults() -> None:
    """Prefect without setup: no analytics (nothing leaves the machine) unless the user says."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Prefect's 20 s for its temporary server to answer is too short on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


@cli.command()
@click.option("--input", "inputs", required=True, multiple=True,
              help="Input raster(s): files, folders or globs; repeat for several.")
@click.option("--output", default=None,
              help="Output file (one input; the extension picks the format) or folder "
                   "(several inputs). Default: beside each input, NAME.labels.tif.")
@click.option("--pattern", default=None, help="Files to take from --input folders, e.g. '*.svs'.")
@segment_options
@click.option("--workdir", default=None,
              help="Work directory (default: beside the output). One input only.")
@click.option("--keep-workdir", is_flag=True,
              help="Keep the work directory after success (a rerun with only output options "
                   "changed then re-exports without running the model).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its work directory.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--summary", "summary_path", default=None, help="Also write the run summary here.")
def run(inputs: tuple[str, ...], output: str | None, pattern: str | None, workdir: str | None,
        keep_workdir: bool, resume: bool, overwrite: bool, summary_path: str | None,
        **kw: Any) -> None:
    """Segment rasters into label masks (a Prefect flow; blocks run on Dask workers)."""
    execution = execution_from(kw)
    template = RunOptions(
        input=inputs[0], output="", workdir=workdir, overwrite=overwrite, resume=resume,
        keep_workdir=keep_workdir, **groups_from(kw),
    )
    _prefect_defaults()
    from segpipe.flows.startup import start_prefect_server

    # first: Prefect's server starts (seconds, on another core) while torch is imported and
    # the inputs are checked; a refused input stops it again at exit
    server = start_prefect_server()
    from segpipe.flows.inputs import expand_inputs
    from segpipe.pipeline.plan import preflight

    jobs = expand_inputs(inputs, output, template, pattern)
    if workdir and len(jobs) > 1:
        raise click.UsageError("--workdir names one work directory; it needs a single input")
    for job in jobs:
        preflight(job)  # refuse bad paths and devices before Prefect or Dask start
    execution.cluster_spec().security()  # a tls:// scheduler's CA, certificate and key load
    from segpipe.flows.diskfull import disk_full_reported
    from segpipe.flows.lock import hold_outputs

    # one run per output folder (a second exits 2 naming the holder); a full disk: one error
    with disk_full_reported(jobs), hold_outputs([j.output for j in jobs]):
        summaries = _run_flow(list(inputs), jobs, execution, server.wait)
    if summary_path:
        data = [s.to_dict() for s in summaries]
        Path(summary_path).write_text(
            json.dumps(data[0] if len(data) == 1 else data, indent=2, default=str))
    if not execution.quiet:
        for s in summaries:
            click.echo(f"{s.output} is up to date; skipped" if s.skipped
                       else f"wrote {s.output}", err=True)


def _run_flow(inputs: list[str], jobs: list[RunOptions], execution: Any,
              server_ready: Any = None) -> list[RunResult]:
    _prefect_defaults()
    from segpipe.flows.flow import segpipe_run
    from segpipe.flows.logs import configure_logging

    configure_logging(execution.verbose)
    if server_ready is not None:
        server_ready()
    try:
        return segpipe_run(inputs, jobs, execution, preflighted=True)
    finally:
        _flush_prefect_events()


def _flush_prefect_events(timeout: float = 30.0) -> None:
    """Send the run's queued task-run events to the server now, and retire the sender.

    Prefect reports task-run states as events through one process-wide worker that keeps the
    API it first connected to; unflushed, they are lost when a temporary server stops, and a
    later run in the same process (a library caller, ``serve``) would send to the old server.
    """
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout)


@cli.command()
@click.option("--watch", required=True, help="Folder to segment new files from.")
@click.option("--pattern", default="*.tif", show_default=True,
              help="Files to take from the folder, e.g. '*.svs'.")
@click.option("--output", default=None, help="Output folder (default: beside each input).")
@click.option("--cron", default=None, help="Schedule, e.g. '0 2 * * *' (every night at 02:00).")
@click.option("--interval", type=float, default=None, help="Or: run every this many seconds.")
@click.option("--timezone", default=None, help="Time zone of --cron, e.g. Europe/Berlin.")
@click.option("--name", default="segpipe-watch", show_default=True, help="Deployment name.")
@click.option("--settle", type=float, default=60.0, show_default=True,
              help="Leave files modified less than this many seconds ago for the next run.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@segment_options
def serve(watch: str, pattern: str, output: str | None, cron: str | None,
          interval: float | None, timezone: str | None, name: str, settle: float,
          overwrite: bool, **kw: Any) -> None:
    """Serve a Prefect deployment that segments new files in a folder on a schedule.

    Runs until stopped (Ctrl-C), polling the Prefect server (PREFECT_API_URL, else a temporary
    local one with Prefect's scheduler) for scheduled and manually triggered runs.
    """
    if not is_url(watch) and not Path(watch).is_dir():  # a URL is a bucket prefix
        raise click.BadParameter(f"{watch} is not a folder", param_hint="--watch")
    if cron and interval:
        raise click.UsageError("give --cron or --interval, not both")
    execution = execution_from(kw, quiet=True)
    execution.cluster_spec().security()  # a tls:// scheduler's CA, certificate and key load
    groups = groups_from(kw)
    model = Path(groups["inference"].model or "")
    if groups["inference"].model and model.is_file():  # runs start in their own processes
        from dataclasses import replace

        groups["inference"] = replace(groups["inference"], model=str(model.absolute()))
    _prefect_defaults()
    if interval:  # the runner looks for due runs this often (Prefect's default: 10 s)
        os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", str(max(1, min(10, int(interval)))))
    from segpipe.flows.startup import start_prefect_server

    # Prefect's own temporary server runs no scheduler: without PREFECT_API_URL, start one that
    # does (before Prefect is imported, which reads PREFECT_API_URL)
    server = start_prefect_server(scheduler=True)
    from segpipe.flows.logs import configure_logging
    from segpipe.flows.serve import Schedule, serve_folder

    configure_logging(execution.verbose)
    server.wait()
    serve_folder(
        watch, pattern=pattern, output=output,
        options=RunOptions(input=watch, output="", overwrite=overwrite, **groups),
        execution=execution, schedule=Schedule(cron, interval, timezone), name=name,
        settle=settle,
    )


@cli.command("models")
@click.argument("name", required=False)
def models_cmd(name: str | None) -> None:
    """List the bundled models and the architectures; NAME shows one's card or config."""
    from segpipe.flows.cmd_models import describe_model, models_listing

    click.echo(describe_model(name) if name else models_listing())


cli.add_command(inspect_command)
cli.add_command(train_command)
cli.add_command(evaluate_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segpipe`` console script; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    line = f"error: {_interrupted(argv)}"
    # Ctrl-C and a scheduler's or supervisor's SIGTERM: unwind, bounded (flows/interrupt.py)
    with interrupt.handled(line, release_all):
        return _run(argv, line)


def _run(argv: Sequence[str] | None, interrupted: str) -> int:
    """The command, its errors as one ``error:`` line and an exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):  # Ctrl-C, or SIGTERM
        interrupt.say_once(interrupted)
        return 130
    except click.ClickException as exc:
        print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
        return 2
    except SegpipeError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if os.environ.get("SEGPIPE_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(set SEGPIPE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


def console() -> NoReturn:
    """The ``segpipe`` console script: :func:`main`, the exit handlers, then a fast exit.

    Tearing down an interpreter that has loaded torch and Prefect takes over a second, longer
    than a small run's stages. Everything segpipe writes is closed by the time :func:`main`
    returns, so the process runs the exit handlers (Prefect's log and event senders, the
    temporary server, logging) and leaves without the teardown; unless a thread of its own is
    still running, when it exits the usual way.
    """
    code = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, e.g. `| head`
            stream.flush()
    os._exit(code)


def _interrupted(argv: Sequence[str] | None) -> str:
    """The line for an interrupted command: how to continue, for the commands that can."""
    args = list(argv) if argv is not None else sys.argv[1:]
    if args and args[0] in ("run", "train"):
        return "interrupted; rerun with --resume to continue"
    return "interrupted"


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
