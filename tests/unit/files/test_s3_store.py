"""The store in a bucket, against moto's in-process S3: shared blobs, expiry, the sweep."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from yurt.config import S3Config
from yurt.errors import ConfigError
from yurt.files.s3 import S3Store, S3Unavailable, make_client

CONFIG = S3Config(
    bucket="outputs",
    region="us-east-1",
    prefix="yurt/files",
    access_key_id="moto-key",
    secret_access_key="moto-secret",
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[S3Store]:
    with mock_aws():
        made = S3Store(CONFIG, tmp_path / "tmp")
        made.client.create_bucket(Bucket="outputs")
        made.ensure()
        yield made


def keys(store: S3Store, under: str) -> list[str]:
    reply = store.client.list_objects_v2(Bucket="outputs", Prefix=f"yurt/files/{under}")
    return sorted(o["Key"] for o in reply.get("Contents", ()))


def test_equal_contents_share_a_blob_under_different_tokens(store: S3Store) -> None:
    """Two stores of the same bytes get two tokens, two records and one blob, under the
    prefix; the spool is left empty."""
    a = store.put_bytes(b"same", "text/plain", "a.txt", None)
    b = store.put_bytes(b"same", "text/plain", "b.txt", None)
    assert a.token != b.token and a.sha256 == b.sha256
    assert keys(store, "blobs/") == [f"yurt/files/blobs/{a.sha256}"]
    assert keys(store, "refs/") == sorted(f"yurt/files/refs/{t}.json" for t in (a.token, b.token))
    assert store.get(a.token) == a and store.get(b.token) == b
    assert store.read(a) == b"same"
    assert list(store.tmp.iterdir()) == []


def test_a_ranged_open_reads_only_that_span(store: S3Store, tmp_path: Path) -> None:
    """``open(first, last)`` gives exactly bytes first..last of a file sent from disk."""
    source = tmp_path / "clip.bin"
    source.write_bytes(bytes(range(256)) * 40)
    record = store.put_path(source, "video/mp4", "clip.mp4", None)
    body = store.open(record, 300, 309)
    assert body is not None
    try:
        assert body.read() == (bytes(range(256)) * 40)[300:310]
    finally:
        body.close()


def test_expired_records_are_unreadable_then_swept_with_their_blob(store: S3Store) -> None:
    """Past ``expires_at`` a record reads as missing; the sweep drops it and its lone blob,
    and keeps a blob a live record still names."""
    old = store.put_bytes(b"old", "text/plain", "old.txt", 10.0)
    short = store.put_bytes(b"kept", "text/plain", "a", 10.0)
    long = store.put_bytes(b"kept", "text/plain", "b", 1000.0)
    later = old.created + 11
    assert store.get(old.token, later) is None
    assert store.sweep(later) == 2
    assert keys(store, "blobs/") == [f"yurt/files/blobs/{long.sha256}"]
    assert keys(store, "refs/") == [f"yurt/files/refs/{long.token}.json"]
    assert store.get(short.token, later) is None and store.get(long.token, later) == long


def test_a_fresh_store_sweeps_what_an_earlier_one_wrote(store: S3Store, tmp_path: Path) -> None:
    """Records are read back from the bucket: a restarted server sweeps files it did not
    write this time, and deletes records that are damaged."""
    old = store.put_bytes(b"old", "text/plain", "old.txt", 10.0)
    store.client.put_object(
        Bucket="outputs", Key="yurt/files/refs/" + "D" * 32 + ".json", Body=b"{"
    )
    again = S3Store(CONFIG, tmp_path / "tmp2", client=store.client)
    assert again.get(old.token) == old
    assert again.sweep(old.created + 11) == 2
    assert keys(store, "") == []


def test_unknown_malformed_and_lost_files(store: S3Store) -> None:
    """A malformed token never reaches the bucket, an unknown one is None, and a record whose
    blob was deleted by hand opens as None."""
    assert store.get("../../etc/passwd") is None
    assert store.get("A" * 32) is None
    record = store.put_bytes(b"x", "text/plain", "x", None)
    store.client.delete_object(Bucket="outputs", Key=f"yurt/files/blobs/{record.sha256}")
    assert store.open(record) is None and not store.has_blob(record)


def test_a_failed_upload_keeps_nothing(store: S3Store) -> None:
    """When the bucket refuses the write, the error is S3Unavailable with S3's code and the
    spooled bytes are deleted."""
    store.client.delete_bucket(Bucket="outputs")
    with pytest.raises(S3Unavailable) as caught:
        store.put_bytes(b"lost", "text/plain", "l.txt", None)
    assert caught.value.code == "NoSuchBucket" and "outputs" in str(caught.value)
    assert list(store.tmp.iterdir()) == []
    with pytest.raises(S3Unavailable, match="no such bucket"):
        store.ensure()


def test_a_store_that_does_not_answer(tmp_path: Path) -> None:
    """A closed port is S3Unavailable with no code (nothing answered), naming the call but
    neither the endpoint's credentials nor the secret."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = CONFIG.model_copy(update={"endpoint_url": f"http://127.0.0.1:{port}"})
    store = S3Store(config, tmp_path / "tmp")
    with pytest.raises(S3Unavailable) as caught:
        store.get("A" * 32)
    assert caught.value.code is None and "GetObject" in str(caught.value)
    assert "moto-secret" not in str(caught.value)


def test_without_boto3_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server with [files] s3 but no boto3 is told to install yurt[s3]."""
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"yurt\[s3\]"):
        make_client(CONFIG)


class RefusingClient:
    """A client whose HeadObject finds nothing and whose managed upload S3 refuses, as boto3
    reports it (``S3UploadFailedError`` raised while handling S3's ``ClientError``)."""

    def head_object(self, **kw: object) -> None:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")

    def upload_file(self, *args: object, **kw: object) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError

        try:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")
        except ClientError as exc:
            raise S3UploadFailedError("Failed to upload: AccessDenied") from exc


def test_a_refused_transfer_is_s3unavailable_with_s3s_code(tmp_path: Path) -> None:
    """boto3's transfer error is mapped like the rest, with the code S3 answered, and the
    spooled bytes are deleted."""
    store = S3Store(CONFIG, tmp_path / "tmp", client=RefusingClient())
    with pytest.raises(S3Unavailable) as caught:
        store.put_bytes(b"big", "video/mp4", "v.mp4", None)
    assert caught.value.code == "AccessDenied" and "Upload on bucket outputs" in str(caught.value)
    assert list(store.tmp.iterdir()) == []
