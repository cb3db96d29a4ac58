"""A full disk, wherever a run meets it, becomes one clear error with the numbers.

The planning stage refuses a run whose work directory cannot fit
(:mod:`segpipe.pipeline.diskspace`, with the numbers); the disk can still fill up during the run
(another writer, a compression worse than none). That happens in the driver (ingest, export,
the manifest, the report) or on a Dask worker (a block's label chunks or its marker). The
driver's ``OSError`` arrives as itself; a worker's arrives as the text of the blocks that failed
(``BlocksFailedError``) or of the inputs that failed (``BatchError``); GDAL's as its message.
:func:`disk_full_reported` turns each into :class:`~segpipe.models.foundation.DiskFullError`
(exit 1) naming where, the space free there and what the work directory holds so far. Nothing
is removed: the work directory keeps its finished blocks, and once space is freed ``--resume``
continues the run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from segpipe.models.foundation import DiskFullError
from segpipe.pipeline.diskspace import human_bytes
from segpipe.pipeline.options import RunOptions
from segpipe.pipeline.outputs import default_workdir

__all__ = ["disk_full_reported", "is_disk_full"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk or quota is full.

    By errno for an ``OSError``; by its text for an error carried as text (a worker's, a
    batch's) or raised by GDAL, which names no errno.
    """
    texts = (*(os.strerror(e) for e in _FULL), "Free disk space available is")
    return any(
        (isinstance(e, OSError) and e.errno in _FULL) or any(t in str(e) for t in texts)
        for e in _chain(exc)
    )


def _full_file(exc: BaseException) -> Path | None:
    """The file whose write met the full disk, when the error names it."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _FULL and e.filename:
            return Path(os.fsdecode(e.filename))
    return None


def _size(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    total = 0
    for f in path.rglob("*") if path.is_dir() else ():
        with contextlib.suppress(OSError):  # a temporary file gone meanwhile
            total += f.stat().st_size if f.is_file() else 0
    return total


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return None


def _message(jobs: Sequence[RunOptions], exc: BaseException) -> str:
    workdirs = [Path(j.workdir or default_workdir(j.output)) for j in jobs]
    single = len(jobs) == 1
    where = str(workdirs[0]) if single else f"{workdirs[0].parent} (the work directories)"
    place = workdirs[0]
    full = _full_file(exc)
    if full is not None and place not in full.parents:
        place = full.parent  # not the work directory: the output's folder, say
        where = str(place)
    free = _free_bytes(place)
    numbers = [f"{human_bytes(free)} free there"] if free is not None else []
    if place == workdirs[0]:
        held = sum(_size(w) for w in workdirs)
        numbers.append(f"the work director{'y holds' if single else 'ies hold'} "
                       f"{human_bytes(held)} so far")
    detail = f" ({'; '.join(numbers)})" if numbers else ""
    kept = (
        "Nothing was written at the output path and the finished blocks are kept"
        if single else f"Finished inputs have their outputs, the others keep their blocks ({exc})"
    )
    return (
        f"the disk is full: no space left on the device under {where}{detail}. {kept}: free "
        "some space, then rerun with --resume"
    )


@contextlib.contextmanager
def disk_full_reported(jobs: Sequence[RunOptions]) -> Iterator[None]:
    """Raise :class:`DiskFullError` for the body's 'no space left on device', with the numbers."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not jobs or not is_disk_full(exc):
            raise
        raise DiskFullError(_message(jobs, exc)) from exc
