"""The run summary as typed records: what stages, the CLI, the flow and ``segpipe.run`` exchange.

:func:`~segpipe.pipeline.report.summarize` builds a :class:`RunSummary`; the report stage writes
its JSON form (:meth:`RunSummary.to_dict`) as ``summary.json`` in the work directory and in the
sidecar beside the output, the schema the README documents; :meth:`RunSummary.from_dict` reads
it back (``from_dict(to_dict())`` is the same record). An output that was already up to date is
a :class:`SkippedRun` instead: it has no image, model or classes to report, so it is a record of
its own rather than a summary of empty fields; both have ``input``, ``output`` and ``skipped``
(None for a run that ran).

Both records are also read-only mappings over their JSON form (``summary["classes"]``,
``summary.get("skipped")``, ``{**summary}``): ``segpipe.run`` and ``run_one`` returned that dict
before these records existed, and scripts that index it keep working. Code inside segpipe reads
the attributes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Self

from segpipe.pipeline.normalize import Normalizer

if TYPE_CHECKING:
    from segpipe.pipeline.instances.histogram import AreaHistogram

__all__ = [
    "AreaSummary",
    "ClassRow",
    "ImageSummary",
    "InstanceRow",
    "InstanceSummary",
    "ModelSummary",
    "RunResult",
    "RunSummary",
    "SkippedRun",
]


def _json(value: Any) -> Any:
    """A field's JSON form: tuples as lists (``json.loads`` gives lists back)."""
    return list(value) if isinstance(value, tuple) else value


def _tuple(value: Any) -> Any:
    """A JSON value as the field holds it: lists as tuples (frozen records hold no lists)."""
    return tuple(value) if isinstance(value, list) else value


