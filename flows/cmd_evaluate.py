"""``segpipe evaluate PRED REF``: confusion matrix, IoU, accuracy and area-adjusted estimates.

The library is :mod:`segpipe.pipeline.evaluate`; this command prints its table, or JSON with
``--json`` (and writes it with ``--output``).
"""

from __future__ import annotations

import json

import click

__all__ = ["evaluate"]


@click.command()
@click.argument("pred")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("--output", default=None, help="Also write the JSON results to this file.")
def evaluate(pred: str, ref: str, as_json: bool, output: str | None) -> None:
    """Compare a label map PRED with a reference REF on the same grid, window by window.

    For maps in a projected CRS also the area-adjusted accuracy and class areas with 95 %
    confidence intervals (Olofsson et al. 2014), the reference pixels taken as the sample.
    """
    from segpipe.models.foundation import write_text_atomic
    from segpipe.pipeline.evaluate import evaluate as run_evaluation

    result = run_evaluation(pred, ref)
    text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False)
    if output:
        write_text_atomic(output, text + "\n")
    click.echo(text if as_json else result.table())
