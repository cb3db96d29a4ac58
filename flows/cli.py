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

import click

from segpipe.models.card import NormMethod
from segpipe.models.errors import SegpipeError
from segpipe.pipeline import __version__
from segpipe.pipeline.stitch import Blend


def _int_list(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of band numbers") from None
    if not items:
        raise click.BadParameter("no band numbers given")
    return items


def _choice(enum: type[StrEnum]) -> click.Choice:
    return click.Choice([str(e) for e in enum], case_sensitive=False)


@click.group()
@click.version_option(__version__, prog_name="segpipe")
def cli() -> None:
    """Segment gigapixel slide scans and satellite rasters, tile by tile, exactly."""


@cli.command()
@click.option("--input", "input_", required=True, help="Input raster (GeoTIFF, COG, ...).")
@click.option("--output", default=None, help="Output path; the extension picks the format.")
@click.option("--model", default="unet", show_default=True, help="Model file or registry name.")
@click.option("--tile", type=int, default=512, show_default=True, help="Tile size in pixels.")
@click.option("--halo", type=int, default=None, help="Halo in pixels (default: from the model).")
@click.option("--blend", type=_choice(Blend), default=str(Blend.CROP), show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--bands", callback=_int_list, default=None, help="1-based bands, e.g. 1,2,3.")
@click.option("--normalize", type=_choice(NormMethod), default=None,
              help="Override the model card's normalization.")
@click.option("--level", type=int, default=0, show_default=True, help="Pyramid level to read.")
@click.option("--probabilities", is_flag=True, help="Also write per-class probabilities.")
@click.option("--bf16", is_flag=True, help="bf16 autocast on CUDA.")
@click.option("--workdir", default=None, help="Work directory (default: beside the output).")
@click.option("--keep-workdir", is_flag=True, help="Keep the work directory after success.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option("--summary", "summary_path", default=None, help="Also write the run summary here.")
def run(
    input_: str, output: str | None, model: str, tile: int, halo: int | None, blend: str,
    batch_size: int, device: str, bands: tuple[int, ...] | None, normalize: str | None,
    level: int, probabilities: bool, bf16: bool, workdir: str | None, keep_workdir: bool,
    overwrite: bool, quiet: bool, summary_path: str | None,
) -> None:
    """Segment one raster into a label mask."""
    from pathlib import Path

    from segpipe.flows.progress import Progress
    from segpipe.pipeline.run import RunOptions, run_local

    if output is None:
        src = Path(input_)
        output = str(src.with_name(src.name.split(".")[0] + ".labels.tif"))
    options = RunOptions(
        input=input_, output=output, model=model, tile=tile, halo=halo, blend=Blend(blend),
        batch_size=batch_size, device=device, bands=bands,
        normalize=NormMethod(normalize) if normalize else None, probabilities=probabilities,
        overwrite=overwrite, workdir=workdir, level=level, bf16=bf16, keep_workdir=keep_workdir,
    )
    progress: list[Progress] = []

    def on_block(result) -> None:
        progress[0].advance()

    def on_start(total: int, megapixels: float) -> None:
        progress.append(Progress(total, megapixels, quiet=quiet))

    summary = run_local(options, progress=on_block, on_start=on_start)
    if summary_path:
        Path(summary_path).write_text(json.dumps(summary, indent=2, default=str))
    if not quiet:
        click.echo(f"wrote {output}", err=True)


@cli.command()
@click.argument("path")
@click.option("--level", type=int, default=0, show_default=True)
def inspect(path: str, level: int) -> None:
    """Print what segpipe reads from a raster, as JSON."""
    from dataclasses import asdict

    from segpipe.pipeline.io.base import open_raster

    with open_raster(path, level=level) as reader:
        click.echo(json.dumps(asdict(reader.info), indent=2, default=str))


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
