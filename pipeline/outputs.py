"""Where a run writes, and whether it may.

Output checks, the work directory's default place, and the sidecar that says which run made an
output.

Beside every output ``mask.tif`` segpipe keeps a small hidden ``.mask.tif.segpipe.json`` with the
label key and export key of the run that wrote it and its summary. A batch skips an input whose
output exists with the same keys (up to date), and a folder given as ``--input`` never picks up
outputs segpipe wrote.

Outputs, sidecars and work directories may be object-store URLs (see
:mod:`segpipe.pipeline.storage`); whether the bucket can be reached and written is checked by
:mod:`segpipe.pipeline.access`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segpipe.models.foundation import InputError, OutputExistsError, ResumeError
from segpipe.models.location import is_url
from segpipe.pipeline import storage
from segpipe.pipeline.keys import LabelKey, jsonable
from segpipe.pipeline.workdir import WorkDir

if TYPE_CHECKING:
    from segpipe.pipeline.io.base import RasterInfo
    from segpipe.pipeline.options import RunOptions

__all__ = [
    "check_output_carries_georeferencing",
    "check_output_exists",
    "check_output_path",
    "check_vectors_path",
    "cut_off_output",
    "default_workdir",
    "is_segpipe_output",
    "output_exists",
    "output_is_current",
    "sidecar",
    "sidecar_path",
    "workdir_of",
    "write_sidecar",
]


def default_workdir(output: str) -> str:
    """The work directory beside the output: ``.<output name>.segpipe``."""
    if storage.is_url(output):
        return storage.with_name(output, f".{storage.basename(output)}.segpipe")
    out = Path(output).absolute()
    return str(out.with_name(f".{out.name}.segpipe"))


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """The small JSON file beside an output: the keys and summary of the run that made it."""
    out = Path(output)
    return out.with_name(f".{out.name}.segpipe.json")


def sidecar(output: str) -> str:
    """:func:`sidecar_path` for a local path or a URL."""
    if storage.is_url(output):
        return storage.with_name(output, f".{storage.basename(output)}.segpipe.json")
    return str(sidecar_path(output))


def is_segpipe_output(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an output segpipe wrote (it has a sidecar)."""
    if storage.is_url(path):
        return storage.exists(sidecar(os.fspath(path)))
    return sidecar_path(path).is_file()


def output_exists(output: str) -> bool:
    """Whether an output is at ``output`` (for an OME-Zarr URL: published, root metadata)."""
    if not storage.is_url(output):
        return Path(output).exists()
    if output.rstrip("/").lower().endswith(".zarr"):
        return any(storage.exists(storage.join(output, m)) for m in ("zarr.json", ".zattrs"))
    return storage.exists(output)


def check_output_path(options: RunOptions) -> None:
    """The output's extension, folder and name, checked before anything is read or written."""
    fmt = options.output_format  # raises for an unknown extension
    if storage.is_url(options.output):
        storage.check_url(options.output, "--output")
        if options.output.rstrip("/") == options.input.rstrip("/"):
            raise InputError(f"--output {options.output} is the input itself; choose another")
        return
    out = Path(options.output)
    if not out.parent.is_dir():
        raise InputError(
            f"--output {out}: folder {out.parent} does not exist; create it or choose another"
        )
    if not os.access(out.parent, os.W_OK):
        raise InputError(
            f"--output {out}: folder {out.parent} is not writable (read-only or no permission); "
            "choose a folder you can write to"
        )
    if not is_url(options.input) and out.absolute() == Path(options.input).absolute():
        raise InputError(f"--output {out} is the input itself; choose another output path")
    if out.is_dir() and fmt != "ome-zarr":
        raise InputError(f"--output {out} is a directory; give a file path")
    if options.export.vectors:
        check_vectors_path(options)


def check_output_carries_georeferencing(options: RunOptions, info: RasterInfo) -> None:
    """Refuse an OME output for an input georeferenced by GCPs or RPCs: OME cannot carry them.

    A GeoTIFF output carries both (:mod:`segpipe.pipeline.io.georef`); the message names it.
    """
    from segpipe.pipeline.options import OutputFormat

    fmt = options.output_format
    if fmt is OutputFormat.GEOTIFF or not (info.gcps or info.rpcs is not None):
        return
    kinds = [f"{len(info.gcps)} ground control points (GCPs)"] if info.gcps else []
    kinds += ["RPCs"] if info.rpcs is not None else []
    name = "OME-TIFF" if fmt is OutputFormat.OME_TIFF else "OME-Zarr"
    raise InputError(
        f"--output {options.output}: {storage.basename(options.input)} is georeferenced by "
        f"{' and '.join(kinds)}, which {name} cannot carry (the labels would lose their place "
        f"on the ground); write a GeoTIFF instead: --output {geotiff_name(options.output)}"
    )


