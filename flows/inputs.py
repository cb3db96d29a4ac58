"""What a batch is made of: input files from paths, folders and globs, and their output paths.

A folder is searched (not recursively) for ``--pattern`` (default: common raster extensions); a
Zarr store is an input itself. Hidden files and outputs segpipe wrote are left out. With one input
file, ``--output`` is the output file (default: beside the input, ``NAME.labels.tif``); with
several, it is a folder.

Folders, globs and outputs may be object-store URLs: ``s3://bucket/scans/`` (a trailing ``/``
or an existing prefix) with ``--pattern``, or ``s3://bucket/scans/*.tif``; their objects are
listed with fsspec.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from segpipe.models.foundation import InputError
from segpipe.pipeline import storage
from segpipe.pipeline.access import check_readable
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.outputs import is_segpipe_output

__all__ = ["expand_inputs", "list_inputs", "list_url_inputs", "output_name"]

# what a directory given as --input is searched for when no --pattern is given
RASTER_PATTERNS = (
    "*.tif", "*.tiff", "*.svs", "*.ndpi", "*.scn", "*.mrxs", "*.bif", "*.vrt", "*.jp2",
    "*.img", "*.ome.zarr", "*.zarr",
)
OUTPUT_SUFFIX = ".labels.tif"
_RASTER_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".svs", ".ndpi",
                    ".scn", ".mrxs", ".bif", ".vrt", ".jp2", ".img", ".zarr")


def output_name(src: str) -> str:
    """The default output file name for an input: its name without extension + ``.labels.tif``."""
    name = Path(src.rstrip("/")).name
    lower = name.lower()
    for suffix in _RASTER_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)] + OUTPUT_SUFFIX
    return name.split(".")[0] + OUTPUT_SUFFIX


def _is_store(path: Path) -> bool:
    """A directory that is itself a raster (Zarr / OME-Zarr), not a folder of inputs."""
    return any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


def list_inputs(path: Path, patterns: Sequence[str]) -> list[Path]:
    """Files of folder ``path`` matching ``patterns``, without hidden files and segpipe outputs."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        for p in sorted(path.glob(pattern)):
            if not p.name.startswith(".") and not is_segpipe_output(p):
                found[p] = None
    return list(found)


def list_url_inputs(url: str, patterns: Sequence[str]) -> list[str]:
    """Objects directly under the prefix ``url`` matching ``patterns`` (URLs; as list_inputs)."""
    found: dict[str, None] = {}
    for pattern in patterns:
        found.update(dict.fromkeys(_url_glob(storage.join(url, pattern))))
    return list(found)


def _url_glob(pattern: str) -> list[str]:
    fs, inner = storage.filesystem(pattern)
    hits = [fs.unstrip_protocol(p) for p in sorted(fs.glob(inner))]
    return [h for h in hits if not storage.basename(h).startswith(".")
            and not is_segpipe_output(h)]


def _is_url_folder(spec: str) -> bool:
    """A URL naming a folder of inputs: a trailing ``/``, or a prefix that is no Zarr store."""
    if spec.endswith("/"):
        return True
    if spec.startswith(("http://", "https://")) or storage.basename(spec).lower().endswith(".zarr"):
        return False
    fs, inner = storage.filesystem(spec)
    return bool(fs.isdir(inner)) and not any(
        storage.exists(storage.join(spec, m)) for m in ("zarr.json", ".zgroup", ".zarray")
    )


def _url_matches(spec: str, patterns: Sequence[str]) -> tuple[list[str], bool]:
    magic = glob.has_magic(storage.basename(spec))
    # a missing bucket, refused credentials, a presigned URL: one clean error, before listing
    check_readable(storage.parent(spec) + "/" if magic else spec, "--input")
    if magic:
        hits = _url_glob(spec)
        if not hits:
            raise InputError(f"--input {spec}: the pattern matches no object")
        return hits, False
    if _is_url_folder(spec):
        found = list_url_inputs(spec, patterns)
        if not found:
            raise InputError(
                f"--input {spec}: no object in it matches {', '.join(patterns)}; "
                "choose objects with --pattern"
            )
        return found, False
    return [spec], True


def _matches(spec: str, patterns: Sequence[str]) -> tuple[list[str], bool]:
    """The input files ``spec`` names, and whether it named exactly one file."""
    if storage.is_url(spec):
        return _url_matches(spec, patterns)
    p = Path(spec)
    if p.exists() and (p.is_file() or _is_store(p)):
        return [spec], True
    if p.is_dir():
        found = list_inputs(p, patterns)
        if not found:
            raise InputError(
                f"--input {spec}: no file in it matches {', '.join(patterns)}; "
                "choose files with --pattern"
            )
        return [str(f) for f in found], False
    if glob.has_magic(spec):
        hits = [Path(f) for f in sorted(glob.glob(spec))]
        hits = [f for f in hits if not f.name.startswith(".") and not is_segpipe_output(f)]
        if not hits:
            raise InputError(f"--input {spec}: the pattern matches no file")
        return [str(f) for f in hits], False
    raise InputError(f"--input {spec}: file not found; check the path")


def _output_folder(output: str | None, count: int) -> str | None:
    if output is None or storage.is_url(output):
        return output
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise InputError(
            f"--output {folder} is a file but {count} inputs were given; with several inputs "
            "--output is a folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def _is_folder(output: str) -> bool:
    """An existing output folder (an existing .ome.zarr output is a file to replace)."""
    if storage.is_url(output):
        return output.endswith("/")
    return Path(output).is_dir() and not _is_store(Path(output))


def expand_inputs(
    inputs: Sequence[str], output: str | None, options: RunOptions, pattern: str | None = None,
    *, output_dir: bool = False,
) -> list[RunOptions]:
    """One :class:`RunOptions` per input file from paths, folders and globs.

    With one input file, ``output`` is the output file (default: beside the input) unless it is
    an existing folder or ``output_dir``; with several inputs (or a folder or glob) it is a
    folder (created when missing; default: beside each input). ``options.input`` and
    ``options.output`` are replaced per input.
    """
    patterns = (pattern,) if pattern else RASTER_PATTERNS
    files: dict[str, None] = {}
    single = len(inputs) == 1
    for spec in inputs:
        found, one = _matches(spec, patterns)
        files.update(dict.fromkeys(found))
        single = single and one
    paths = list(files)
    if output_dir or (output and _is_folder(output)):
        single = False  # an existing folder (an existing .ome.zarr output is a file to replace)
    if single and len(paths) == 1:
        out = output or storage.with_name(paths[0].rstrip("/"), output_name(paths[0]))
        return [options.for_file(paths[0], out)]
    folder = _output_folder(output, len(paths))
    jobs: list[RunOptions] = []
    seen: dict[str, str] = {}
    for src in paths:
        out = storage.join(folder if folder is not None else storage.parent(src.rstrip("/")),
                           output_name(src))
        if out in seen:
            raise InputError(
                f"inputs {seen[out]} and {src} would both write {out}; rename one or run them "
                "separately"
            )
        seen[out] = src
        jobs.append(options.for_file(src, out))
    return jobs
