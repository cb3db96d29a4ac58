"""The contenders' command lines (shared by ``bench.py`` and ``iolimit.py``).

Each builder returns a :class:`~interleave.Contender` whose command, for an image side and a
repetition, runs one child process. Outputs go to ``<folder>/<slug>_<side>.tif`` (overwritten
each repetition); what :func:`output` names is what the agreement check reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interleave import Contender
from workloads import HALO, TILE

HERE = Path(__file__).resolve().parent
PY = sys.executable
SEGPIPE = str(Path(sys.executable).with_name("segpipe"))


@dataclass(frozen=True)
class Setup:
    """What every command needs: the inputs per side, the work folder, torch's thread count."""

    folder: Path
    images: dict[int, Path]
    threads: int


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def output(setup: Setup, name: str, side: int) -> Path:
    """Where contender ``name`` writes its labels for ``side``."""
    return setup.folder / f"{slug(name)}_{side}.tif"


def labels_npy(setup: Setup, side: int) -> Path:
    """Where the bare model's stitched labels of ``side`` go (repetition 0 only)."""
    return setup.folder / f"bare_labels_{side}.npy"


def best_layout(model: Path, side: int, threads: int, env: dict[str, str],
                reps: int = 5) -> dict:
    """NCHW and channels-last measured on batches of 4 of ``side``², alternating ``reps`` times
    each: the faster (by median), and every time."""
    cmd = [PY, str(HERE / "methods.py"), "layout", "--model", str(model), "--side", str(side),
           "--threads", str(threads), "--reps", str(reps)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def method(setup: Setup, name: str, kind: str, model: Path, layout: str,
           *extra: str, note: str = "") -> Contender:
    """A ``methods.py`` contender (``bare``, ``monai``, ``loop``) at ``layout``."""

    def command(side: int, rep: int) -> list[str]:
        cmd = [PY, str(HERE / "methods.py"), kind, "--image", str(setup.images[side]),
               "--model", str(model), "--layout", layout, "--threads", str(setup.threads),
               "--out", str(output(setup, name, side)), *extra]
        if kind == "bare" and rep == 0:
            cmd += ["--labels-out", str(labels_npy(setup, side))]
        return cmd

    return Contender(name, command, self_timed=kind == "bare", note=note)


def segpipe(setup: Setup, name: str, model: Path, extra: list[str] | None = None,
            note: str = "", tile: bool = True, optional: bool = False) -> Contender:
    """``segpipe run`` with its defaults (plus ``extra``), disk → COG."""

    def command(side: int, rep: int) -> list[str]:
        geometry = ["--tile", str(TILE), "--halo", str(HALO)] if tile else []
        return [SEGPIPE, "run", "--input", str(setup.images[side]), "--output",
                str(output(setup, name, side)), "--model", str(model), *geometry, "--quiet",
                "--overwrite", *(extra or [])]

    return Contender(name, command, note=note, optional=optional)


def limit(setup: Setup, name: str, kind: str, model: Path | None = None,
          note: str = "") -> Contender:
    """A ``limits.py`` contender: ``io`` (read once, write the bare labels once) or ``direct``."""

    def command(side: int, rep: int) -> list[str]:
        cmd = [PY, str(HERE / "limits.py"), kind, "--image", str(setup.images[side]),
               "--out", str(output(setup, name, side))]
        if kind == "io":
            cmd += ["--labels", str(labels_npy(setup, side))]
        if model is not None:
            cmd += ["--model", str(model)]
        return cmd

    return Contender(name, command, self_timed=True, note=note)


def reference(setup: Setup, model: Path, side: int, env: dict[str, str],
              halo: int = HALO) -> Path:
    """The independent NCHW whole-image labels of ``side`` (``reference.py``), as a ``.npy``."""
    out = setup.folder / f"reference_{model.stem}_{side}.npy"
    subprocess.run([PY, str(HERE / "reference.py"), "--image", str(setup.images[side]),
                    "--model", str(model), "--out", str(out), "--halo", str(halo),
                    "--threads", str(setup.threads)], env=env, check=True,
                   capture_output=True)
    return out


def agreement(reference_npy: Path, labels: Path) -> float:
    """Fraction of pixels whose labels equal the reference's (a GeoTIFF or a ``.npy``)."""
    import numpy as np

    ref = np.load(reference_npy)
    if labels.suffix == ".npy":
        other = np.load(labels)
    else:
        import rasterio

        with rasterio.open(labels) as ds:
            other = ds.read(1)
    return float((ref == other).mean())


def keep_output(setup: Setup, names: set[str], side: int) -> Callable[[Contender, int, int], None]:
    """An ``after`` hook: keep the labels of ``names`` at ``side`` from repetition 0."""

    def after(c: Contender, s: int, rep: int) -> None:
        if rep == 0 and s == side and c.name in names:
            src = output(setup, c.name, s)
            if src.exists():
                src.replace(src.with_name(f"keep_{src.name}"))

    return after


def kept(setup: Setup, name: str, side: int) -> Path:
    """The labels :func:`keep_output` kept."""
    src = output(setup, name, side)
    return src.with_name(f"keep_{src.name}")
