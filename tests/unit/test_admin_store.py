"""The server's key file and app store: made once, kept, and an empty key refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from yurt.admin.store import AppStore
from yurt.errors import ConfigError
from yurt.privatefs import load_secret


def test_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    """The first call writes 64 hex digits readable by the owner only; later calls read them."""
    path = tmp_path / "d" / "server-secret"
    first = load_secret(path)
    assert len(first) == 64 and load_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["server-secret"]  # no temp file left


def test_empty_secret_is_refused(tmp_path: Path) -> None:
    """An empty key file (a crash while writing one) is an error, never an empty HMAC key."""
    path = tmp_path / "server-secret"
    path.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_secret(path)


def test_tokens_are_per_revision_and_per_server(tmp_path: Path) -> None:
    """Two payloads get two tokens; another server's key gives other tokens."""
    one = AppStore(tmp_path, b"k1")
    assert one.token("a" * 64) != one.token("b" * 64)
    assert one.token("a" * 64) != AppStore(tmp_path, b"k2").token("a" * 64)
    assert one.payload_path("../../etc/passwd") is None  # only digests name payloads


def test_the_same_payload_kept_twice_at_once(tmp_path: Path) -> None:
    """Two uploads of one payload racing each other both succeed and leave one whole file."""
    import threading

    import yurt
    from yurt.packaging import pack, read_header

    class Twice(yurt.App):
        @yurt.endpoint("/")
        def run(self) -> None:
            return None

    data = pack(Twice)
    store = AppStore(tmp_path, b"k")
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def put() -> None:
        start.wait()
        try:
            for _ in range(20):
                store.put_payload(data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    sha = read_header(data)[0].sha256
    path = store.payload_path(sha)
    assert path is not None and path.read_bytes() == data
    assert [p.name for p in (tmp_path / "payloads").iterdir()] == [path.name]
