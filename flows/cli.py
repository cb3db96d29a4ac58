"""The ``segpipe`` command line: a thin layer over the flows and the library.

Bad usage or bad input prints one line ``error: ...`` on stderr and exits 2, with no traceback
and no output file; anything unexpected exits 1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

import click

from segpipe.models.card import NormMethod
from segpipe.models.errors import SegpipeError
from segpipe.pipeline import __version__
from segpipe.pipeline.stitch import Blend

if TYPE_CHECKING:
    from segpipe.pipeline.run import RunOptions


def _int_list(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of band numbers"
        ) from None
    if not items:
        raise click.BadParameter("no band numbers given")
    return items


def _choice(enum: type[StrEnum]) -> click.Choice:
    return click.Choice([str(e) for e in enum], case_sensitive=False)


@click.group()
@click.version_option(__version__, prog_name="segpipe")
def cli() -> None:
    """Segment gigapixel slide scans and satellite rasters, tile by tile, exactly."""


def _prefect_defaults() -> None:
    """Prefect without setup: no analytics (nothing leaves the machine) unless the user says."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _segment_options(command):
    """The options ``run`` and ``serve`` share: model, tiling, inference and execution."""
    options = [
        click.option("--model", default="unet", show_default=True,
                     help="Model file or registry name."),
        click.option("--tile", type=int, default=512, show_default=True,
                     help="Tile size in pixels."),
        click.option("--halo", type=int, default=None,
                     help="Halo in pixels (default: from the model)."),
        click.option("--blend", type=_choice(Blend), default=str(Blend.CROP), show_default=True),
        click.option("--batch-size", type=int, default=4, show_default=True),
        click.option("--device", default="auto", show_default=True,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--bands", callback=_int_list, default=None,
                     help="1-based bands, e.g. 1,2,3."),
        click.option("--normalize", type=_choice(NormMethod), default=None,
                     help="Override the model card's normalization."),
        click.option("--level", type=int, default=None,
                     help="Pyramid level to read (default: 0, or the card's pixel size)."),
        click.option("--pixel-size", type=float, default=None,
                     help="Read the pyramid level closest to this pixel size (input units)."),
        click.option("--probabilities", is_flag=True, help="Also write per-class probabilities."),
        click.option("--probabilities-dtype", type=click.Choice(["float", "uint8"]),
                     default="float", show_default=True,
                     help="float (float32 in TIFFs, float16 in Zarr) or uint8 (p × 255)."),
        click.option("--overview-resampling", type=click.Choice(["nearest", "mode"]),
                     default="nearest", show_default=True,
                     help="How pyramid levels of GeoTIFF outputs are made (labels: never "
                          "averaged)."),
        click.option("--ngff-version", type=click.Choice(["0.4", "0.5"]), default="0.4",
                     show_default=True, help="OME-Zarr output version."),
        click.option("--bf16", is_flag=True, help="bf16 autocast on CUDA."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        click.option("--workers", type=int, default=None,
                     help="Local Dask worker processes (default: one per GPU, else up to 4 "
                          "sharing the cores; 0: segment in this process)."),
        click.option("--scheduler", default=None,
                     help="Use an existing Dask cluster, e.g. tcp://host:8786."),
        click.option("--stall-after", type=float, default=600.0, show_default=True,
                     help="Report a stall when no block finishes for this many seconds."),
        click.option("--block-pixels", type=int, default=2048, show_default=True, hidden=True,
                     help="Side of a block (one Dask task) in pixels, rounded to whole tiles."),
        click.option("--verbose", is_flag=True, help="Show Prefect's and Dask's logs."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _settings(input_: str, output: str, kw: dict) -> RunOptions:
    from segpipe.pipeline.run import RunOptions

    normalize = kw["normalize"]
    return RunOptions(
        input=input_, output=output, model=kw["model"], tile=kw["tile"], halo=kw["halo"],
        blend=Blend(kw["blend"]), batch_size=kw["batch_size"], device=kw["device"],
        bands=kw["bands"], normalize=NormMethod(normalize) if normalize else None,
        probabilities=kw["probabilities"], overwrite=kw["overwrite"],
        workdir=kw.get("workdir"), level=kw["level"], pixel_size=kw["pixel_size"],
        bf16=kw["bf16"], overview_resampling=kw["overview_resampling"],
        probabilities_uint8=kw["probabilities_dtype"] == "uint8",
        ngff_version=kw["ngff_version"],
        keep_workdir=kw.get("keep_workdir", False), block_pixels=kw["block_pixels"],
    )


@cli.command()
@click.option("--input", "inputs", required=True, multiple=True,
              help="Input raster(s): files, directories or globs; repeat for several.")
@click.option("--output", default=None,
              help="Output file (one input; the extension picks the format) or directory "
                   "(several inputs). Default: beside each input, NAME.labels.tif.")
@click.option("--pattern", default=None,
              help="Files to take from --input directories, e.g. '*.svs'.")
@_segment_options
@click.option("--workdir", default=None,
              help="Work directory (default: beside the output). One input only.")
@click.option("--keep-workdir", is_flag=True, help="Keep the work directory after success.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from its work directory.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option("--summary", "summary_path", default=None, help="Also write the run summary here.")
def run(inputs: tuple[str, ...], output: str | None, pattern: str | None, quiet: bool,
        resume: bool, summary_path: str | None, **kw) -> None:
    """Segment rasters into label masks (a Prefect flow; blocks run on Dask workers)."""
    from pathlib import Path

    from segpipe.flows.cluster import ClusterSpec

    ClusterSpec(kw["scheduler"], kw["workers"])  # bad combinations fail before any work
    _prefect_defaults()
    from segpipe.flows.flow import Execution, configure_logging, expand_inputs, segpipe_run

    configure_logging(kw["verbose"])
    template = _settings(inputs[0], output or "", kw)
    jobs = expand_inputs(inputs, output, template, pattern)
    if kw["workdir"] and len(jobs) > 1:
        raise click.UsageError("--workdir names one work directory; it needs a single input")
    execution = Execution(
        scheduler=kw["scheduler"], workers=kw["workers"], resume=resume, quiet=quiet,
        stall_after=kw["stall_after"], verbose=kw["verbose"],
    )
    summaries = segpipe_run(list(inputs), output, template, execution, pattern)
    if summary_path:
        data = summaries[0] if len(summaries) == 1 else summaries
        Path(summary_path).write_text(json.dumps(data, indent=2, default=str))
    if not quiet:
        for s in summaries:
            if s.get("skipped"):
                click.echo(f"{s['output']} is up to date; skipped", err=True)
            else:
                click.echo(f"wrote {s['output']}", err=True)


@cli.command()
@click.option("--watch", required=True, help="Directory to segment new files from.")
@click.option("--pattern", default="*.tif", show_default=True,
              help="Files to take from the directory, e.g. '*.svs'.")
@click.option("--output", default=None,
              help="Output directory (default: beside each input).")
@click.option("--cron", default=None,
              help="Schedule, e.g. '0 2 * * *' (every night at 02:00).")
@click.option("--interval", type=float, default=None, help="Or: run every this many seconds.")
@click.option("--timezone", default=None, help="Time zone of --cron, e.g. Europe/Berlin.")
@click.option("--name", default="segpipe-watch", show_default=True, help="Deployment name.")
@click.option("--settle", type=float, default=60.0, show_default=True,
              help="Leave files modified less than this many seconds ago for the next run.")
@_segment_options
def serve(watch: str, pattern: str, output: str | None, cron: str | None,
          interval: float | None, timezone: str | None, name: str, settle: float, **kw) -> None:
    """Serve a Prefect deployment that segments new files in a directory on a schedule.

    Runs until stopped (Ctrl-C), polling the Prefect server (PREFECT_API_URL, else a temporary
    local one) for scheduled and manually triggered runs.
    """
    from pathlib import Path

    from segpipe.flows.cluster import ClusterSpec

    if not Path(watch).is_dir():
        raise click.BadParameter(f"{watch} is not a directory", param_hint="--watch")
    if cron and interval:
        raise click.UsageError("give --cron or --interval, not both")
    ClusterSpec(kw["scheduler"], kw["workers"])
    _prefect_defaults()
    from segpipe.flows.flow import Execution, configure_logging
    from segpipe.flows.serve import serve_folder

    configure_logging(kw["verbose"])
    execution = Execution(
        scheduler=kw["scheduler"], workers=kw["workers"], quiet=True,
        stall_after=kw["stall_after"], verbose=kw["verbose"],
    )
    model = Path(kw["model"])
    if model.is_file():
        kw["model"] = str(model.absolute())  # runs start in their own processes
    serve_folder(
        watch, pattern=pattern, output=output, options=_settings(watch, output or "", kw),
        execution=execution, cron=cron, interval=interval, timezone=timezone, name=name,
        settle=settle,
    )


@cli.command()
@click.argument("path")
@click.option("--level", type=int, default=0, show_default=True)
def inspect(path: str, level: int) -> None:
    """Print what segpipe reads from a raster, as JSON."""
    from dataclasses import asdict

    from segpipe.pipeline.io.base import open_raster

    with open_raster(path, level=level) as reader:
        click.echo(json.dumps(asdict(reader.info), indent=2, default=str, ensure_ascii=False))


@cli.command("models")
def models_cmd() -> None:
    """List the built-in model architectures."""
    from segpipe.models import list_models

    for name in list_models():
        click.echo(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segpipe`` console script; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        return 1
    except click.ClickException as exc:
        print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
        return 2
    except SegpipeError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("SEGPIPE_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(set SEGPIPE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
