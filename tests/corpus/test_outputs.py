"""Outputs and work directories: where segpipe may not write, and work it cannot resume.

Read-only folder: root ignores permissions, so when the tests run as root the folder is a
read-only bind mount of itself (``mount --bind``, then ``remount,bind,ro``), else ``chmod 555``.
Small disk: a 12 KiB tmpfs mounted for the case where mounting is allowed, else the same
12 KiB reported by ``shutil.disk_usage`` patched from outside segpipe (a ``sitecustomize`` on
``PYTHONPATH``): either way the line is the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.corpus.harness import BadCase, Call, case_params, check_bad_case
from tests.corpus.makers import OLD_MTIME_NS, gcp_geotiff, geotiff, pixels, scene, tiny_model

TITLE = "Outputs and work directories"
HELD = ("exit 2 before anything is written, one `error:` line naming the path and the fix, no "
        "traceback; an existing output keeps its bytes and time stamp")
INJECT = Path(__file__).parent / "inject"
SMALL_DISK = 12 << 10


def run_to(output: str, *extra: str, previous: bool = False, env: dict | None = None):
    """A case maker: the valid scene and model, written to ``output``."""

    def make(folder: Path) -> Call:
        scene(folder)
        return Call(("run", "--input", "scene.tif", "--output", output, "--model",
                     tiny_model(folder), *extra), output=output, previous=previous,
                    env=env or {})

    return make


def _run(*cmd: object) -> bool:
    return subprocess.run([*map(str, cmd)], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """``folder/ro``, made read-only for the process that runs segpipe (root included)."""
    target = folder / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o555)
        try:
            yield
        finally:
            target.chmod(0o755)
        return
    if not _run("mount", "--bind", target, target):
        raise AssertionError(
            "the tests run as root, which ignores permissions, and cannot bind-mount a folder "
            "read-only here; run them as another user"
        )
    try:
        if not _run("mount", "-o", "remount,bind,ro", target, target):
            raise AssertionError("cannot remount the bind mount read-only")
        yield
    finally:
        _run("umount", target)


@contextlib.contextmanager
def small_disk(folder: Path) -> Iterator[None]:
    """``folder/small``: a 12 KiB tmpfs where mounting is allowed (else a plain folder)."""
    target = folder / "small"
    target.mkdir()
    mounted = os.geteuid() == 0 and _run(
        "mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK}", "tmpfs", target
    )
    if mounted and shutil.disk_usage(target).free != SMALL_DISK:  # pages larger than 4 KiB
        _run("umount", target)
        mounted = False
    try:
        yield
    finally:
        if mounted:
            _run("umount", target)


def to_small_disk(folder: Path) -> Call:
    """The work directory on ``small``; its 12 KiB injected when it is no tmpfs."""
    env = {}
    if not os.path.ismount(folder / "small"):
        path = os.pathsep.join(filter(None, [str(INJECT), os.environ.get("PYTHONPATH")]))
        env = {"PYTHONPATH": path, "CORPUS_DISK_FREE_BYTES": str(SMALL_DISK)}
    return run_to("mask.tif", "--workdir", "small/work", env=env)(folder)


def existing_output(folder: Path) -> Call:
    call = run_to("mask.tif", previous=True)(folder)
    shutil.copyfile(folder / "scene.tif", folder / "mask.tif")  # an earlier result
    os.utime(folder / "mask.tif", ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    return call


def output_is_input(folder: Path) -> Call:
    scene(folder)
    return Call(("run", "--input", "scene.tif", "--output", "scene.tif", "--model",
                 tiny_model(folder)), output="scene.tif", previous=True)


def ome_for_gcps(folder: Path) -> Call:
    gcp_geotiff(folder / "scene.tif")
    return Call(("run", "--input", "scene.tif", "--output", "mask.ome.tif", "--model",
                 tiny_model(folder)), output="mask.ome.tif")


def corrupt_manifest(folder: Path) -> Call:
    workdir = folder / ".mask.tif.segpipe"
    workdir.mkdir()
    (workdir / "manifest.json").write_bytes(b"\x00\x01 not json")
    return run_to("mask.tif", "--resume")(folder)


def changed_input(folder: Path) -> Call:
    """An unfinished run's work directory (planned and ingested here), then the input rewritten."""
    from segpipe.pipeline.options import RunOptions
    from segpipe.pipeline.stages import ingest_stage, plan_stage

    call = run_to("mask.tif", "--resume")(folder)
    options = RunOptions.of(str(folder / "scene.tif"), str(folder / "mask.tif"),
                            model=str(folder / "tiny.pt"))
    plan = plan_stage(options)
    assert plan is not None
    ingest_stage(plan)
    geotiff(folder / "scene.tif", pixels()[::-1].copy())  # same size, other pixels
    return call


CASES = {
    "output-unknown-extension": BadCase(
        "`--output mask.png`", run_to("mask.png"), ("mask.png", ".tif")),
    "output-ome-for-gcp-input": BadCase(
        "`--output mask.ome.tif` for a GeoTIFF georeferenced by GCPs only",
        ome_for_gcps, ("ground control points", "OME-TIFF cannot carry", "--output mask.tif")),
    "output-folder-missing": BadCase(
        "an output folder that does not exist", run_to("no-such-folder/mask.tif"),
        ("does not exist", "create it")),
    "output-folder-read-only": BadCase(
        "a read-only output folder (a read-only bind mount when run as root)",
        run_to("ro/mask.tif"), ("not writable", "choose a folder"), context=read_only_folder),
    "output-is-the-input": BadCase(
        "`--output` equal to `--input`", output_is_input, ("the input itself", "another")),
    "output-exists-no-overwrite": BadCase(
        "an existing output without `--overwrite`", existing_output, ("exists", "--overwrite")),
    "workdir-disk-too-small": BadCase(
        "12 KiB free where the work directory goes (a tmpfs, or an injected disk_usage)",
        to_small_disk,
        # needs: image copy 64 × 64 × 3 B + labels 64 × 64 B = 16 KiB (nothing is staged)
        ("not enough free disk", "up to 16.0 KiB", "12.0 KiB free", "--workdir"),
        context=small_disk),
    "resume-corrupt-manifest": BadCase(
        "`--resume` with a work directory whose manifest.json is garbage", corrupt_manifest,
        ("manifest.json", "remove the work directory")),
    "resume-changed-input": BadCase(
        "`--resume` after the input was rewritten (same size, other pixels)", changed_input,
        ("cannot --resume", "changed", "remove the work directory")),
}


#: the cases `make test` runs; the others are in the slow set
QUICK = {
    "output-unknown-extension",
    "output-folder-missing",
    "output-folder-read-only",
    "output-is-the-input",
    "output-exists-no-overwrite",
    "resume-corrupt-manifest",
}


@pytest.mark.parametrize("case_id", case_params(CASES, QUICK))
def test_a_bad_output_or_work_directory_exits_2_with_one_error_line_and_writes_nothing(
    case_id: str, tmp_path: Path, prefect_api: str
):
    check_bad_case(case_id, CASES[case_id], tmp_path, prefect_api)
