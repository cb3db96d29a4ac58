"""Enough free disk for the work directory, checked at planning, before anything is ingested.

A run's work directory holds, at most: the copy of the input level (``image.zarr``: height ×
width × bands × the pixel size, plus a byte a pixel for the copy of a mask band, ``valid.zarr``;
none when the input is itself a Zarr array the blocks read directly), the label array
(``labels.zarr``) and the probabilities when asked for (``probabilities.zarr``, float16 per
class). The arrays are stored uncompressed (they cost what a memory copy costs) and chunks
equal to the fill value are not stored, so this is an upper bound; nothing is staged there for
the export (GDAL's COG copy reads the label store). :func:`check_free_space` compares it with
the free space of the work directory's filesystem (``shutil.disk_usage``), and a run that
cannot have that much is refused with both numbers before the work directory is created. A
work directory that already exists (``--resume``, a kept one) is not checked: its arrays
already hold their space. A disk that fills up during the run anyway is reported when it
happens.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segpipe.models.foundation import InputError
from segpipe.pipeline.labels import label_dtype

if TYPE_CHECKING:
    from segpipe.pipeline.plan import RunPlan

__all__ = ["WorkBytes", "check_free_space", "human_bytes", "work_bytes"]

_PROBABILITY_BYTES = 2  # float16 in probabilities.zarr


@dataclass(frozen=True)
class WorkBytes:
    """Uncompressed bytes of what a work directory holds, by part."""

    image: int
    labels: int
    probabilities: int

    @property
    def total(self) -> int:
        """All parts together."""
        return self.image + self.labels + self.probabilities

    def parts(self) -> str:
        """The non-zero parts in words, e.g. ``image copy 1.2 GiB + labels 400.0 MiB``."""
        named = (("image copy", self.image), ("labels", self.labels),
                 ("probabilities", self.probabilities))
        return " + ".join(f"{name} {human_bytes(n)}" for name, n in named if n)


def work_bytes(plan: RunPlan) -> WorkBytes:
    """At most how many bytes the plan's work directory holds (uncompressed)."""
    info = plan.info
    pixels = info.height * info.width
    image = 0 if plan.source_array else pixels * info.bands * np.dtype(info.dtype).itemsize
    image += pixels if plan.valid_path else 0  # the mask band's copy, one byte a pixel
    labels = pixels * label_dtype(plan.num_classes).itemsize
    classes = plan.geometry.out_channels if plan.options.inference.probabilities else 0
    return WorkBytes(image, labels, pixels * classes * _PROBABILITY_BYTES)


def check_free_space(plan: RunPlan) -> None:
    """Refuse a run whose new work directory would not fit on its disk (numbers in the message)."""
    workdir = Path(plan.workdir.path)
    if workdir.exists():
        return
    folder = next(p for p in workdir.parents if p.exists())
    free = shutil.disk_usage(folder).free
    need = work_bytes(plan)
    if need.total > free:
        raise InputError(
            f"not enough free disk for the work directory {workdir}: the run needs up to "
            f"{human_bytes(need.total)} there ({need.parts()}, uncompressed) but {folder} has "
            f"{human_bytes(free)} free; free some space, or put the work directory on a larger "
            "disk with --workdir DIR"
        )


def human_bytes(n: float) -> str:
    """``n`` bytes as bytes, KiB, MiB, GiB or TiB with one decimal."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")