class _Flat:
    """A record whose JSON form is one object, keyed by its field names, in field order."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """The record of a JSON form (:meth:`to_dict`'s inverse)."""
        return cls(**{f.name: _tuple(d[f.name]) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class ModelSummary(_Flat):
    """``summary["model"]``: the card's name, the weights' sha256 and the model as given."""

    name: str
    sha256: str
    path: str | None


@dataclass(frozen=True)
class ImageSummary(_Flat):
    """``summary["image"]``: the segmented level's size and the bands read (1-based).

    ``resampling``: how a STAC item's coarser bands were put on the grid (absent from the JSON
    for any other input, which is read as it is).
    """

    height: int
    width: int
    bands: tuple[int, ...]
    level: int
    resampling: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (without ``resampling`` where there was none)."""
        d = super().to_dict()
        if d["resampling"] is None:
            del d["resampling"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """The record of a JSON form (:meth:`to_dict`'s inverse)."""
        return super().from_dict({"resampling": None, **d})


@dataclass(frozen=True)
class AreaSummary(_Flat):
    """``summary["areas"]``: how pixel counts became areas (``note`` says it in words)."""

    kind: str
    unit: str | None
    note: str
    pixel_size: tuple[float, ...] | None
    pixel_unit: str | None


@dataclass(frozen=True)
class ClassRow(_Flat):
    """One entry of ``summary["classes"]``: a class's pixels, area, objects and density.

    ``objects`` are 4-connected regions merged across block seams; the density is objects per
    km² (maps) or per mm² (microscopy) of the area that has a class.
    """

    label: int
    name: str
    color: tuple[int, ...]
    pixels: int
    area: float | None
    area_unit: str | None
    area_ha: float | None
    area_mm2: float | None
    objects: int | None
    density: float | None
    density_unit: str | None


@dataclass(frozen=True)
class InstanceRow(_Flat):
    """One entry of ``summary["instances"]["classes"]``: instances after separation."""

    label: int
    name: str
    instances: int
    objects: int | None
    density: float | None
    density_unit: str | None


@dataclass(frozen=True)
class InstanceSummary:
    """``summary["instances"]``: the instance pass's counts, settings and area histogram."""

    method: str
    total: int
    clipped: int
    max_diameter: int
    min_area: float
    area_unit: str
    min_area_pixels: int
    classes: tuple[InstanceRow, ...]
    note: str
    histogram: AreaHistogram | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["classes"] = [c.to_dict() for c in self.classes]
        d["histogram"] = None if self.histogram is None else self.histogram.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InstanceSummary:
        """The record of a JSON form (:meth:`to_dict`'s inverse)."""
        from segpipe.pipeline.instances.histogram import AreaHistogram

        h = d["histogram"]
        histogram = None if h is None else AreaHistogram(
            h["unit"], tuple(h["edges"]), tuple(h["counts"]))
        values = {f.name: d[f.name] for f in fields(cls)}
        return cls(**{**values, "classes": tuple(InstanceRow.from_dict(c) for c in d["classes"]),
                      "histogram": histogram})


class _JsonView(Mapping[str, Any]):
    """Read-only mapping access to a record's JSON form (what these records replaced)."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def _normalizer_dict(n: Normalizer) -> dict[str, Any]:
    """The normalizer as its JSON text reads back (the method's name, lists)."""
    return {k: str(v) if k == "method" else _json(v) for k, v in n.to_dict().items()}


@dataclass(frozen=True, eq=True)
class RunSummary(_JsonView):
    """What a run did: its input, model, tiling, blocks, classes, timings and warnings.

    ``stage_seconds`` maps stage names to seconds; ``failed_blocks`` block ids (``row_col``) to
    their errors; ``workers`` a worker's name to the blocks it computed in this attempt.
    """

    segpipe_version: str
    input: str
    output: str
    workdir: str
    model: ModelSummary
    image: ImageSummary
    tile: int
    halo: int
    extra: int
    margin: int
    blend: str
    precision: str
    normalizer: Normalizer | None
    tiles: int
    blocks: int
    blocks_computed: int
    blocks_reused: int
    blocks_skipped: int
    failed_blocks: Mapping[str, str]
    workers: Mapping[str, int]
    nodata_pixels: int
    areas: AreaSummary
    classes: tuple[ClassRow, ...]
    instances: InstanceSummary | None
    stage_seconds: Mapping[str, float]
    megapixels: float
    megapixels_per_second: float | None
    warnings: tuple[str, ...]

    @property
    def skipped(self) -> None:
        """Why the run did nothing: never, for a run that ran (see :class:`SkippedRun`)."""
        return None

    def with_seconds(self, **seconds: float) -> RunSummary:
        """The summary with more stage timings (``report=…``, ``visuals=…``) added."""
        return replace(self, stage_seconds={**self.stage_seconds, **seconds})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``summary.json`` and the sidecar's ``summary`` (README's schema)."""
        d: dict[str, Any] = {f.name: _json(getattr(self, f.name)) for f in fields(self)}
        d.update(
            model=self.model.to_dict(), image=self.image.to_dict(), areas=self.areas.to_dict(),
            normalizer=None if self.normalizer is None else _normalizer_dict(self.normalizer),
            failed_blocks=dict(self.failed_blocks), workers=dict(self.workers),
            classes=[c.to_dict() for c in self.classes],
            instances=None if self.instances is None else self.instances.to_dict(),
            stage_seconds={str(k): v for k, v in self.stage_seconds.items()},
        )
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSummary:
        """The record of a JSON form (:meth:`to_dict`'s inverse)."""
        values = {f.name: _tuple(d[f.name]) for f in fields(cls)}
        instances = d["instances"]
        return cls(**{
            **values,
            "model": ModelSummary.from_dict(d["model"]),
            "image": ImageSummary.from_dict(d["image"]),
            "areas": AreaSummary.from_dict(d["areas"]),
            "normalizer": None if d["normalizer"] is None
            else Normalizer.from_dict(dict(d["normalizer"])),
            "failed_blocks": dict(d["failed_blocks"]), "workers": dict(d["workers"]),
            "classes": tuple(ClassRow.from_dict(c) for c in d["classes"]),
            "instances": None if instances is None else InstanceSummary.from_dict(instances),
            "stage_seconds": dict(d["stage_seconds"]),
        })


@dataclass(frozen=True, eq=True)
class SkippedRun(_JsonView):
    """A run that did nothing because its output was up to date (made with the same keys)."""

    input: str
    output: str
    skipped: str = "up to date"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"input": …, "output": …, "skipped": "up to date"}``."""
        return {"input": self.input, "output": self.output, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SkippedRun:
        """The record of a JSON form (:meth:`to_dict`'s inverse)."""
        return cls(d["input"], d["output"], d["skipped"])


#: What one input's run returns.
RunResult = RunSummary | SkippedRun
