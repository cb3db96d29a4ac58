"""What a batch is made of: input files from paths, folders and globs, and their output paths.

A folder is searched (not recursively) for ``--pattern`` (default: common raster extensions); a
Zarr store is an input itself. Hidden files and the files segpipe writes are left out
(:func:`segpipe_files`), so a folder that receives its own outputs is never segmented twice.
With one input file, ``--output`` is the output file (default: beside the input,
``NAME.labels.tif``); with several, it is a folder.

Folders, globs and outputs may be object-store URLs: ``s3://bucket/scans/`` (a trailing ``/``
or an existing prefix) with ``--pattern``, or ``s3://bucket/scans/*.tif``; their objects are
listed with fsspec.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from segpipe.models.foundation import InputError
from segpipe.pipeline import storage
from segpipe.pipeline.access import check_readable
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.outputs import is_segpipe_output, sidecar_path

__all__ = [
    "expand_inputs", "list_inputs", "list_url_inputs", "output_name", "output_stem",
    "segpipe_files",
]

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


def output_stem(path: str | os.PathLike[str]) -> str:
    """An output's name without its format's extension: the prefix all its files share.

    ``a.labels.tif`` → ``a.labels``, whose companions are ``a.labels.probabilities.tif``,
    ``a.labels.quicklook.png``, ``a.labels.report.html``, ``a.labels.areas.csv`` and so on.
    """
    name = Path(os.fspath(path).rstrip("/")).name
    lower = name.lower()
    for suffix in _RASTER_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def segpipe_files(folder: Path, names: Iterable[str]) -> set[str]:
    """Which of ``names`` (entries of ``folder``) are files segpipe writes there.

    Those are outputs with a sidecar (``.NAME.segpipe.json``, written last), every file that
    shares an output's stem (its probabilities, quicklook, HTML report, areas CSV, vectors:
    ``STEM.*``), and the default outputs of the folder's other files (``a.tif`` →
    ``a.labels.tif`` and ``a.labels.*``), which covers an output whose run stopped before its
    sidecar. Hidden entries (sidecars, work directories, partial outputs, the lock) are left
    out by the callers.
    """
    sidecar = sidecar_path("x").name[2:]  # ".segpipe.json"
    entries = [e.name for e in os.scandir(folder)] if folder.is_dir() else []
    stems = {output_stem(n[1:-len(sidecar)]) for n in entries if n.endswith(sidecar)}
    stems |= {output_stem(output_name(n)) for n in entries if not n.startswith(".")}
    ours = set()
    for name in names:
        parts = name.split(".")
        if any(".".join(parts[:k]) in stems for k in range(1, len(parts) + 1)):
            ours.add(name)
    return ours


def _without_ours(paths: Iterable[Path]) -> list[Path]:
    """``paths`` without hidden files and the files segpipe wrote, in the given order."""
    shown = [p for p in paths if not p.name.startswith(".")]
    by_folder: dict[Path, set[str]] = {}
    for p in shown:
        by_folder.setdefault(p.parent, set()).add(p.name)
    ours = {f / n for f, names in by_folder.items() for n in segpipe_files(f, names)}
    return [p for p in shown if p not in ours]


def _is_store(path: Path) -> bool:
    """A directory that is itself a raster (Zarr / OME-Zarr), not a folder of inputs."""
    return any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


def list_inputs(path: Path, patterns: Sequence[str]) -> list[Path]:
    """Files of folder ``path`` matching ``patterns``, without hidden files and segpipe's own."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        found.update(dict.fromkeys(sorted(path.glob(pattern))))
    return _without_ours(found)


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
        hits = _without_ours(Path(f) for f in sorted(glob.glob(spec)))
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
    if options.export.vectors and len(paths) > 1:
        raise InputError(
            f"--vectors {options.export.vectors} names one file but {len(paths)} inputs were "
            "given; run them one at a time, each with its own --vectors"
        )
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
