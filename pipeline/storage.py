"""Where bytes live: local paths, or object-store URLs (``s3://bucket/key``, any fsspec scheme).

Every place that names a file or folder of a run (input, output, work directory, model, batch
folders) may name a URL instead. This module is the one place that tells them apart and does the
small-object I/O a run needs on either: text objects (the manifest, block markers, the summary,
the sidecar), listing a folder of markers, removing a tree, and publishing a file.

Local paths keep exactly their old behaviour (:func:`~segpipe.models.foundation.atomic_output`,
``os.scandir``, ``shutil.rmtree``). URLs go through fsspec (s3fs for ``s3://``), which takes its
credentials and endpoint from the standard AWS variables and files (``AWS_ENDPOINT_URL``,
``AWS_PROFILE``, ``~/.aws/config``); GDAL gets the same settings from
:mod:`segpipe.pipeline.io.remote`.

Durability on a local disk: whatever is published (a file renamed into place, the manifest, a
marker) is fsynced before its rename and its folder after it, and new folders are fsynced into
their parents, so a power loss leaves the old file or the whole new one. An object store has
nothing to fsync: a PUT that returned is stored.

Atomicity on an object store: a single PUT is atomic (readers see the old object or the new one,
never a part), so the manifest and the summary are plain PUTs; a crash mid-PUT leaves the old
object. A block marker is written once with a conditional PUT (``If-None-Match: *``): a block
recomputed after a lost result keeps the first marker. Files (COG, OME-TIFF, the quicklook) are
written on local scratch and uploaded when complete (:func:`publish`); files of two parts or
more (:data:`UPLOAD_PART_BYTES`) go up as a multipart upload, whose object appears only when
the upload completes: a crash leaves no object at the key (an incomplete upload, invisible,
that a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` cleans up).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from segpipe.models.foundation import InputError, atomic_output, fsync_path, write_text_atomic
from segpipe.models.location import is_url

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "absolute",
    "basename",
    "check_url",
    "exists",
    "filesystem",
    "is_url",
    "join",
    "list_names",
    "list_texts",
    "local_scratch",
    "makedirs",
    "parent",
    "publish",
    "read_text",
    "remove",
    "remove_tree",
    "with_name",
    "write_once",
    "write_text",
    "zarr_store",
]

# query parameters that make a URL a credential (presigned S3/GCS/Azure URLs)
_SECRET_QUERY = ("signature", "credential", "security-token", "sig=", "token", "key=")


def check_url(url: str, option: str) -> None:
    """Refuse a URL that carries credentials (user:password@, a presigned query string).

    segpipe records input, output and model URLs in manifests, reports and logs; a URL with a
    secret in it would leak. The message names the URL without its secret part.
    """
    if not is_url(url):
        return
    parts = urlsplit(url)
    lowered = parts.query.lower()
    if parts.password or any(word in lowered for word in _SECRET_QUERY):
        bare = urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))
        raise InputError(
            f"{option} {bare}?…: the URL carries credentials (a presigned URL or a password), "
            "which segpipe would record in manifests and reports; name the object as "
            "s3://bucket/key and give credentials through the AWS variables or profile instead"
        )


def absolute(path: str) -> str:
    """A local path made absolute; a URL as it is."""
    return path if is_url(path) else str(Path(path).absolute())


def join(base: str, *parts: str) -> str:
    """``base`` / ``parts``: a path join for local paths, a ``/`` join for URLs."""
    if not is_url(base):
        return str(Path(base).joinpath(*parts))
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def parent(path: str) -> str:
    """The folder holding ``path`` (for a URL: everything before its last ``/``)."""
    if not is_url(path):
        return str(Path(path).parent)
    return path.rstrip("/").rsplit("/", 1)[0]


def basename(path: str) -> str:
    """The last component of ``path`` (no query string for URLs)."""
    if not is_url(path):
        return Path(path).name
    return urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1]


def with_name(path: str, name: str) -> str:
    """``path`` with its last component replaced by ``name``."""
    return join(parent(path), name) if is_url(path) else str(Path(path).with_name(name))


#: S3 uploads of at least two parts' size are multipart uploads in parts of this size (S3's
#: smallest part is 5 MiB, its largest upload 10 000 parts: 640 GiB at this size).
UPLOAD_PART_BYTES = 64 << 20


def _upload_options(fs: AbstractFileSystem) -> dict[str, int]:
    """The part size for s3fs's uploads (other filesystems choose their own)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return {"chunksize": UPLOAD_PART_BYTES} if {"s3", "s3a"} & set(protocols) else {}


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` and the path inside it (listings never cached).

    ``s3://``: s3fs under segpipe's retry policy (:mod:`segpipe.models.objectstore`).
    """
    from segpipe.models.objectstore import url_to_fs

    return url_to_fs(url, use_listings_cache=False)


def zarr_store(path: str, *, read_only: bool = False) -> Any:
    """What to open a Zarr array or group at ``path`` with: the path, or for ``s3://`` a store.

    An ``s3://`` store's s3fs is the one of :func:`filesystem` (the retry policy), in the
    asynchronous mode zarr drives it in; other URLs and local paths are given to zarr as they are.
    """
    if not path.lower().startswith(("s3://", "s3a://")):
        return path
    from zarr.storage import FsspecStore

    from segpipe.models.objectstore import url_to_fs

    fs, inner = url_to_fs(path, asynchronous=True, use_listings_cache=False)
    return FsspecStore(fs, read_only=read_only, path=inner)


def exists(path: str) -> bool:
    """Whether a file, folder or object (or an object prefix) exists at ``path``."""
    if not is_url(path):
        return Path(path).exists()
    fs, inner = filesystem(path)
    return bool(fs.exists(inner))


def makedirs(path: str) -> None:
    """Create the folder ``path`` (object stores have no folders: nothing to do).

    A folder created here is durable: its parent is fsynced (the parents it creates too).
    """
    if is_url(path):
        return
    folder = Path(path)
    missing = [p for p in (folder, *folder.parents) if not p.is_dir()]
    if not missing:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for created in missing:  # deepest first: each new name, in the folder that holds it
        fsync_path(created.parent)


def read_bytes(path: str) -> bytes:
    """The bytes at ``path``; :class:`FileNotFoundError` when there is none."""
    if not is_url(path):
        return Path(path).read_bytes()
    fs, inner = filesystem(path)
    data: bytes = fs.cat_file(inner)
    return data


def open_binary(path: str, block_size: int = 1 << 18) -> BinaryIO:
    """``path`` opened for reading bytes: a local file, or an object read by range requests.

    Each read of an object fetches the bytes it asks for plus up to ``block_size`` bytes
    ahead, never the whole object: a TIFF's IFD costs one small request, a tile one request
    of about its own size.
    """
    if not is_url(path):
        return open(path, "rb")
    fs, inner = filesystem(path)
    handle: BinaryIO = fs.open(inner, "rb", block_size=block_size, cache_type="readahead")
    return handle


def read_text(path: str) -> str:
    """The UTF-8 text at ``path``; :class:`FileNotFoundError` when there is none."""
    return read_bytes(path).decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Replace the text at ``path`` atomically (readers see the old text or the new).

    Local: :func:`~segpipe.models.foundation.write_text_atomic`. URL: one PUT, which object
    stores apply whole or not at all.
    """
    if not is_url(path):
        write_text_atomic(path, text)
        return
    fs, inner = filesystem(path)
    fs.pipe_file(inner, text.encode("utf-8"))


def write_once(path: str, text: str) -> None:
    """Write ``text`` at ``path``, meant to be written once (a block marker).

    Local: written atomically (a rewrite replaces it). URL: a conditional PUT
    (``If-None-Match: *``); when the object is already there (the block was recomputed after its
    first result was lost) the first one is kept.
    """
    if not is_url(path):
        makedirs(parent(path))
        write_text_atomic(path, text)
        return
    fs, inner = filesystem(path)
    with contextlib.suppress(FileExistsError):
        fs.pipe_file(inner, text.encode("utf-8"), mode="create")


def list_texts(folder: str) -> dict[str, str]:
    """{name: text} of the files directly in ``folder`` (hidden names and unreadable ones left out).

    A missing folder is empty. On an object store the objects are listed once (no cache) and
    fetched concurrently.
    """
    if not is_url(folder):
        return _local_texts(Path(folder))
    fs, inner = filesystem(folder)
    try:
        paths = [p for p in fs.find(inner) if not p.rsplit("/", 1)[-1].startswith(".")]
    except FileNotFoundError:
        return {}
    if not paths:
        return {}
    data: dict[str, Any] = fs.cat(paths, on_error="return")
    return {
        path.rsplit("/", 1)[-1]: blob.decode("utf-8")
        for path, blob in data.items()
        if isinstance(blob, bytes)
    }


def list_names(folder: str) -> list[str]:
    """The names of the files directly in ``folder`` (hidden ones left out); nothing is read.

    A missing folder is empty. On an object store the objects are listed once (no cache).
    """
    if is_url(folder):
        fs, inner = filesystem(folder)
        try:
            names = [p.rsplit("/", 1)[-1] for p in fs.find(inner)]
        except FileNotFoundError:
            return []
    else:
        try:
            names = [e.name for e in os.scandir(folder) if e.is_file()]
        except FileNotFoundError:
            return []
    return [n for n in names if not n.startswith(".")]


def _local_texts(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        try:
            out[entry.name] = Path(entry.path).read_text(encoding="utf-8")
        except (OSError, ValueError):
            continue
    return out


def remove(path: str) -> None:
    """Delete the file or object at ``path`` if it is there."""
    if not is_url(path):
        Path(path).unlink(missing_ok=True)
        return
    fs, inner = filesystem(path)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(inner)


def remove_tree(path: str) -> None:
    """Delete the folder ``path`` (on an object store: every object under the prefix)."""
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, inner = filesystem(path)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(inner.rstrip("/") + "/", recursive=True)


def local_scratch(key: str = "") -> Path:
    """A local folder for files staged before their upload (``$TMPDIR/segpipe-scratch``).

    With ``key`` (a work directory URL, say) a subfolder of its own, so that runs never share one.
    """
    folder = Path(tempfile.gettempdir()) / "segpipe-scratch"
    if key:
        folder = folder / hashlib.sha256(key.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def publish(path: str) -> Iterator[Path]:
    """Yield a local path to write the file ``path`` into; publish it when the body returns.

    Local: :func:`~segpipe.models.foundation.atomic_output` (renamed into place). URL: written on
    local scratch, then uploaded (multipart when large); the object appears at the key only
    when the upload completes, so no partial object is ever seen there. On error nothing is
    published.
    """
    if not is_url(path):
        with atomic_output(path) as partial:
            yield partial
        return
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=local_scratch()) as tmp:
        staged = Path(tmp) / basename(path)
        yield staged
        fs, inner = filesystem(path)
        fs.put_file(str(staged), inner, **_upload_options(fs))
