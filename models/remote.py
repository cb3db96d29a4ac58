"""Model files by URL: fetched once into a local cache keyed by their sha256, and verified.

``--model s3://bucket/models/unet.pt`` (any fsspec URL) reaches every machine of a cluster that
shares no filesystem. The file is streamed into ``<cache>/<sha256>/<name>`` (its sidecar card
``<stem>.json`` beside it when the bucket has one), hashed while it downloads and renamed into
place when complete, so a cache entry is always a whole file with the hash it is named by.

The planner fetches the model without knowing its hash (once per process and object version:
the ETag and size are asked first); workers receive the sha256 the run was planned with and use
the cached file when it is there (verified by :func:`~segpipe.models.foundation.file_sha256`),
else download it and refuse a file whose hash differs (the object changed since planning).

The cache is ``$SEGPIPE_MODEL_CACHE``, else ``$XDG_CACHE_HOME/segpipe/models``, else
``~/.cache/segpipe/models``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from .foundation import ModelError, file_sha256
from .location import is_url

__all__ = ["cache_dir", "fetch_model", "is_url"]

_FETCHED: dict[tuple[str, str, int], Path] = {}  # (url, etag, size) → cached file
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where fetched models are kept."""
    explicit = os.environ.get("SEGPIPE_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "segpipe" / "models"


def _name(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "model"


def fetch_model(url: str, sha256: str | None = None) -> Path:
    """The local copy of the model at ``url`` (downloaded when needed), checked against ``sha256``.

    Raises :class:`ModelError` naming the URL when it cannot be read, or when ``sha256`` is given
    and the object's content has another hash.
    """
    name = _name(url)
    if sha256 is not None:
        cached = cache_dir() / sha256 / name
        if cached.is_file() and file_sha256(cached) == sha256:
            return cached
    try:
        from .objectstore import url_to_fs

        fs, inner = url_to_fs(url)  # s3://: under segpipe's retry policy
        info: dict[str, Any] = fs.info(inner)
        version = (url, str(info.get("ETag") or info.get("mtime") or ""), int(info["size"]))
        with _LOCK:
            known = _FETCHED.get(version)
        if known is not None and known.is_file() and sha256 in (None, known.parent.name):
            return known
        path = _download(fs, inner, name, sha256)
    except ModelError:
        raise
    except Exception as exc:  # fsspec backends raise OSError subclasses and their own types
        raise ModelError(
            f"model {url} cannot be fetched ({type(exc).__name__}); check the URL and the "
            "credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL)"
        ) from None
    _fetch_sidecar(fs, inner, path)
    with _LOCK:
        _FETCHED[version] = path
    if sha256 is not None and path.parent.name != sha256:
        raise ModelError(
            f"model {url} changed since the run was planned (sha256 {sha256[:12]}… → "
            f"{path.parent.name[:12]}…); rerun"
        )
    return path


def _download(fs: Any, inner: str, name: str, expected: str | None) -> Path:
    """Stream ``inner`` into the cache, hashing it; the cached path (named by its sha256)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=root)
    try:
        with os.fdopen(handle, "wb") as out, fs.open(inner, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        final = root / digest.hexdigest() / name
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return final


def _fetch_sidecar(fs: Any, inner: str, path: Path) -> None:
    """Copy the sidecar card ``<stem>.json`` beside the model in the bucket, if there is one."""
    stem, dot, _ = inner.rpartition(".")
    if not dot or "/" in inner[len(stem):]:
        return
    try:
        data = fs.cat_file(f"{stem}.json")
    except FileNotFoundError:
        return
    target = path.with_suffix(".json")
    tmp = target.with_name(f".{target.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, target)
