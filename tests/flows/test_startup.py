"""Prefect's temporary server is started first, used by the run, and stopped at its end."""

from __future__ import annotations

import os
import subprocess

import psutil
import pytest

from segpipe.flows import startup
from tests.flows.conftest import SMALL_ARGS, segpipe_cmd


def test_api_configured_from_environment_or_profile(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    profiles = tmp_path / "profiles.toml"
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    profiles.write_text('active = "local"\n[profiles.local]\nPREFECT_LOGGING_LEVEL = "INFO"\n')
    assert not startup._profile_setting("PREFECT_API_URL")
    profiles.write_text('active = "remote"\n[profiles.remote]\n'
                        'PREFECT_API_URL = "http://127.0.0.1:4200/api"\n')
    assert startup._profile_setting("PREFECT_API_URL") == "http://127.0.0.1:4200/api"
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    assert startup.api_configured()


def _servers_of(home: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "uvicorn" in " ".join(p.info["cmdline"] or []) and \
                    p.environ().get("PREFECT_HOME") == home:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.slow
def test_run_without_a_configured_server_starts_and_stops_its_own(assets, tmp_path):
    home = str(tmp_path / "prefect-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=home, PREFECT_PROFILES_PATH=str(tmp_path / "none.toml"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    out = tmp_path / "out.tif"
    done = subprocess.run(
        segpipe_cmd("run", "--input", assets["small"], "--output", out, "--model",
                    assets["model"], "--workers", "0", "--quiet", *SMALL_ARGS),
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    assert (tmp_path / "prefect-home").is_dir()  # the server's database lives there
    assert _servers_of(home) == []  # stopped with the run
