"""Output writers: one module per format, each writing both the labels and the probabilities.

:func:`write_outputs` is the export: from the label array (and the probability and image arrays)
in the work directory to the files the output extension asks for, each published atomically:

* the labels at ``job.out``: GeoTIFF/COG (:mod:`.geotiff`), OME-TIFF (:mod:`.ometiff`) or
  OME-Zarr (:mod:`.omezarr`), chosen by :meth:`OutputFormat.from_path`;
* the probabilities, when ``job.probabilities_path`` is set, beside it in the same format
  (``mask.tif`` → ``mask.probabilities.tif``, see :func:`.common.probabilities_path`);
* the instance ids, when ``job.instances_path`` is set (``--instance-labels``), beside it in
  the same format (``mask.tif`` → ``mask.instances.tif``; a GeoTIFF/OME-TIFF module's
  ``write_instances(job)``), or for OME-Zarr as a second label image ``labels/instances``.

The quicklook PNG and the HTML report are written later, by the report stage, once the summary
(class areas) exists: see :mod:`segpipe.pipeline.visuals`.

Every format module exposes ``write(job) -> list[str]`` (labels, then probabilities) and its
``write_labels(job)`` / ``write_probabilities(job)``. Pyramid levels are derived from the stored
level 0 (nearest or mode, never by running the model again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING

from segpipe.models.foundation import InputError
from segpipe.pipeline.io.base import RasterInfo
from segpipe.pipeline.options import ExportOptions, OutputFormat

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ExportJob", "format_writer", "write_outputs"]

_MODULES = {
    OutputFormat.GEOTIFF: "geotiff",
    OutputFormat.OME_TIFF: "ometiff",
    OutputFormat.OME_ZARR: "omezarr",
}


@dataclass(frozen=True)
class ExportJob:
    """Everything the writers need: the work arrays, the output, the metadata and options."""

    labels_path: str  # label Zarr array (H, W) in the work directory
    out: str  # output path; its extension picks the format
    info: RasterInfo  # input metadata (CRS/transform or physical pixel sizes)
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    nodata: int  # label value of nodata (255 or 65535)
    tags: Mapping[str, str]  # provenance tags
    options: ExportOptions = field(default_factory=ExportOptions)
    probabilities_path: str | None = None  # (K, H, W) float16 Zarr, or None
    probability_names: tuple[str, ...] | None = None
    image_path: str | None = None  # the ingested image Zarr (OME-Zarr output writes it too)
    instances_path: str | None = None  # (H, W) uint32 instance ids (--instance-labels)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(
            self, "colors", tuple((int(r), int(g), int(b)) for r, g, b in self.colors)
        )
        if self.probability_names is not None:
            object.__setattr__(self, "probability_names", tuple(self.probability_names))
        if len(self.colors) != len(self.class_names):
            raise InputError(
                f"{len(self.class_names)} class names but {len(self.colors)} colors: give one "
                "(r, g, b) colour per class"
            )

    @property
    def format(self) -> OutputFormat:
        """The output format ``out``'s extension asks for."""
        return OutputFormat.from_path(self.out)


def format_writer(fmt: OutputFormat) -> Callable[[ExportJob], list[str]]:
    """The ``write(job)`` of the module writing ``fmt`` (imported on first use)."""
    module = import_module(f"{__name__}.{_MODULES[fmt]}")
    writer: Callable[[ExportJob], list[str]] = module.write
    return writer


def write_outputs(job: ExportJob) -> list[str]:
    """Write the labels and the probabilities (when asked for); their paths.

    Runs under :func:`segpipe.pipeline.io.gdal.streaming_env` (a bounded GDAL block cache).
    Each output is written beside its final name and moved into place only when complete.
    """
    from segpipe.pipeline.io.gdal import streaming_env

    write = format_writer(job.format)
    with streaming_env():
        written = write(job)  # an OME-Zarr output holds the instances in its labels/ group
        if job.instances_path is not None and job.format is not OutputFormat.OME_ZARR:
            from segpipe.pipeline.io.writers.common import instances_target

            import_module(f"{__name__}.{_MODULES[job.format]}").write_instances(job)
            written.append(instances_target(job.out))
        return written
