"""The file store on disk: capability records, shared blobs, expiry and the sweep."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from yurt.files.location import file_url, from_environ, location_env, parse_path, token_of
from yurt.files.store import FileStore, clean_name


def blobs(store: FileStore) -> list[Path]:
    return [p for p in store.blobs.rglob("*") if p.is_file()]


def test_equal_contents_share_a_blob_under_different_tokens(tmp_path: Path) -> None:
    """Two stores of the same bytes get two URLs (tokens) and one blob."""
    store = FileStore(tmp_path)
    a = store.put_bytes(b"same", "text/plain", "a.txt", None)
    b = store.put_bytes(b"same", "text/plain", "b.txt", None)
    assert a.token != b.token and a.sha256 == b.sha256
    assert len(blobs(store)) == 1
    assert store.get(a.token) == a and store.get(b.token) == b


def test_expired_records_are_unreadable_then_swept_with_their_blob(tmp_path: Path) -> None:
    """Past ``expires_at`` a record reads as missing; the sweep drops it and its lone blob."""
    store = FileStore(tmp_path)
    old = store.put_bytes(b"old", "text/plain", "old.txt", 10.0)
    keep = store.put_bytes(b"keep", "text/plain", "keep.txt", None)
    later = old.created + 11
    assert store.get(old.token, later) is None
    assert store.get(keep.token, later) == keep
    assert store.sweep(later) == 1
    assert [p.name for p in blobs(store)] == [keep.sha256]


def test_a_blob_named_by_a_live_record_survives_the_sweep(tmp_path: Path) -> None:
    """Only blobs no live record names go: a shared blob stays while one record lives."""
    store = FileStore(tmp_path)
    short = store.put_bytes(b"x", "text/plain", "a", 10.0)
    long = store.put_bytes(b"x", "text/plain", "b", 1000.0)
    store.sweep(short.created + 11)
    assert store.get(long.token, short.created + 11) == long


def test_unknown_or_malformed_tokens_read_as_missing(tmp_path: Path) -> None:
    """A token of the wrong shape never reaches the disk; an unknown one is None."""
    store = FileStore(tmp_path)
    assert store.get("../../etc/passwd") is None
    assert store.get("A" * 32) is None


def test_a_record_naming_a_path_instead_of_a_digest_is_damage(tmp_path: Path) -> None:
    """A record whose digest would lead out of the store, or whose type would split a header,
    reads as missing."""
    store = FileStore(tmp_path)
    good = store.put_bytes(b"x", "text/plain", "x.txt", None)
    store.write_record(replace(good, sha256="../../keys-key"))
    assert store.get(good.token) is None
    store.write_record(replace(good, content_type="text/plain\r\nX-Evil: 1"))
    assert store.get(good.token) is None
    store.write_record(good)
    assert store.get(good.token) == good


def test_names_lose_directories_and_control_characters() -> None:
    """A file name becomes one safe path segment."""
    assert clean_name("../../x/evil.png") == "evil.png"
    assert clean_name("a\nb.txt") == "ab.txt"
    assert clean_name("..") == "file.bin"
    assert clean_name(None, "upload.bin") == "upload.bin"


def test_file_urls_round_trip() -> None:
    """A file URL names its token; URLs of other hosts or shapes name none."""
    token = "T" * 32
    url = file_url("http://h:1/", token, "a b.png")
    assert url == f"http://h:1/files/{token}/a%20b.png"
    assert token_of("http://h:1", url) == token
    assert token_of("http://other:1", url) is None
    assert parse_path(f"/files/{token}") is None
    assert parse_path(f"/files/{token}/a%2Fb") is None
    assert parse_path("/files/short/a.png") is None


def test_runner_variables_round_trip(tmp_path: Path) -> None:
    """What the backend passes is what a runner reads back."""
    env = location_env(tmp_path, "http://h:1/", 60.0)
    where = from_environ(env)
    assert where is not None
    assert (where.directory, where.public_url, where.ttl) == (tmp_path, "http://h:1", 60.0)
    assert from_environ({}) is None
    no_ttl = from_environ(location_env(None, "http://h:1", None))
    assert no_ttl is not None and no_ttl.ttl is None and no_ttl.directory is None
