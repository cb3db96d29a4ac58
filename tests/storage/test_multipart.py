"""A large output goes up as a multipart upload and appears at its key only when complete."""

from __future__ import annotations

import hashlib
import os

import pytest

from segpipe.pipeline import storage

PART = 5 << 20  # S3's smallest part


def multipart_etag(data: bytes, part: int) -> str:
    """S3's ETag of an object uploaded in parts: md5 of the parts' md5s, then "-<parts>"."""
    digests = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def test_a_large_file_is_uploaded_in_parts_and_appears_whole(s3, s3_env, monkeypatch):
    monkeypatch.setattr(storage, "UPLOAD_PART_BYTES", PART)
    s3.bucket("parts")
    fs = s3.fs()
    data = os.urandom(2 * PART + (2 << 20))  # three parts: 5, 5 and 2 MiB
    with storage.publish("s3://parts/big.tif") as staged:
        staged.write_bytes(data)
        assert not fs.exists("parts/big.tif")  # nothing at the key while the file is written
    assert fs.cat_file("parts/big.tif") == data
    assert fs.info("parts/big.tif")["ETag"].strip('"') == multipart_etag(data, PART)


def test_a_small_file_is_one_put(s3, s3_env, monkeypatch):
    monkeypatch.setattr(storage, "UPLOAD_PART_BYTES", PART)
    s3.bucket("single")
    data = os.urandom(PART)  # under two parts: a single PUT, whose ETag is the plain md5
    with storage.publish("s3://single/small.tif") as staged:
        staged.write_bytes(data)
    assert s3.fs().info("single/small.tif")["ETag"].strip('"') == hashlib.md5(data).hexdigest()


def test_a_failed_write_publishes_nothing(s3, s3_env):
    s3.bucket("failed")
    with pytest.raises(RuntimeError), storage.publish("s3://failed/out.tif") as staged:
        staged.write_bytes(b"half a file")
        raise RuntimeError("the writer failed")
    assert not s3.fs().find("failed")
