"""Bad credentials, a missing bucket, a read-only bucket: exit 2, one ``error:`` line, no secret.

The server here checks signatures and policies (moto's IAM mode): a user allowed ``s3:*``, and a
bucket whose policy denies ``PutObject`` to everyone.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.storage.conftest import SECRET, segpipe, start_moto, stop

ARGS = ("--tile", "32", "--device", "cpu", "--workers", "0", "--quiet")
DENY_PUT = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                   "Resource": "arn:aws:s3:::read-only-bucket/*"}],
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, remote_assets):
    """A server that authenticates: the user's keys, a writable and a read-only bucket."""
    import boto3

    tmp = tmp_path_factory.mktemp("guarded")
    server = start_moto(tmp, INITIAL_NO_AUTH_ACTION_COUNT="9")
    anon = {"endpoint_url": server.endpoint, "region_name": "us-east-1",
            "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam, s3 = boto3.client("iam", **anon), boto3.client("s3", **anon)
    for bucket in ("work-bucket", "read-only-bucket"):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_policy(Bucket="read-only-bucket", Policy=json.dumps(DENY_PUT))
    iam.create_user(UserName="mapper")
    iam.put_user_policy(UserName="mapper", PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }))
    key = iam.create_access_key(UserName="mapper")["AccessKey"]
    user = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"])
    user.upload_file(str(remote_assets["scene"]), "work-bucket", "in/scene.tif")
    user.upload_file(str(remote_assets["model"]), "work-bucket", "models/unet.pt")
    yield server, key["AccessKeyId"], key["SecretAccessKey"], user
    stop(server.proc)


def _objects(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def _assert_clean_error(result, *words: str, secrets: tuple[str, ...]) -> str:
    """Exit 2, exactly one stderr line ``error: …`` holding ``words``, no traceback, no secret."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    for secret in secrets:
        assert secret not in result.stderr + result.stdout
    return lines[0]


def _run(server, tmp_path, key, secret, *, src, out, model="s3://work-bucket/models/unet.pt"):
    env = server.env(tmp_path / "home", key=key, secret=secret)
    return segpipe(["run", "--input", src, "--output", out, "--model", model, *ARGS], env,
                   tmp_path)


def test_wrong_credentials_give_one_clean_line(guarded, tmp_path):
    server, key, secret, user = guarded
    before = _objects(user, "work-bucket")
    result = _run(server, tmp_path, key, SECRET, src="s3://work-bucket/in/scene.tif",
                  out="s3://work-bucket/out/mask.tif")
    line = _assert_clean_error(result, "s3://work-bucket/in/scene.tif", "credentials",
                               "SignatureDoesNotMatch", secrets=(SECRET, secret))
    assert "--input" in line
    assert _objects(user, "work-bucket") == before  # nothing written


def test_an_unknown_access_key_gives_one_clean_line(guarded, tmp_path):
    server, _, secret, _user = guarded
    result = _run(server, tmp_path, "AKIAUNKNOWNKEY000000", SECRET,
                  src="s3://work-bucket/in/scene.tif", out="s3://work-bucket/out/mask.tif")
    _assert_clean_error(result, "s3://work-bucket/in/scene.tif", "InvalidAccessKeyId",
                        secrets=(SECRET, secret))


@pytest.mark.parametrize("which", ["input", "output"])
def test_a_missing_bucket_gives_one_clean_line(guarded, tmp_path, which):
    server, key, secret, _user = guarded
    src, out = "s3://work-bucket/in/scene.tif", "s3://work-bucket/out/mask.tif"
    if which == "input":
        src = "s3://no-such-bucket/in/scene.tif"
    else:
        out = "s3://no-such-bucket/out/mask.tif"
    result = _run(server, tmp_path, key, secret, src=src, out=out)
    _assert_clean_error(result, f"--{which} s3://no-such-bucket/", "no-such-bucket",
                        "does not exist", secrets=(secret,))


def test_a_read_only_bucket_refuses_the_output_before_any_block(guarded, tmp_path):
    server, key, secret, user = guarded
    before = _objects(user, "read-only-bucket")
    result = _run(server, tmp_path, key, secret, src="s3://work-bucket/in/scene.tif",
                  out="s3://read-only-bucket/labels/mask.tif")
    _assert_clean_error(result, "--output s3://read-only-bucket/labels/mask.tif", "denied",
                        secrets=(secret,))
    assert _objects(user, "read-only-bucket") == before == []
    assert not [k for k in _objects(user, "work-bucket") if "segpipe" in k]  # no work started


def test_a_presigned_url_is_refused_without_echoing_its_signature(guarded, tmp_path):
    server, key, secret, user = guarded
    url = user.generate_presigned_url(
        "get_object", Params={"Bucket": "work-bucket", "Key": "in/scene.tif"}, ExpiresIn=600
    )
    query = parse_qs(urlsplit(url).query)
    (signature,) = next(v for k, v in query.items() if "signature" in k.lower())
    result = _run(server, tmp_path, key, secret, src=url, out=str(tmp_path / "mask.tif"))
    _assert_clean_error(result, "presigned", secrets=(secret, signature))
    assert not (tmp_path / "mask.tif").exists()
