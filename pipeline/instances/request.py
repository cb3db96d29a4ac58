"""What a run asks of the instance pass: the instance, measurement and detection flags.

``--instance-*``, ``--measurements`` and ``--detections`` form one small frozen option group
of :class:`~segpipe.pipeline.options.RunOptions` (``RunOptions.instances``).

These settings change the instances, never the semantic labels, so they enter the run's export
key only (:meth:`~segpipe.pipeline.plan.RunPlan.export_key`): changing them on a kept work
directory reruns the instance pass and the export, not the model. The group is resolved against
the model (class names, class count) and the image (area unit) into an
:class:`~segpipe.pipeline.instances.options.InstanceOptions` by
:mod:`segpipe.pipeline.instances.stage`.

Imports nothing heavy (the command line builds its flags from this dataclass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from segpipe.models.foundation import InputError

__all__ = ["DEFAULT_MAX_DIAMETER", "DetectionsFormat", "InstanceMethod", "InstanceRequest",
           "MeasurementsFormat"]

#: The halo of the instance pass (``--instance-max-diameter``) when not given: objects up to
#: this many pixels across are exact with separation (model cards have no field for it yet).
DEFAULT_MAX_DIAMETER = 64


class InstanceMethod(StrEnum):
    """How instances are found: ``watershed`` (touching objects split) or plain ``components``."""

    WATERSHED = "watershed"
    COMPONENTS = "components"


class MeasurementsFormat(StrEnum):
    """The measurements file: ``csv`` (no dependency) or ``parquet`` (typed columns; pyarrow)."""

    CSV = "csv"
    PARQUET = "parquet"


class DetectionsFormat(StrEnum):
    """The detections file: QuPath's ``geojson``, or a ``gpkg`` layer (measurements as columns)."""

    GEOJSON = "geojson"
    GPKG = "gpkg"


_E = TypeVar("_E", bound=StrEnum)


def _opt(default: Any, help: str) -> Any:  # as segpipe.pipeline.options.opt (no cycle)
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class InstanceRequest:
    """The instance flags of a run (all off by default)."""

    instance_labels: bool = _opt(
        False, "Also write instance labels: every object of --instance-classes one uint32 id "
        "on the whole image (0 background, 1, 2, … in raster order of each object's first "
        "pixel), as <output stem>.instances<ext> (an .ome.zarr output: label image 'instances')."
    )
    instance_classes: tuple[int | str, ...] | None = _opt(
        None, "Classes whose objects are instances: label values or class names, e.g. 1,2 or "
        "nucleus (default: every class but the first)."
    )
    instance_method: InstanceMethod = _opt(  # noqa: RUF009 (a StrEnum: immutable)
        InstanceMethod.WATERSHED, "watershed: touching objects split by a watershed of the "
        "distance transform (or of the class probability with --probabilities), exact for "
        "objects smaller than --instance-max-diameter; components: plain 4-connected "
        "components, exact for objects of any size."
    )
    instance_min_distance: int = _opt(
        5, "Watershed seeds at least this many pixels apart."
    )
    instance_min_area: float = _opt(
        0.0, "Drop instances smaller than this, in the unit of the output's areas (as "
        "--vectors-min-area: m², µm², else level-0 pixels)."
    )
    instance_max_diameter: int | None = _opt(
        None, f"Halo of the instance pass in pixels: objects (clumps of touching objects) up "
        f"to this size are separated exactly across blocks (default {DEFAULT_MAX_DIAMETER})."
    )
    measurements: bool = _opt(
        False, "Also write <output stem>.measurements.csv, one row per instance (area, "
        "perimeter, centroid, bounding box, shape, mean/std of each input band); implies "
        "--instance-labels."
    )
    detections: bool = _opt(
        False, "Also write <output stem>.detections.geojson: one QuPath detection per "
        "instance with its class and measurements; implies --instance-labels."
    )
    measurements_format: MeasurementsFormat = _opt(  # noqa: RUF009 (a StrEnum: immutable)
        MeasurementsFormat.CSV, "The --measurements file: csv, or parquet "
        "(<output stem>.measurements.parquet; needs pyarrow: pip install 'segpipe[parquet]')."
    )
    detections_format: DetectionsFormat = _opt(  # noqa: RUF009 (a StrEnum: immutable)
        DetectionsFormat.GEOJSON, "The --detections file: geojson (QuPath), or gpkg "
        "(<output stem>.detections.gpkg: one layer, the measurements as columns)."
    )

    def __post_init__(self) -> None:
        for name, kind in (("instance_method", InstanceMethod),
                           ("measurements_format", MeasurementsFormat),
                           ("detections_format", DetectionsFormat)):
            object.__setattr__(self, name, _choice(name, getattr(self, name), kind))
        if self.measurements and self.measurements_format is MeasurementsFormat.PARQUET:
            _check_pyarrow()
        if self.instance_classes is not None:
            classes = self.instance_classes
            classes = (classes,) if isinstance(classes, int | str) else tuple(classes)
            if not classes:
                raise InputError("--instance-classes names no class: e.g. --instance-classes 1")
            object.__setattr__(self, "instance_classes", classes)
        _at_least("--instance-min-distance", self.instance_min_distance, 1, "5")
        _at_least("--instance-min-area", self.instance_min_area, 0, "20")
        if self.instance_max_diameter is not None:
            _at_least("--instance-max-diameter", self.instance_max_diameter, 1, "64")

    @property
    def wanted(self) -> bool:
        """Whether the run has an instance pass (any instance output asked for)."""
        return self.instance_labels or self.measurements or self.detections

    @property
    def max_diameter(self) -> int:
        """The halo in pixels: ``--instance-max-diameter`` or :data:`DEFAULT_MAX_DIAMETER`."""
        return self.instance_max_diameter or DEFAULT_MAX_DIAMETER


def _choice(name: str, value: object, kind: type[_E]) -> _E:
    try:
        return kind(str(value).strip().lower())
    except ValueError:
        option = "--" + name.replace("_", "-")
        raise InputError(f"{option} {value!r} is not one of {', '.join(kind)}") from None


def _check_pyarrow() -> None:
    """Parquet needs pyarrow, an optional dependency: say so before any block runs."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise InputError("--measurements-format parquet needs pyarrow, which is not installed: "
                         "pip install 'segpipe[parquet]' (or use --measurements-format csv)"
                         ) from None


def _at_least(option: str, value: float, low: float, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise InputError(f"{option} {value!r} is invalid: it must be at least {low} "
                         f"(e.g. {option} {example})")
