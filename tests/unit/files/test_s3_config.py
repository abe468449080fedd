"""``[files] s3``: its validation, where its credentials come from, and that they stay hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from yurt.config import CONFIG_ENV, S3Config, build_server_config
from yurt.errors import ConfigError
from yurt.files.location import (
    FILES_DIR_ENV,
    FILES_TOKEN_ENV,
    PAYLOAD_HEADER,
    from_environ,
    location_env,
    upload_credentials,
)


def server(s3: dict[str, Any], environ: dict[str, str] | None = None) -> S3Config:
    file = {"data_dir": "/tmp/yurt-test", "files": {"s3": s3}}
    config = build_server_config(file, {}, environ or {})
    assert config.files.s3 is not None
    return config.files.s3


def test_a_bucket_with_defaults() -> None:
    """A bucket alone is enough: AWS's default region, no prefix, boto3's addressing."""
    s3 = server({"bucket": "outputs"})
    assert (s3.endpoint_url, s3.region, s3.prefix, s3.addressing_style) == (
        None,
        "us-east-1",
        "",
        "auto",
    )
    assert s3.access_key_id is None and s3.secret_access_key is None


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("bucket", "Outputs", "is not a bucket name"),
        ("bucket", "ab", "is not a bucket name"),
        ("bucket", "a..b", "is not a bucket name"),
        ("endpoint_url", "127.0.0.1:9000", "is not an http(s) URL"),
        ("endpoint_url", "ftp://store", "is not an http(s) URL"),
        ("endpoint_url", "http://user:pw@store:9000", "without credentials"),
        ("endpoint_url", "http://store:9000/?x=1", "with no query"),
        ("prefix", "a/../b", "no '.' or '..' parts"),
        ("addressing_style", "dns", "files.s3.addressing_style"),
        ("region", "", "files.s3.region"),
    ],
)
def test_mistakes_name_the_field_and_the_rule(field: str, value: str, says: str) -> None:
    """Each bad value is a ConfigError naming ``files.s3.<field>`` and what is wanted."""
    with pytest.raises(ConfigError) as caught:
        server({"bucket": "outputs", field: value})
    assert f"files.s3.{field}" in str(caught.value) and says in str(caught.value)
    assert "pw" not in str(caught.value)


def test_the_prefix_is_normalised_to_a_folder() -> None:
    """Slashes around and doubled in the prefix are dropped; it ends in one slash."""
    assert server({"bucket": "outputs", "prefix": "/yurt//files/"}).prefix == "yurt/files/"
    assert server({"bucket": "outputs", "prefix": " / "}).prefix == ""


def test_keys_come_as_a_pair() -> None:
    """An access key id without its secret (or the reverse) is refused."""
    with pytest.raises(ConfigError, match="access_key_id and secret_access_key go together"):
        server({"bucket": "outputs", "access_key_id": "AKIA"})
    with pytest.raises(ConfigError, match="session_token needs"):
        server({"bucket": "outputs", "session_token": "t"})


def test_credentials_from_the_environment_unless_the_file_has_them() -> None:
    """AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN fill in a bucket given none;
    keys written for the bucket win, and nothing is read without ``[files] s3``."""
    env = {
        "AWS_ACCESS_KEY_ID": "env-id",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_SESSION_TOKEN": "env-session",
    }
    s3 = server({"bucket": "outputs"}, env)
    assert s3.access_key_id == "env-id"
    assert s3.secret_access_key is not None
    assert s3.secret_access_key.get_secret_value() == "env-secret"
    assert s3.session_token is not None
    own = server({"bucket": "outputs", "access_key_id": "id", "secret_access_key": "s"}, env)
    assert own.access_key_id == "id" and own.session_token is None
    plain = build_server_config({"data_dir": "/tmp/yurt-test"}, {}, env)
    assert plain.files.s3 is None
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} <= CONFIG_ENV


def test_credentials_never_show() -> None:
    """Neither the repr nor a dump of the configuration shows the key id or secret."""
    s3 = server(
        {"bucket": "outputs", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3cr3t"}
    )
    shown = repr(s3) + str(s3) + repr(s3.model_dump()) + s3.model_dump_json()
    assert "s3cr3t" not in shown
    assert "AKIAEXAMPLE" not in repr(s3) + str(s3)


def test_a_local_runner_of_a_bucket_store_gets_a_token_not_a_directory(tmp_path: Path) -> None:
    """Without a directory, the runner is told the upload token and shows it as a bearer
    token; a cluster runner's payload token comes first."""
    env = location_env(None, "http://127.0.0.1:9/", 60.0, "tok")
    assert FILES_DIR_ENV not in env and env[FILES_TOKEN_ENV] == "tok"
    where = from_environ(env)
    assert where is not None and where.directory is None
    assert upload_credentials(env) == {"Authorization": "Bearer tok"}
    cluster = env | {"YURT_PAYLOAD_TOKEN": "p", "YURT_PAYLOAD_SHA256": "ab" * 32}
    assert upload_credentials(cluster) == {"Authorization": "Bearer p", PAYLOAD_HEADER: "ab" * 32}
    assert FILES_TOKEN_ENV not in location_env(tmp_path, "http://127.0.0.1:9", 60.0)
