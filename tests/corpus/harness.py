"""The one harness of the command-line contract: run the installed ``segpipe`` as a user would.

Bad usage or bad input exits 2 with exactly one stderr line ``error: ...`` naming the problem and
the fix, never a traceback, and leaves the folder it was asked to write into as it was: no
output, no hidden work folder, nothing overwritten (:func:`assert_rejected`). Each case runs the
console script in a fresh process, in a folder that holds only what the case needs, with paths
relative to that folder, so its error line is the same on every machine.

Every corpus case records the line it got (:func:`documented`): against ``RELIABILITY.md``
(the test fails when the file says otherwise: regenerate it with ``scripts/reliability.py``),
or, when the script runs the corpus (``SEGPIPE_CORPUS_RECORD`` names a JSON-lines file), into
that file.

Most cases share one Prefect server started for the test session (``PREFECT_API_URL``, as a
user with a server runs segpipe): without it every run would start Prefect's temporary server
(about 10 s). A few cases run without it, so the temporary server's console output is held to
the contract too.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SEGPIPE = Path(sys.executable).parent / "segpipe"
REPO = Path(__file__).resolve().parents[2]
RELIABILITY = REPO / "RELIABILITY.md"
RECORD_ENV = "SEGPIPE_CORPUS_RECORD"
TIMEOUT_S = 300
#: Every case segments in this process, without a progress display.
COMMON = ("--workers", "0", "--quiet")


# ------------------------------------------------------------------------------- running


def run_segpipe(
    args: list, cwd: Path, *, api: str | None = None, env: dict[str, str] | None = None,
    limit_as: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script in ``cwd``, as a user would from a shell.

    ``api``: a Prefect server's API URL (else Prefect's temporary server); ``env``: more
    environment; ``limit_as``: an address-space limit (bytes) for the process.
    """
    full = {k: v for k, v in os.environ.items() if k not in ("SEGPIPE_DEBUG", "PREFECT_API_URL")}
    full.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    if api:
        full["PREFECT_API_URL"] = api
    full.update(env or {})

    def limit() -> None:
        if limit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    return subprocess.run(
        [str(SEGPIPE), *map(str, args)], cwd=cwd, env=full, capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False, preexec_fn=limit if limit_as else None,
    )