def geotiff_name(output: str) -> str:
    """``output`` with its OME extension (``.ome.tif``, ``.ome.zarr``, …) replaced by ``.tif``."""
    text = output.rstrip("/")
    lower = text.lower()
    cut = lower.rfind(".ome.")
    return (text[:cut] if cut >= 0 else text) + ".tif"


def check_vectors_path(options: RunOptions) -> None:
    """``--vectors``: a file in an existing, writable folder, neither the input nor the output.

    A URL is checked with the run's other URLs (:func:`segpipe.pipeline.access.check_run_urls`).
    """
    if storage.is_url(options.export.vectors or ""):
        if options.export.vectors in (options.output, options.input):
            raise InputError(f"--vectors {options.export.vectors} is the output or the input; "
                             "choose another")
        return
    vectors = Path(options.export.vectors or "")
    if not vectors.parent.is_dir():
        raise InputError(
            f"--vectors {vectors}: folder {vectors.parent} does not exist; create it or choose "
            "another"
        )
    if not os.access(vectors.parent, os.W_OK):
        raise InputError(f"--vectors {vectors}: folder {vectors.parent} is not writable")
    for what, other in (("--output", options.output), ("--input", options.input)):
        if not is_url(other) and vectors.absolute() == Path(other).absolute():
            raise InputError(f"--vectors {vectors} is the same file as {what}; choose another")
    if vectors.is_dir():
        raise InputError(f"--vectors {vectors} is a directory; give a .gpkg or .geojson file")


def check_output_exists(options: RunOptions) -> None:
    """Refuse an existing output (or ``--vectors`` file) without ``--overwrite``."""
    if output_exists(options.output) and not options.overwrite:
        raise OutputExistsError(
            f"--output {options.output} exists; pass --overwrite to replace it"
        )
    vectors = options.export.vectors
    if vectors and storage.exists(vectors) and not options.overwrite:
        raise OutputExistsError(f"--vectors {vectors} exists; pass --overwrite to replace it")


def write_sidecar(
    output: str, key: LabelKey, export: Mapping[str, Any], summary: Mapping[str, Any]
) -> None:
    """Record which run made ``output`` (atomically)."""
    data = {"key": key.to_dict(), "export": jsonable(dict(export)), "summary": summary}
    storage.write_text(sidecar(output), json.dumps(data, indent=2, default=str))


def _companions(output: str, export: Mapping[str, Any]) -> list[str]:
    """The files a run with ``export`` writes beside the output: vectors, instance outputs."""
    from segpipe.pipeline.instances.tables import detections_target, measurements_target
    from segpipe.pipeline.io.writers.common import instances_target

    paths = [str(export["vectors"])] if export.get("vectors") else []
    asked = export.get("instances") or {}
    if asked and not output.lower().endswith(".zarr"):  # OME-Zarr: inside the output
        paths.append(instances_target(output))
    if asked.get("measurements"):
        paths.append(measurements_target(output, asked.get("measurements_format", "csv")))
    if asked.get("detections"):
        paths.append(detections_target(output, asked.get("detections_format", "geojson")))
    return paths


def output_is_current(output: str, key: LabelKey, export: Mapping[str, Any]) -> bool:
    """Whether ``output`` and the files ``export`` asks for beside it exist, made with these keys.

    A deleted companion file (vectors, instances, measurements, detections) makes it out of date.
    """
    side = sidecar(output)
    if not output_exists(output):
        return False
    if not all(storage.exists(path) for path in _companions(output, export)):
        return False
    try:
        data = json.loads(storage.read_text(side))
        stored = LabelKey.from_dict(data["key"])
        return not key.differences(stored) and jsonable(dict(export)) == data["export"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cut_off_output(options: RunOptions) -> bool:
    """Whether the output is its work directory's own, the export or report cut off midway.

    The export removes the output's sidecar, publishes the output, then its companions
    (instances, tables, vectors); the report writes the sidecar last, then drops the work
    directory. A run killed in between leaves an output without a sidecar beside a work
    directory whose finished segmentation names that output: what stands at the output path is
    that run's, and ``--resume`` writes it again (the work directory's label key is checked as
    for any resume). Any other existing output (a finished run's, with its sidecar, or a file
    segpipe did not write) still needs ``--overwrite``.
    """
    output = options.output
    if not output_exists(output) or is_segpipe_output(output):
        return False
    try:
        stored = WorkDir(workdir_of(options)).load()
    except ResumeError:  # an unreadable manifest: the work directory is refused later
        return False
    return (stored is not None and stored.segmented
            and stored.output == storage.absolute(output))


def workdir_of(options: RunOptions) -> str:
    """The run's work directory: ``--workdir`` or beside the output, absolute (or a URL)."""
    path = options.workdir or default_workdir(options.output)
    return path if is_url(path) else str(Path(path).absolute())
