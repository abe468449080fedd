"""What yurt writes to disk stays its owner's: file modes, and no caller credential in the queue."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import yurt
from yurt.admin.store import AppStore
from yurt.errors import ConfigError
from yurt.packaging import pack
from yurt.privatefs import load_secret, open_private, private_dir, tighten
from yurt.queue.model import Job, Routing
from yurt.queue.store import QueueStore, without_credentials
from yurt.spec import build_spec


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that lets everyone read what is made, as some systems set it."""
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def shared(root: Path) -> list[str]:
    """What ``find root -perm /077`` lists."""
    found = [root] if mode(root) & 0o077 else []
    for top, dirs, files in os.walk(root):
        found += [Path(top, n) for n in (*dirs, *files) if mode(Path(top, n)) & 0o077]
    return [str(p) for p in found]


def test_private_dir_makes_every_missing_level_0700(tmp_path: Path, loose_umask: None) -> None:
    """Parents made on the way are 0700 too, and an existing wide directory is narrowed."""
    deep = private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(p) for p in (deep, deep.parent, deep.parent.parent)] == [0o700] * 3
    wide = tmp_path / "wide"
    wide.mkdir(mode=0o755)
    private_dir(wide)
    assert mode(wide) == 0o700


def test_a_directory_everyone_shares_is_refused_not_narrowed(tmp_path: Path) -> None:
    """A sticky world-writable directory (as /tmp is) is refused, its mode left alone."""
    shared_dir = tmp_path / "tmp"
    shared_dir.mkdir()
    shared_dir.chmod(0o1777)
    with pytest.raises(ConfigError, match="everyone shares"):
        private_dir(shared_dir)
    assert mode(shared_dir) == 0o1777


def test_open_private_makes_0600_and_narrows_an_old_file(tmp_path: Path, loose_umask: None) -> None:
    """A new file is 0600 whatever the umask; an old 0644 one loses the group's and others' bits."""
    with open_private(tmp_path / "new.log", "ab") as f:
        f.write(b"line\n")
    assert mode(tmp_path / "new.log") == 0o600
    old = tmp_path / "old.lock"
    old.write_text("x")
    old.chmod(0o644)
    with open_private(old, "a+") as f:
        f.write("y")
    assert mode(old) == 0o600 and old.read_text() == "xy"


def test_tighten_narrows_a_tree_an_older_yurt_left(tmp_path: Path, loose_umask: None) -> None:
    """Every directory and file under the root loses the group's and others' bits."""
    (tmp_path / "d" / "e").mkdir(parents=True, mode=0o777)
    (tmp_path / "d" / "f").write_text("x")
    (tmp_path / "d" / "e" / "g").write_text("y")
    assert shared(tmp_path / "d")
    tighten(tmp_path / "d")
    assert shared(tmp_path / "d") == []


def test_the_queue_database_and_its_wal_and_shm_are_0600(tmp_path: Path, loose_umask: None) -> None:
    """SQLite gives -wal and -shm the database file's mode: all three are the owner's only."""
    store = QueueStore(tmp_path / "data" / "queue.sqlite3")
    store.open()
    try:
        store.add(Job("r1", "o/a", "/", "", [], b"{}", Routing(), 1.0))
        names = sorted(p.name for p in (tmp_path / "data").iterdir())
        assert names == ["queue.sqlite3", "queue.sqlite3-shm", "queue.sqlite3-wal"]
        assert shared(tmp_path / "data") == []
    finally:
        store.close()


def test_the_admin_store_and_keys_are_0600(tmp_path: Path, loose_umask: None) -> None:
    """Kept payloads, deployments and the server's keys are the owner's only."""

    class Hello(yurt.App):
        @yurt.endpoint("/")
        def hi(self) -> dict[str, str]:
            return {}

    data = tmp_path / "data"
    store = AppStore(data, load_secret(data / "server-secret"))
    header = store.put_payload(pack(Hello))
    store.save("o/hello", build_spec(Hello), header.sha256, 1.0)
    assert len(list(data.rglob("*"))) == 6  # the key, two dirs, a payload, an owner, a spec
    assert shared(data) == []


def test_credentials_are_dropped_and_other_headers_kept() -> None:
    """Authorization, Cookie, X-Fal-Key and key-, token-, secret-like headers are not kept."""
    headers = [
        (b"Authorization", b"Key abc"),
        (b"proxy-authorization", b"Basic x"),
        (b"Cookie", b"session=1"),
        (b"X-Fal-Key", b"k"),
        (b"x-api-key", b"k"),
        (b"X-Auth-Token", b"t"),
        (b"X-Amz-Security-Token", b"t"),
        (b"X-Client-Secret", b"s"),
        (b"X-Password", b"p"),
        (b"X-Session-Id", b"s"),
        (b"X-Goog-Iap-Jwt-Assertion", b"j"),
        (b"Content-Type", b"application/json"),
        (b"X-Max-Tokens", b"256"),
        (b"X-Author", b"ada"),
        (b"Accept", b"*/*"),
        (b"x-fal-runner-hint", b"h"),
        (b"X-Custom", b"keep me"),
    ]
    assert without_credentials(headers) == [
        (b"Content-Type", b"application/json"),
        (b"X-Max-Tokens", b"256"),
        (b"X-Author", b"ada"),
        (b"Accept", b"*/*"),
        (b"x-fal-runner-hint", b"h"),
        (b"X-Custom", b"keep me"),
    ]
