"""The driver's open of its input, held from planning to the statistics.

Planning reads the input's metadata and the statistics stage reads its sampled windows, one
after the other, in the process that drives the run. Inside :func:`holding_readers` (the scope
of one run, :func:`segpipe.pipeline.stages.run_one`) both take the input through
:func:`input_reader`, which opens each (source, level, reader options, file version) once and
keeps it open until the scope ends; outside a scope (a library call, ``inspect``) it opens and
closes as :func:`~segpipe.pipeline.io.base.open_raster` does. On an object store this saves
the second open's requests; on a local file, a second GDAL open of the header. The scope lives in a
context variable, so a run's stages on other threads (Prefect copies the context into the tasks
it runs) share the run's readers, and two runs never share one. The feed's threads keep their
own reader (:mod:`segpipe.pipeline.feed`): readers are used by one thread at a time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar

from segpipe.pipeline.io.base import Reader, file_signature, open_raster
from segpipe.pipeline.io.readeroptions import ReaderOptions

__all__ = ["holding_readers", "input_reader"]


class _Held:
    """The readers a run opened, by (source, level, reader options, file signature)."""

    def __init__(self) -> None:
        self.readers: dict[tuple[object, ...], Reader] = {}
        self.lock = threading.Lock()

    def reader(self, source: str, level: int, options: ReaderOptions) -> Reader:
        key = (source, level, options, file_signature(source))
        with self.lock:
            if key not in self.readers:
                self.readers[key] = open_raster(source, level=level, options=options)
            return self.readers[key]

    def close(self) -> None:
        with self.lock:
            readers, self.readers = list(self.readers.values()), {}
        for reader in readers:
            with contextlib.suppress(Exception):
                reader.close()


_HELD: ContextVar[_Held | None] = ContextVar("segpipe_held_readers", default=None)


@contextlib.contextmanager
def holding_readers() -> Iterator[None]:
    """Inside: :func:`input_reader` keeps what it opens; at the end, all of it is closed."""
    held = _Held()
    token = _HELD.set(held)
    try:
        yield
    finally:
        _HELD.reset(token)
        held.close()


@contextlib.contextmanager
def input_reader(source: str, level: int = 0,
                 options: ReaderOptions | None = None) -> Iterator[Reader]:
    """The reader of ``source`` at ``level``: the run's held one, else one opened for the body.

    ``options``: the run's :class:`ReaderOptions` (a STAC item's stack), part of what is held.
    """
    options = options or ReaderOptions()
    held = _HELD.get()
    if held is None:
        with open_raster(source, level=level, options=options) as reader:
            yield reader
    else:
        yield held.reader(source, level, options)
