"""The class table beside an output, ``<name>.areas.csv``: one row per class, from the summary.

It reads the summary's JSON form (:meth:`~segpipe.pipeline.summary.RunSummary.to_dict`, or a
``summary.json`` read back), whose keys are the CSV's columns.

Two counts of objects stand side by side, and their column names say which is which:

* ``objects`` (with ``density``, ``density_unit``): the 4-connected regions of each class,
  merged across block seams, before any separation and with no minimum area: what every run
  reports (the README's objects);
* ``instances`` (with ``instances_density``, ``instances_density_unit``): the objects of the
  instance labels, after the watershed separated touching ones and ``--instance-min-area``
  dropped small ones (``summary.instances``); filled only for the instance classes of a run
  that made instances (``--instance-labels``, ``--measurements``, ``--detections``).

Densities are per km² (maps) or per mm² (microscopy) of the area that has a class. The header is
the same for every run, so scripts reading several tables see one schema; a value that is
unknown or not asked for is an empty cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

__all__ = ["CSV_COLUMNS", "INSTANCE_COLUMNS", "areas_csv"]

INSTANCE_COLUMNS = ("instances", "instances_density", "instances_density_unit")
CSV_COLUMNS = (
    "label", "name", "pixels", "area", "area_unit", "area_ha", "area_mm2", "objects", "density",
    "density_unit", *INSTANCE_COLUMNS,
)


def _instance_cells(summary: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Per label value, the instance columns of ``summary["instances"]`` (none without it)."""
    instances = summary.get("instances") or {}
    return {int(c["label"]): {"instances": c["instances"],
                              "instances_density": c.get("density"),
                              "instances_density_unit": c.get("density_unit")}
            for c in instances.get("classes") or []}


def areas_csv(summary: Mapping[str, Any]) -> str:
    """The class table as CSV text (:data:`CSV_COLUMNS`; an empty cell where a value is None)."""
    extra = _instance_cells(summary)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in summary["classes"]:
        row = {**c, **extra.get(int(c["label"]), {})}
        writer.writerow(["" if row.get(k) is None else row[k] for k in CSV_COLUMNS])
    return buffer.getvalue()
