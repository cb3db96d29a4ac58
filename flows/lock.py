"""One segpipe run at a time per output folder: the lock file ``<folder>/.segpipe.lock``.

``segpipe run`` and every served run hold the lock of each folder they write outputs into, from
before the first input is planned until the last output is published. A second run against a
held folder stops at once with :class:`~segpipe.models.foundation.FolderLockedError` (exit 2)
naming the holder: its pid, host and start time. Nothing of the first run is touched.

The lock is ``fcntl.flock`` on the lock file, so the kernel releases it when its holder dies,
``kill -9`` included. The file's content (pid, host, start) is for messages and people: a lock
file left with content by a run that died is *stale*; when its pid is gone from this host (or
now belongs to another process), the next run takes it over and says so. A stale lock written
on another host is not taken over: segpipe cannot tell whether that run is alive, and says
which file to remove. Holding the lock also makes the ``.partial`` folders that a killed run
left beside its outputs safe to remove (no other segpipe run writes those names): they are.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from segpipe.flows.inputs import output_stem
from segpipe.models.foundation import FolderLockedError
from segpipe.pipeline import storage

__all__ = [
    "LOCK_NAME", "Holder", "hold_folders", "hold_outputs", "release_all", "remove_partials",
]

log = logging.getLogger("segpipe")

LOCK_NAME = ".segpipe.lock"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # filesystems without flock


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock: process id, host, start time, the process's own start."""

    pid: int
    host: str
    since: float
    started: float | None = None  # the process's creation time (tells a reused pid apart)
    command: str = ""

    @classmethod
    def me(cls) -> Holder:
        """The holder that is the current process."""
        return cls(os.getpid(), socket.gethostname(), time.time(), _process_start(os.getpid()),
                   " ".join(sys.argv[:3]))

    def describe(self) -> str:
        """``pid 123 on host h since 2026-11-30 00:12:03``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on host {self.host} since {when}"

    def may_be_running(self) -> bool:
        """Whether this holder may still run: a live process here, or any on another host."""
        if self.host != socket.gethostname():
            return True  # cannot tell from here
        started = _process_start(self.pid)
        if started is None:
            return False
        return self.started is None or abs(started - self.started) < 1.0


def _process_start(pid: int) -> float | None:
    """The creation time of process ``pid``, or None when there is no such process."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def _read_holder(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        return Holder(**json.loads(text))
    except (ValueError, TypeError):
        return None


def _write_holder(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(asdict(holder)).encode())
    os.fsync(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a releasing holder unlinks it)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _refuse(folder: Path, holder: Holder | None, path: Path) -> FolderLockedError:
    who = holder.describe() if holder else "a process that has not yet recorded itself"
    return FolderLockedError(
        f"output folder {folder} is in use by another segpipe run ({who}; lock file {path}); "
        "wait for it to finish or choose another --output"
    )


def _lock_once(folder: Path) -> int | None:
    """The locked descriptor of ``folder``'s lock file, or None to try again."""
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise _refuse(folder, holder, path) from None
    except OSError as exc:
        if exc.errno not in _NO_FLOCK:
            os.close(fd)
            raise
        log.warning("output folder %s: its filesystem cannot lock files (%s); only the lock "
                    "file's pid guards it", folder, exc.strerror)
    if not _same_file(fd, path):  # released (and removed) between open and flock
        os.close(fd)
        return None
    return fd


def _take(folder: Path) -> int:
    """Lock ``folder`` for this process; returns the lock file's descriptor."""
    path = folder / LOCK_NAME
    fd = None
    while fd is None:
        fd = _lock_once(folder)
    previous = _read_holder(fd)
    if previous is not None:
        if previous.may_be_running():
            os.close(fd)
            if previous.host != socket.gethostname():
                raise FolderLockedError(
                    f"output folder {folder} is locked by a segpipe run on another host "
                    f"({previous.describe()}; lock file {path}); if that run is no longer "
                    "running, remove the lock file"
                )
            raise _refuse(folder, previous, path)
        log.warning(
            "output folder %s: took over the lock of a segpipe run that is no longer running "
            "(%s)", folder, previous.describe(),
        )
    try:
        _write_holder(fd, Holder.me())
    except OSError:  # a full disk, say: do not keep holding a lock we could not label
        os.close(fd)
        raise
    return fd


#: The folders this process holds, with their lock files' descriptors.
_HELD: dict[Path, int] = {}


def _release(folder: Path, fd: int) -> None:
    if _HELD.pop(folder, None) is None:  # already released (by :func:`release_all`)
        return
    with contextlib.suppress(FileNotFoundError):
        (folder / LOCK_NAME).unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


def release_all() -> None:
    """Release every lock this process holds (an interrupted command's last act)."""
    for folder, fd in list(_HELD.items()):
        _release(folder, fd)


@contextlib.contextmanager
def hold_folders(folders: Iterable[str | os.PathLike[str]]) -> Iterator[None]:
    """Hold the lock of every folder (in a fixed order) for the body; all or none.

    Raises :class:`FolderLockedError` naming the holder of the first folder that is in use.
    """
    with contextlib.ExitStack() as stack:
        for folder in sorted({Path(f).absolute() for f in folders}):
            fd = _HELD[folder] = _take(folder)
            stack.callback(_release, folder, fd)
        yield


@contextlib.contextmanager
def hold_outputs(outputs: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """Hold the locks of the outputs' folders, and clear what killed runs left for them."""
    local = [o for o in outputs if not storage.is_url(o)]  # a bucket has no folder to lock
    with hold_folders(Path(o).absolute().parent for o in local):
        for partial in remove_partials(local):
            log.info("removed %s, left by a run that was killed while writing", partial)
        yield


def remove_partials(outputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Remove the ``.partial`` folders a killed run left for these outputs; returns them.

    An output ``DIR/STEM.ext`` and its companions (``STEM.probabilities.ext``,
    ``STEM.quicklook.png``, its sidecar, ...) are published from hidden folders
    ``DIR/.<name>.XXXXXXXX.partial``. Call this only while holding ``DIR``'s lock.
    """
    removed: list[Path] = []
    for out in outputs:
        folder, prefix = Path(out).parent, output_stem(out) + "."
        for entry in sorted(folder.glob(".*.partial")):
            if entry.is_dir() and entry.name.lstrip(".").startswith(prefix):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed
