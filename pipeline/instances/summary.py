"""The instance counts in the run summary, beside the per-class object counts.

``summary.classes[i].objects`` counts the 4-connected regions of class ``i`` merged
across block seams (no separation, no minimum area); ``summary.instances`` counts the
instances of the instance labels, after the watershed separated touching objects and
``--instance-min-area`` dropped small ones, with their density per mm² (microscopy with a pixel
size) or per km² (map units) of the area that has a class, as the objects' density, and the
histogram of the instances' areas on log-spaced bins (:mod:`.histogram`, in the output's area
unit, as ``--instance-min-area``) that the HTML report draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from segpipe.pipeline.instances.histogram import area_histogram, area_unit
from segpipe.pipeline.instances.stage import read_state
from segpipe.pipeline.summary import ClassRow, InstanceRow, InstanceSummary

if TYPE_CHECKING:
    from segpipe.pipeline.plan import RunPlan

__all__ = ["NOTE", "instance_summary"]

NOTE = ("classes[].objects: 4-connected regions of each class merged across blocks (before "
        "separation, no minimum area); instances.classes[].instances: objects of the instance "
        "labels, after separation and --instance-min-area")


def instance_summary(plan: RunPlan, classes: Sequence[ClassRow]) -> InstanceSummary | None:
    """``summary.instances`` from the finished pass (None without one).

    ``classes`` is ``summary.classes`` (its areas give the density's denominator).
    """
    if not plan.options.instances.wanted:
        return None
    state = read_state(plan.workdir)
    if state is None:
        return None
    request = plan.options.instances
    return InstanceSummary(
        method=str(request.instance_method), total=state.count, clipped=state.clipped,
        max_diameter=state.key["max_diameter"], min_area=request.instance_min_area,
        area_unit=area_unit(plan.info), min_area_pixels=state.key["min_area_pixels"],
        classes=_rows(state.classes, classes), note=NOTE,
        histogram=area_histogram(plan.workdir, plan.info, state.count),
    )


def _rows(counts: Mapping[int, int], classes: Sequence[ClassRow]) -> tuple[InstanceRow, ...]:
    """One row per instance class: its instances, objects (components) and density."""
    unit = classes[0].area_unit if classes else None
    density_unit = {"m2": "per km2", "um2": "per mm2"}.get(unit or "")
    valid = sum(c.area or 0.0 for c in classes)
    rows = []
    for k, n in sorted(counts.items()):
        density = n / (valid / 1e6) if density_unit and valid > 0 else None
        known = k < len(classes)
        rows.append(InstanceRow(
            label=k, name=classes[k].name if known else str(k), instances=n,
            objects=classes[k].objects if known else None, density=density,
            density_unit=density_unit if density is not None else None))
    return tuple(rows)
