"""One setting reaches botocore (s3fs) and GDAL: the variables, or a profile in ~/.aws/config."""

from __future__ import annotations

import pytest

from segpipe.pipeline.io.remote import AwsConfigSession, gdal_env, gdal_options


@pytest.fixture
def clean_aws(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return tmp_path


def test_aws_endpoint_url_becomes_gdal_s3_endpoint(clean_aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.example.org:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "shh")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert gdal_options() == {
        "AWS_S3_ENDPOINT": "minio.example.org:9000", "AWS_HTTPS": "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_REGION": "eu-central-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "shh",
    }


def test_a_profile_in_the_config_files_is_what_gdal_gets(clean_aws, monkeypatch):
    (clean_aws / "config").write_text(
        "[profile mapping]\nregion = us-west-2\nendpoint_url = http://127.0.0.1:9999\n"
    )
    (clean_aws / "credentials").write_text(
        "[mapping]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profile-secret\n"
        "aws_session_token = tok\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "mapping")
    options = gdal_options()
    assert options["AWS_S3_ENDPOINT"] == "127.0.0.1:9999" and options["AWS_HTTPS"] == "NO"
    assert options["AWS_REGION"] == "us-west-2"
    assert options["AWS_ACCESS_KEY_ID"] == "AKIAPROFILE"
    assert options["AWS_SESSION_TOKEN"] == "tok"


def test_aws_itself_needs_no_endpoint_and_no_credentials_means_unsigned(clean_aws):
    options = gdal_options()
    assert "AWS_S3_ENDPOINT" not in options and "AWS_REGION" not in options
    assert options["AWS_NO_SIGN_REQUEST"] == "YES"


def test_the_session_never_shows_its_secrets(clean_aws, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    session = AwsConfigSession(gdal_options())
    assert "very-secret" not in repr(session)
    assert session.get_credential_options()["AWS_SECRET_ACCESS_KEY"] == "very-secret"
    with gdal_env("s3://bucket/key.tif") as env:
        assert "very-secret" not in repr(env)
    with gdal_env("/local/file.tif") as env:  # local paths get no AWS environment
        assert env is None
