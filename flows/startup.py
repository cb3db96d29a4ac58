"""Prefect's temporary server, started first so that it starts while everything else does.

Without a configured API (``PREFECT_API_URL`` in the environment or the active Prefect profile) a
flow run needs Prefect's temporary local server: a uvicorn subprocess that imports Prefect's
server and migrates its SQLite database, seconds of work. Prefect starts it only when the flow's
client first needs it, after this process has imported Prefect's whole server module (which the
client never uses) just to find its start command. :func:`start_prefect_server` instead spawns
the same command (``uvicorn prefect.server.api.server:create_app``, UI off, the temporary-server
flags Prefect sets) as soon as the command line has checked its arguments, and points this
process at it through ``PREFECT_API_URL``; the server then starts while this process imports
torch, Prefect's client and the flow. :meth:`TemporaryServer.wait` blocks until it answers, just
before the flow runs; the server is stopped when this process exits (on Linux also when it is
killed: the server asks the kernel for SIGTERM when its parent dies).

``segpipe serve`` needs more than a temporary API: Prefect's own temporary server runs none of
its services, so no scheduled run is ever created ("Cannot schedule flows on an ephemeral
server"). ``start_prefect_server(scheduler=True)`` starts the same app as a full server (every
service, the scheduler among them) with a Prefect home of its own in a temporary folder, removed
when the server stops: the deployment, its schedule and its runs live as long as ``serve`` does.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

__all__ = ["TemporaryServer", "api_configured", "start_prefect_server"]

DEFAULT_TIMEOUT = 90.0

#: The scheduler server's settings: the services scheduled runs need (scheduler, late runs,
#: the run recorder), not the event feed and automations, which write to its SQLite database
#: on every event and made writers wait for the lock ("database is locked") on a busy machine;
#: and a longer wait for that lock.
SCHEDULER_SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_EVENT_LOGGER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
}


def api_configured() -> bool:
    """Whether a Prefect API is configured: in the environment, a Prefect profile or settings."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect" in sys.modules:  # already imported (a test harness, a library caller)
        from prefect.settings import PREFECT_API_URL

        return bool(PREFECT_API_URL.value())
    return bool(_profile_setting("PREFECT_API_URL"))


def _profile_setting(name: str) -> object:
    """``name`` in the active Prefect profile (profiles.toml), without importing Prefect."""
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    return data.get("profiles", {}).get(active, {}).get(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TemporaryServer:
    """Prefect's temporary server in a subprocess (the command Prefect itself would run).

    With ``scheduler``, a full server instead (Prefect's services run, the scheduler among
    them) whose database lives in a temporary Prefect home, removed by :meth:`stop`.
    """

    def __init__(self, timeout: float | None = None, scheduler: bool = False) -> None:
        self.timeout = timeout or float(
            os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", DEFAULT_TIMEOUT)
        )
        self.home = Path(tempfile.mkdtemp(prefix="segpipe-prefect-")) if scheduler else None
        self.port = _free_port()
        self.process = self._spawn()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        atexit.register(self.stop)

    def _spawn(self) -> subprocess.Popen[bytes]:
        spec = importlib.util.find_spec("prefect")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("prefect is not installed")
        app_dir = Path(next(iter(spec.submodule_search_locations))).parent
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        if self.home is None:
            env["PREFECT__SERVER_EPHEMERAL"] = "1"  # no services: the API alone
        else:  # the scheduling services, on a database of its own
            env["PREFECT_HOME"] = str(self.home)
            env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
            env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
            env.update(SCHEDULER_SERVER_SETTINGS)
        cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
               "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
               str(self.port), "--log-level", "error", "--lifespan", "on"]
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def wait(self) -> None:
        """Block until the server answers its health check; respawn it if it exits early.

        An early exit is most often a port taken between choosing it and binding it: the
        server is then started again on another port (three times at most).
        """
        deadline = time.monotonic() + self.timeout
        respawns = 0
        while time.monotonic() < deadline:
            status = self.process.poll()
            if status is not None:
                if respawns == 3:
                    raise RuntimeError(f"Prefect's temporary server exited with status {status}")
                respawns += 1
                self.port = _free_port()
                self.api_url = f"http://127.0.0.1:{self.port}/api"
                os.environ["PREFECT_API_URL"] = self.api_url
                self.process = self._spawn()
                continue
            if _healthy(f"{self.api_url}/health") and self.process.poll() is None:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"Prefect's temporary server did not answer within {self.timeout:.0f} s; set "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher or PREFECT_API_URL to a "
            "running server"
        )

    def stop(self) -> None:
        """Terminate the server (at exit, or when it never answered); remove its home."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)


def _die_with_parent() -> None:
    """In the server's process: be sent SIGTERM when segpipe dies, even by SIGKILL (Linux)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _healthy(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
        return bool(r.status == 200)
    return False


class _Configured:
    """A configured API: nothing to start or wait for."""

    def wait(self) -> None:
        return None

    def stop(self) -> None:
        return None


_STARTED: list[TemporaryServer] = []  # the server this process started, reused by later runs


def start_prefect_server(scheduler: bool = False) -> TemporaryServer | _Configured:
    """Start the temporary server now unless an API is configured; this process then uses it.

    Call before Prefect is imported (the settings read ``PREFECT_API_URL`` at import). A later
    run in the same process (a library caller, the tests) gets the server an earlier run
    started, which it waits for like the first (it may still be starting). ``scheduler``: a
    server that runs Prefect's scheduler (for ``serve``), never one started without it.
    """
    ours = _STARTED[-1] if _STARTED else None
    if (ours and ours.process.poll() is None and os.environ.get("PREFECT_API_URL") == ours.api_url
            and (ours.home is not None or not scheduler)):
        return ours
    if api_configured() and not (ours and os.environ.get("PREFECT_API_URL") == ours.api_url):
        return _Configured()
    server = TemporaryServer(scheduler=scheduler)
    os.environ["PREFECT_API_URL"] = server.api_url
    _STARTED.append(server)
    return server
