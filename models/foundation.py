"""What every layer of segpipe may import.

Errors, atomic (and durable) outputs, the file hash, the version, the forward-pass precision and
device resolution.

This module imports no other segpipe module and no heavy library at import time (torch is
imported inside :func:`resolve_device` only), so the command line can import it and still answer
``segpipe --help`` in a fraction of a second.

Errors: every error segpipe raises on purpose derives from :class:`SegpipeError` and carries the
exit code the command line returns for it (2: bad usage or bad input; 1: the run itself failed,
e.g. blocks that failed after their retries). Messages name the option or file, the value, the
constraint and the fix. Subclasses also derive from the matching built-in exception so callers
may catch those.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "BatchError",
    "BatchInputError",
    "BlocksFailedError",
    "DiskFullError",
    "FolderLockedError",
    "InputError",
    "ModelError",
    "OutputExistsError",
    "Precision",
    "RasterError",
    "ResumeError",
    "SegpipeError",
    "__version__",
    "atomic_output",
    "file_sha256",
    "fsync_path",
    "fsync_tree",
    "resolve_device",
    "write_text_atomic",
]

try:
    __version__ = version("segpipe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


# ---------------------------------------------------------------------------------- errors


class SegpipeError(Exception):
    """Base class of every error segpipe raises on purpose; ``exit_code`` is the CLI's."""

    exit_code = 2


class InputError(SegpipeError, ValueError):
    """A bad argument or option value (tile size, bands, device, output path, ...)."""


class RasterError(SegpipeError, OSError):
    """An input raster that is missing, unreadable or not a raster."""


class ModelError(SegpipeError, ValueError):
    """A model file, name or card that cannot be used."""


class OutputExistsError(SegpipeError, FileExistsError):
    """An output that already exists and ``--overwrite`` was not given."""


class ResumeError(SegpipeError, ValueError):
    """A work directory whose manifest does not match the run being started or resumed."""


class BlocksFailedError(SegpipeError, RuntimeError):
    """Blocks that still failed after their retries (written as nodata; no output written)."""

    exit_code = 1


class BatchError(SegpipeError, RuntimeError):
    """Some inputs of a batch failed (the others were processed)."""

    exit_code = 1


class BatchInputError(SegpipeError, ValueError):
    """Some inputs of a batch were refused for bad input or usage; the others ran."""


class DiskFullError(SegpipeError, OSError):
    """The disk under the work directory or the output filled up during the run.

    The work directory stays resumable: free space, then rerun with ``--resume``.
    """

    exit_code = 1


class FolderLockedError(SegpipeError, RuntimeError):
    """Another segpipe run holds the lock of the output folder (named in the message)."""


# ----------------------------------------------------------------------------- atomic output


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(produced: Path, final: Path) -> None:
    """Move ``produced`` to ``final``; an existing directory there is swapped out, then removed."""
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f".{final.name}.old")
        _remove(old)
        os.replace(final, old)
        os.replace(produced, final)
        _remove(old)
    else:
        os.replace(produced, final)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a path with the final name inside a hidden folder beside ``path``; publish on success.

    The one way segpipe writes anything that must never be seen half-written: outputs (files and
    directory stores such as OME-Zarr), model files, the manifest and block markers. Whatever
    the body creates in the yielded path's folder (a file, a directory, companions such as ONNX
    external weights) is moved beside ``path`` with ``os.replace`` (atomic within a filesystem)
    when the body returns. On error nothing is published and ``path`` is left as it was.
    Callers decide beforehand whether an existing ``path`` may be replaced. Durable on power
    loss: what the body wrote is fsynced before the rename, the folder after it, so a crash
    leaves the old ``path`` or the whole new one, never a name pointing at lost data.
    """
    final = Path(path)
    if not final.parent.is_dir():
        raise InputError(f"{final}: folder {final.parent} does not exist; create it first")
    folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield folder / final.name
        produced = list(folder.iterdir())
        for item in produced:  # on the disk before its name is (a power loss keeps either)
            fsync_tree(item)
        for item in produced:
            _replace(item, final.parent / item.name)
        fsync_path(final.parent)  # the renames themselves
    finally:
        _remove(folder)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new content, never a part.

    Durable when it returns: the file and its folder are fsynced (:func:`atomic_output`).
    """
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)


# -------------------------------------------------------------------------------- durability


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's or a folder's contents and metadata to the disk (``os.fsync``).

    A folder is fsynced to make the names created, renamed or removed in it durable. A
    filesystem that cannot fsync folders (``EINVAL``) is left as it is; any other error (``EIO``:
    the data did not reach the disk) is raised.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL or not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """:func:`fsync_path` a file, or every file and folder under a folder (deepest first)."""
    if not os.path.isdir(path) or os.path.islink(path):
        if not os.path.islink(path):
            fsync_path(path)
        return
    for root, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            item = os.path.join(root, name)
            if not os.path.islink(item):
                fsync_path(item)
        fsync_path(root)


# ------------------------------------------------------------------------------------ hash

_HASHES: dict[tuple[str, int, int, int], str] = {}
_HASHES_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a whole file (the identity of a model file), computed once per process.

    Cached by (resolved path, inode, size, modification time), so a file rewritten or replaced
    is hashed again.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_ino, st.st_size, st.st_mtime_ns)
    with _HASHES_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = hashlib.sha256()
    with open(p, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    with _HASHES_LOCK:
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


# ---------------------------------------------------------------------------------- device


class Precision(StrEnum):
    """Arithmetic of the forward pass: float32, or bf16 autocast on the model's device."""

    FP32 = "fp32"
    BF16 = "bf16"


def resolve_device(device: str) -> torch.device:
    """``auto`` → the first CUDA device when there is one, else the CPU; ``cuda[:N]`` checked.

    Raises :class:`InputError` naming ``--device`` when the device is malformed or absent.
    """
    import torch

    spec = device.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(
            f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {device} asked for CUDA but no CUDA device is available here: "
                "use --device cpu (or auto)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
    elif dev.type != "cpu":
        raise InputError(f"--device {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    return dev
