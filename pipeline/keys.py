"""What makes two runs the same run: the input's identity and the keys that guard a work directory.

The :class:`LabelKey` holds everything that changes what the blocks write: the input's identity,
the model's sha256 and the label parameters (bands, level, tile, halo, blend, normalization,
precision, block layout, whether probabilities are written). ``--resume`` refuses when it
differs. The export key (output format, overview resampling, NGFF version, probability type)
only decides whether the output file must be written again; batch size, device and workers are
in neither key and never block a resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from segpipe.models.location import is_url

__all__ = ["InputIdentity", "LabelKey", "jsonable", "param_differences", "sampled_digest"]

# bytes hashed at each of the start, middle and end of an input file
SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class InputIdentity:
    """Who an input is: path, size, modification time and a hash of sampled bytes.

    For a file the hash covers ``SAMPLE_BYTES`` at its start, middle and end (cheap on a
    terabyte, and it catches a file rewritten with the same size and mtime in practice). For a
    directory (a Zarr store) it covers the names and sizes of its top-level entries and the
    contents of its top-level metadata files. An object-store URL by its size, modification time
    and ETag (the store's content tag), asked with one request; a Zarr prefix by those of its
    root metadata object. A STAC item (:mod:`segpipe.pipeline.io.stac`): the item's own identity
    with its ``sample_sha256`` a digest over it and every stacked asset's identity, so a
    replaced band COG changes the key even where the item file is untouched.
    """

    path: str
    size: int | None
    mtime_ns: int | None
    sample_sha256: str | None

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> InputIdentity:
        """The identity of the input at ``path`` now (computed once per run by the planner)."""
        text = os.fspath(path)
        own = _url_identity(cls, text) if is_url(text) else _local_identity(cls, Path(text))
        from segpipe.pipeline.io.stac import is_stac_item, stacked_hrefs

        if not is_stac_item(text):
            return own
        return replace(own, sample_sha256=_with_assets(own, [cls.of(h) for h in
                                                             stacked_hrefs(text)]))

    def differences(self, stored: InputIdentity) -> list[str]:
        """How this input differs from the ``stored`` one, in words (empty when the same)."""
        if stored.path != self.path:
            return [f"the input is {self.path}, the work directory was made for {stored.path}"]
        what = [
            name for name, x, y in (
                ("size", stored.size, self.size),
                ("modification time", stored.mtime_ns, self.mtime_ns),
                ("content", stored.sample_sha256, self.sample_sha256),
            ) if x != y
        ]
        return [f"the input {self.path} changed ({', '.join(what)})"] if what else []


def _local_identity(cls: type[InputIdentity], p: Path) -> InputIdentity:
    st = p.stat()
    if p.is_dir():
        return cls(str(p.resolve()), None, st.st_mtime_ns, _directory_digest(p))
    return cls(str(p.resolve()), st.st_size, st.st_mtime_ns, _file_digest(p, st.st_size))


def _file_digest(path: Path, size: int) -> str:
    """A TIFF's digest comes with its header (one open per file version), else is read here."""
    from segpipe.pipeline.io.tiff import tiff_header

    known = tiff_header(str(path)).sample_sha256
    if known is not None:
        return known
    with path.open("rb") as handle:
        return sampled_digest(handle, size)


def _with_assets(item: InputIdentity, assets: list[InputIdentity]) -> str:
    """One digest of a STAC item's own identity and its stacked assets' (a new COG: a new key)."""
    digest = hashlib.sha256(json.dumps(asdict(item), sort_keys=True).encode())
    for asset in assets:
        digest.update(json.dumps(asdict(asset), sort_keys=True).encode())
    return f"stac:{digest.hexdigest()}"


def _url_identity(cls: type[InputIdentity], url: str) -> InputIdentity:
    from segpipe.pipeline import storage

    fs, inner = storage.filesystem(url)
    try:
        info = fs.info(inner)
        if info.get("type") == "directory":
            for meta in ("zarr.json", ".zattrs", ".zgroup"):
                with contextlib.suppress(FileNotFoundError):
                    info = fs.info(f"{inner.rstrip('/')}/{meta}")
                    break
    except (OSError, ValueError):
        return cls(url, None, None, None)
    modified = info.get("LastModified") or info.get("mtime")
    mtime = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else None
    etag = info.get("ETag") or info.get("etag")
    return cls(url, info.get("size"), mtime, f"etag:{str(etag).strip(chr(34))}" if etag else None)


def sampled_digest(handle: BinaryIO, size: int) -> str:
    """The sha256 of a file's size and ``SAMPLE_BYTES`` at its start, middle and end.

    ``handle``: the file open for reading (binary, seekable) whose size is ``size``.
    """
    digest = hashlib.sha256(str(size).encode())
    starts = sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)})
    for start in starts:
        handle.seek(start)
        digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _directory_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for entry in sorted(path.iterdir()):
        st = entry.stat()
        digest.update(f"{entry.name}|{entry.is_dir()}|{st.st_size}|".encode())
        if entry.is_file() and entry.suffix in ("", ".json") and st.st_size <= SAMPLE_BYTES:
            digest.update(entry.read_bytes())
    return digest.hexdigest()


def jsonable(value: Any) -> Any:
    """Plain JSON values (tuples become lists, enums their values) so keys compare after a load."""
    return json.loads(json.dumps(value, default=str))


def param_differences(mine: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """``--option old → new`` for every parameter that differs."""
    a, b = jsonable(dict(mine)), jsonable(dict(stored))
    return [
        f"--{name.replace('_', '-')} {b.get(name)} → {a.get(name)}"
        for name in sorted(set(a) | set(b))
        if a.get(name) != b.get(name)
    ]


@dataclass(frozen=True)
class LabelKey:
    """Input identity, model hash and the parameters that change what the blocks write."""

    input: InputIdentity
    model_sha256: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "input": asdict(self.input),
            "model_sha256": self.model_sha256,
            "params": jsonable(dict(self.params)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelKey:
        """Inverse of :meth:`to_dict`."""
        return cls(InputIdentity(**d["input"]), d["model_sha256"], dict(d["params"]))

    def differences(self, stored: LabelKey) -> list[str]:
        """Human-readable differences from the ``stored`` key; empty when the same."""
        out = self.input.differences(stored.input)
        if stored.model_sha256 != self.model_sha256:
            out.append(
                f"the model changed (sha256 {stored.model_sha256[:12]}… → "
                f"{self.model_sha256[:12]}…)"
            )
        return out + param_differences(self.params, stored.params)
