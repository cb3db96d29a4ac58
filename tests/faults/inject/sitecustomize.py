"""Faults injected from outside segpipe: put this folder on PYTHONPATH of a ``segpipe`` process.

Python imports ``sitecustomize`` at start-up in every process of the run (the driver and each
Dask worker). Nothing happens unless one of these variables is set; each wraps a library
function (zarr, rasterio, torch) once that library is imported, never segpipe's code:

``FAULT_PAUSE_CHUNK=STORE:N``
    before this process writes its N-th chunk file into the Zarr store named STORE (e.g.
    ``image.zarr``), wait until the file ``FAULT_RELEASE`` exists (forever when unset).
``FAULT_PAUSE_CHUNK_READ=STORE:N``
    before this process reads its N-th chunk file of the Zarr store STORE, pause (as above).
``FAULT_ENOSPC_CHUNK=STORE:N``
    the N-th and later chunk writes into STORE fail with ``OSError(ENOSPC)``.
``FAULT_PAUSE_RASTER_WRITE=NAME:N``
    pause (as above) in the N-th ``DatasetWriter.write`` to a file named NAME.
``FAULT_PAUSE_AFTER_COPY=NAME``
    pause (as above) once ``rasterio.shutil.copy`` has written a file named NAME.
``FAULT_SWALLOW_INTERRUPT=1``
    in the ``segpipe`` process (not its workers): segpipe's own SIGINT/SIGTERM handler runs, but
    the ``KeyboardInterrupt`` it raises is caught and dropped, as a library that catches every
    exception in a wait would (the run then waits on; only the interrupt watchdog stops it).
``FAULT_FORWARD_RAISE=K``
    a torch module called on a tensor whose maximum is above 0.99 and occurs at least K times
    raises ``RuntimeError`` (the tests mark one block's core with such a patch).

Every fault that fires appends one line to ``FAULT_LOG`` when it is set: ``<what> <pid>``.
"""

from __future__ import annotations

import errno
import importlib.abc
import os
import sys
import threading
import time
from pathlib import Path

_LOCK = threading.Lock()
_COUNTS: dict[str, int] = {}


def _log(what: str) -> None:
    path = os.environ.get("FAULT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{what} {os.getpid()}\n")


def _count(key: str) -> int:
    with _LOCK:
        _COUNTS[key] = _COUNTS.get(key, 0) + 1
        return _COUNTS[key]


def _pause(what: str) -> None:
    _log(f"pause-{what}")
    release = os.environ.get("FAULT_RELEASE")
    while not (release and Path(release).exists()):
        time.sleep(0.05)
    _log(f"released-{what}")


def _spec(name: str) -> tuple[str, int]:
    target, _, n = os.environ[name].rpartition(":")
    return target, int(n)


def _chunk_of(path: Path, store: str) -> bool:
    parts = path.parts
    return store in parts and parts[parts.index(store) + 1 : parts.index(store) + 2] == ("c",)


def _patch_zarr(module) -> None:
    put = module._put

    def _put(path, value, exclusive=False):
        path = Path(path)
        if "FAULT_PAUSE_CHUNK" in os.environ:
            store, n = _spec("FAULT_PAUSE_CHUNK")
            if _chunk_of(path, store) and _count("pause-chunk") == n:
                _pause(f"chunk-{store}")
        if "FAULT_ENOSPC_CHUNK" in os.environ:
            store, n = _spec("FAULT_ENOSPC_CHUNK")
            if _chunk_of(path, store) and _count("enospc-chunk") >= n:
                _log(f"enospc-{store}")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return put(path, value, exclusive)

    module._put = _put
    if "FAULT_PAUSE_CHUNK_READ" not in os.environ:
        return
    get = module._get
    read_store, read_n = _spec("FAULT_PAUSE_CHUNK_READ")

    def _get(path, prototype, byte_range):
        if _chunk_of(Path(path), read_store) and _count("pause-chunk-read") == read_n:
            _pause(f"read-{read_store}")
        return get(path, prototype, byte_range)

    module._get = _get


def _patch_rasterio_io(module) -> None:
    name, n = _spec("FAULT_PAUSE_RASTER_WRITE")
    write = module.DatasetWriter.write

    def wrapped(self, *args, **kwargs):
        if Path(str(self.name)).name == name and _count("raster-write") == n:
            _pause(f"write-{name}")
        return write(self, *args, **kwargs)

    module.DatasetWriter.write = wrapped


def _patch_rasterio_shutil(module) -> None:
    name = os.environ["FAULT_PAUSE_AFTER_COPY"]
    copy = module.copy

    def wrapped(src, dst, *args, **kwargs):
        result = copy(src, dst, *args, **kwargs)
        if Path(str(dst)).name == name:
            _pause(f"copied-{name}")
        return result

    module.copy = wrapped


def _patch_torch(module) -> None:
    k = int(os.environ["FAULT_FORWARD_RAISE"])

    def hook(mod, args):
        x = args[0] if args else None
        if isinstance(x, module.Tensor) and x.ndim == 4 and x.numel():
            top = x.max()
            if float(top) > 0.99 and int((x == top).sum()) >= k:
                _log("raise-forward")
                raise RuntimeError("injected fault: the model failed on this block")

    module.nn.modules.module.register_module_forward_pre_hook(hook)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``hooks[name](module)`` right after module ``name`` is first imported."""

    def __init__(self, hooks) -> None:
        self.hooks = hooks

    def find_spec(self, name, path=None, target=None):
        if name not in self.hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        hook, run = self.hooks.pop(name), spec.loader.exec_module

        def exec_module(module):
            run(module)
            hook(module)

        spec.loader.exec_module = exec_module
        return spec


def _swallow_interrupts() -> None:
    import signal

    real = signal.signal

    def install(sig, handler):
        if sig in (signal.SIGINT, signal.SIGTERM) and getattr(handler, "__module__", "") == (
            "segpipe.flows.interrupt"
        ):
            def swallowing(signum, frame, handler=handler):
                try:
                    handler(signum, frame)
                except KeyboardInterrupt:
                    _log("swallowed-interrupt")

            return real(sig, swallowing)
        return real(sig, handler)

    signal.signal = install


def _install() -> None:
    if os.environ.get("FAULT_SWALLOW_INTERRUPT") and Path(sys.argv[0]).name == "segpipe":
        _swallow_interrupts()
    hooks = {}
    if any(f in os.environ for f in ("FAULT_PAUSE_CHUNK", "FAULT_PAUSE_CHUNK_READ",
                                     "FAULT_ENOSPC_CHUNK")):
        hooks["zarr.storage._local"] = _patch_zarr
    if "FAULT_PAUSE_RASTER_WRITE" in os.environ:
        hooks["rasterio.io"] = _patch_rasterio_io
    if "FAULT_PAUSE_AFTER_COPY" in os.environ:
        hooks["rasterio.shutil"] = _patch_rasterio_shutil
    if "FAULT_FORWARD_RAISE" in os.environ:
        hooks["torch"] = _patch_torch
    if hooks:
        sys.meta_path.insert(0, _AfterImport(hooks))


_install()