def shown(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed assertion shows: exit code, stdout and stderr."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Everything under ``folder`` (hidden entries too): files with their size and mtime."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        if path.is_file():
            entries[str(path.relative_to(folder))] = ("file", stat.st_size, stat.st_mtime_ns)
        else:
            entries[str(path.relative_to(folder))] = ("other", 0, 0)
    return entries


def assert_rejected(
    result: subprocess.CompletedProcess[str], folder: Path, before: dict, output: Path,
    previous: bytes | None = None,
) -> None:
    """The contract for bad usage or bad input (``previous``: bytes of an existing output)."""
    assert result.returncode == 2, shown(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown(result)
    assert lines[0].startswith("error:"), shown(result)
    assert "Traceback" not in result.stdout + result.stderr, shown(result)
    if previous is None:
        assert not os.path.lexists(output), f"{output} was created\n{shown(result)}"
    else:
        assert output.read_bytes() == previous, f"{output} was overwritten\n{shown(result)}"
    assert snapshot(folder) == before, f"the folder changed\n{shown(result)}"


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line on stderr (the assertion names what else was there)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, shown(result)
    return errors[0]


# ------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Call:
    """One ``segpipe`` call a case makes, relative to its folder.

    ``previous``: the output exists already (an earlier result) and must stay as it was;
    ``env``: more environment (e.g. a ``sitecustomize`` on ``PYTHONPATH``); ``limit_as``: an
    address-space limit; ``api``: False runs with Prefect's temporary server.
    """

    args: tuple[str, ...]
    output: str = "mask.tif"
    previous: bool = False
    env: dict[str, str] = field(default_factory=dict)
    limit_as: int | None = None
    api: bool = True


@dataclass(frozen=True)
class BadCase:
    """A bad call: what was tried, how to make it in a folder, and what its error line says.

    ``says``: words the error line must contain, naming the problem and the fix.
    ``context``: entered around the case (e.g. a read-only mount), given the folder; the case
    is made inside it.
    ``portable``: False when the line differs on a machine with CUDA (it is documented as
    seen on one without).
    """

    what: str
    make: Callable[[Path], Call]
    says: tuple[str, ...]
    context: Callable[[Path], contextlib.AbstractContextManager[None]] | None = None
    portable: bool = True
    exit: int = 2


def check_bad_case(case_id: str, case: BadCase, folder: Path, api: str) -> None:
    """Make ``case`` in ``folder``, run it, hold it to the contract and document its line."""
    with case.context(folder) if case.context else contextlib.nullcontext():
        call = case.make(folder)
        output = folder / call.output
        previous = None
        if call.previous:
            previous = output.read_bytes()
            mtime = output.stat().st_mtime_ns
        before = snapshot(folder)
        result = run_segpipe(  # the case's own options last: they win over COMMON
            [call.args[0], *COMMON, *call.args[1:]], folder, api=api if call.api else None,
            env=call.env, limit_as=call.limit_as,
        )
        assert_rejected(result, folder, before, output, previous)
    line = error_line(result)
    for word in case.says:
        assert word in line, f"the error line does not say {word!r}:\n{line}"
    if call.previous:
        assert output.stat().st_mtime_ns == mtime
    documented(case_id, 2, strip_tmp(line, folder), portable=case.portable)


def strip_tmp(text: str, *folders: Path) -> str:
    """``text`` with the case's temporary folders written as ``<tmp>``."""
    for folder in folders:
        for form in sorted({str(folder.resolve()), str(folder)}, key=len, reverse=True):
            text = text.replace(form, "<tmp>")
    return text


# ------------------------------------------------------------------------ RELIABILITY.md


def documented(case_id: str, exit_code: int, line: str, *, portable: bool = True) -> None:
    """Record what case ``case_id`` gave, or check that ``RELIABILITY.md`` says the same.

    A case that is not ``portable`` is documented as seen on a machine without CUDA: on one
    with CUDA its row is kept as it is.
    """
    record = os.environ.get(RECORD_ENV)
    entry = {"id": case_id, "exit": exit_code, "line": line}
    if not portable and _has_cuda():
        entry = {"id": case_id, "keep": True}
    if record:
        with open(record, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        return
    if "keep" in entry:
        return
    rows = documented_rows()
    fix = "regenerate it: .venv/bin/python scripts/reliability.py"
    assert case_id in rows, f"RELIABILITY.md has no row for case {case_id}; {fix}"
    assert rows[case_id] == (exit_code, line), (
        f"RELIABILITY.md is out of date for case {case_id}: it says {rows[case_id]}, the case "
        f"gave {(exit_code, line)}; {fix}"
    )


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


_ROW = re.compile(r"^\| `(?P<id>[^`]+)` \| .* \| (?P<exit>\d+) \| (?P<line>.*) \|$")


def documented_rows(text: str | None = None) -> dict[str, tuple[int, str]]:
    """Case id → (exit code, stderr line) from the case tables of ``RELIABILITY.md``."""
    if text is None:
        text = RELIABILITY.read_text(encoding="utf-8") if RELIABILITY.exists() else ""
    rows = {}
    for raw in text.splitlines():
        row = _ROW.match(raw)
        if row:
            rows[row["id"]] = (int(row["exit"]), uncode(row["line"]))
    return rows


def code(text: str) -> str:
    """``text`` as a Markdown code span inside a table cell (``—`` when empty)."""
    if not text:
        return "—"
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def uncode(cell: str) -> str:
    """Inverse of :func:`code`."""
    if cell == "—":
        return ""
    fence = "``" if cell.startswith("``") else "`"
    inner = cell[len(fence): -len(fence)]
    if fence == "``" and inner.startswith(" ") and inner.endswith(" "):
        inner = inner[1:-1]
    return inner.replace(chr(92) + "|", "|")


def case_params(cases: dict[str, object], quick: set[str]) -> list:
    """The case ids as pytest parameters: those in ``quick`` run in ``make test``, the others
    in the slow set (each is a fresh ``segpipe`` process of about 6 s; CI runs both sets)."""
    import pytest

    unknown = quick - set(cases)
    assert not unknown, f"not corpus cases: {sorted(unknown)}"
    return [pytest.param(c, marks=() if c in quick else pytest.mark.slow) for c in cases]


# ------------------------------------------------------------------ a shared Prefect server

_SERVER = """
import os, sys, time
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness
parent = os.getppid()
with prefect_test_harness(server_startup_timeout=120):
    print(PREFECT_API_URL.value(), flush=True)
    while os.getppid() == parent:  # ends with the test process, even after kill -9
        time.sleep(1)
"""
_server: dict[str, object] = {}


def prefect_server() -> str:
    """The API URL of one Prefect server for this test process (started on first use)."""
    if "url" not in _server:
        home = tempfile.mkdtemp(prefix="segpipe-prefect-")
        env = dict(os.environ, PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   DO_NOT_TRACK="1")
        env.pop("PREFECT_API_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env, start_new_session=True,
        )
        url = proc.stdout.readline().strip() if proc.stdout else ""
        if not url.startswith("http"):
            proc.kill()
            raise RuntimeError("the Prefect test server did not start")
        _server.update(url=url, proc=proc)
        atexit.register(_stop_server, proc, home)
    return str(_server["url"])


def _stop_server(proc: subprocess.Popen, home: str) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    shutil.rmtree(home, ignore_errors=True)

