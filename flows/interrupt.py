"""Ctrl-C and SIGTERM stop a command within a bound, whatever is running when they arrive.

The first interrupt raises :class:`KeyboardInterrupt` in the main thread: the run unwinds (the
Dask cluster's workers are killed and it closes, the folder locks are released, the work
directory stays resumable) and :func:`segpipe.flows.cli.main` prints one line and returns 130.
A library in the way can delay that or swallow the exception (a wait inside Dask's client or a
Prefect engine call; once, in CI, a run sent Ctrl-C had not exited 180 s later, and where it
waited is not known). So the interrupt also arms a watchdog: if the process is still there
:data:`STOP_SECONDS` later, the watchdog says so, kills the command's child processes (Dask
workers, a temporary Prefect server), removes the lock files it holds, prints the same line
and exits with 130 (with ``SEGPIPE_DEBUG`` set it first writes every thread's stack). A second
interrupt does not wait. Prefect is not told: that flow run stays ``Running`` on the server,
as after ``kill -9``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import psutil

__all__ = ["STOP_SECONDS", "handled", "on_signal", "say_once", "stop_children"]

#: How long an interrupted command may take to unwind before it is stopped outright.
STOP_SECONDS = 30.0


class _State:
    """What the handler and the watchdog share while a command runs."""

    def __init__(self, line: str, cleanup: Callable[[], None]) -> None:
        self.line = line
        self.cleanup = cleanup
        self.said = threading.Lock()
        self.watchdog: threading.Timer | None = None

    def say(self, line: str) -> None:
        """Print ``line`` to stderr unless a line was said already (by the watchdog or main)."""
        if self.said.acquire(blocking=False):
            print(line, file=sys.stderr, flush=True)


_state: _State | None = None


@contextlib.contextmanager
def handled(line: str, cleanup: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt and arm the watchdog, inside the body.

    ``line``: what the watchdog prints; ``cleanup``: what it runs before it exits (it must not
    block: removing lock files, say). The previous handlers come back at the end.
    """
    global _state
    _state = _State(line, cleanup)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if _state.watchdog is not None:  # unwound in time
            _state.watchdog.cancel()
        _state = None


def say_once(line: str) -> None:
    """Print ``line`` to stderr, unless the watchdog already said it (or it was said)."""
    if _state is None:
        print(line, file=sys.stderr, flush=True)
    else:
        _state.say(line)


def on_signal(signum: int, frame: object) -> None:
    """The handler of SIGINT and SIGTERM: arm the watchdog, raise KeyboardInterrupt.

    Also for a library that installs a SIGTERM handler of its own (Prefect's runner).
    """
    state = _state
    if state is not None:
        if state.watchdog is not None:  # a second interrupt: stop now
            _stop_now(state, "a second interrupt")
        why = f"the command had not stopped {STOP_SECONDS:.0f} s after the interrupt"
        state.watchdog = threading.Timer(STOP_SECONDS, _stop_now, (state, why))
        state.watchdog.daemon = True
        state.watchdog.start()
    raise KeyboardInterrupt


def _stop_now(state: _State, why: str) -> None:
    """Kill the child processes, run the cleanup, say the line, exit 130.

    With ``SEGPIPE_DEBUG`` set, every thread's stack is written first (where it was stuck).
    """
    print(f"warning: {why}: stopping its processes", file=sys.stderr, flush=True)
    if os.environ.get("SEGPIPE_DEBUG"):
        faulthandler.dump_traceback(all_threads=True)
    stop_children(grace=0)
    with contextlib.suppress(Exception):
        state.cleanup()
    state.say(state.line)
    os._exit(130)


def stop_children(grace: float) -> None:
    """Stop this process's child processes: SIGTERM, then SIGKILL after ``grace`` seconds.

    With ``grace`` 0 they are killed at once.
    """
    with contextlib.suppress(psutil.Error):
        children = psutil.Process().children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.terminate() if grace else child.kill()
        _, alive = psutil.wait_procs(children, timeout=grace)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
