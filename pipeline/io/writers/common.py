"""What the format writers share: output names, probability channels and values."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segpipe.models.foundation import InputError
from segpipe.pipeline import storage
from segpipe.pipeline.io.pyramid import open_stored
from segpipe.pipeline.options import ProbabilityDtype

if TYPE_CHECKING:
    from segpipe.pipeline.io.writers import ExportJob

__all__ = [
    "PYRAMID_METHOD",
    "as_uint8",
    "class_channel_names",
    "companion_path",
    "companion_target",
    "instances_target",
    "open_probabilities",
    "probabilities_path",
    "probabilities_target",
    "probability_block",
    "probability_names",
    "write_labels_and_probabilities",
]

# how every output pyramid is made (recorded in the OME metadata)
PYRAMID_METHOD = "nearest: level i = level0[::2**i, ::2**i]"


def companion_path(out_path: str | os.PathLike[str], what: str, ext: str | None = None) -> Path:
    """A file beside the label output: ``mask.tif`` → ``mask.<what>.tif`` (or ``.<ext>``).

    ``mask.ome.tif`` → ``mask.<what>.ome.tif``, ``mask.ome.zarr`` → ``mask.<what>.ome.zarr``.
    """
    out = Path(out_path)
    return out.with_name(_companion_name(out.name, what, ext))


def _companion_name(name: str, what: str, ext: str | None) -> str:
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return f"{name[: -len(suffix)]}.{what}{ext or name[-len(suffix):]}"
    return f"{name}.{what}{ext or ''}"


def companion_target(out: str, what: str, ext: str | None = None) -> str:
    """:func:`companion_path` for a local path or an object-store URL."""
    if not storage.is_url(out):
        return str(companion_path(out, what, ext))
    return storage.with_name(out, _companion_name(storage.basename(out), what, ext))


def instances_target(out: str) -> str:
    """Where the instance ids go: ``mask.tif`` → ``mask.instances.tif`` and so on."""
    return companion_target(out, "instances")


def probabilities_path(out_path: str | os.PathLike[str]) -> Path:
    """Where the probabilities go: ``mask.tif`` → ``mask.probabilities.tif`` and so on."""
    return companion_path(out_path, "probabilities")


def probabilities_target(out: str) -> str:
    """:func:`probabilities_path` for a local path or an object-store URL."""
    return companion_target(out, "probabilities")


def probability_block(block: np.ndarray, *, as_uint8: bool, float_dtype: str) -> np.ndarray:
    """A block of probabilities in the output type: float (``float_dtype``) or scaled uint8."""
    if as_uint8:
        return np.rint(np.clip(block.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return block.astype(float_dtype, copy=False)


def class_channel_names(count: int, class_names: Sequence[str] | None) -> list[str]:
    """One name per probability channel: the class names, or ``class_<i>``."""
    if class_names is not None and len(class_names) == count:
        return [str(n) for n in class_names]
    return [f"class_{i}" for i in range(count)]


def as_uint8(job: ExportJob) -> bool:
    """Whether the probabilities are written as ``round(p * 255)`` uint8."""
    return job.options.probabilities_dtype is ProbabilityDtype.UINT8


def open_probabilities(job: ExportJob) -> Any:
    """The job's (K, H, W) probability Zarr, checked against the image."""
    if job.probabilities_path is None:
        raise InputError(f"{job.out}: no probabilities to write (probabilities_path is None)")
    return open_stored(job.probabilities_path, job.info, "probabilities", 3)


def probability_names(job: ExportJob, count: int) -> list[str]:
    """Channel names of ``count`` probability channels: ``probability_names`` or the classes."""
    names = job.probability_names if job.probability_names is not None else job.class_names
    return class_channel_names(count, names)


def write_labels_and_probabilities(
    job: ExportJob,
    write_labels: Callable[[ExportJob], Path],
    write_probabilities: Callable[[ExportJob], Path],
) -> list[str]:
    """A format's ``write(job)``: the labels, then the probabilities when the job has them."""
    write_labels(job)
    written = [job.out]
    if job.probabilities_path is not None:
        write_probabilities(job)
        written.append(probabilities_target(job.out))
    return written
