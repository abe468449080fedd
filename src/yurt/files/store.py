"""Files on disk: content-addressed blobs, and one capability record per URL handed out.

Layout under the store's directory (``DATA_DIR/files`` on the local backend)::

    blobs/<sha256[:2]>/<sha256>   the bytes, once per content
    refs/<token>.json             one file URL: its blob, content type, name, size, expiry
    tmp/                          bytes being written (an upload, an output)
    .lock                         writers hold it shared, the sweeper exclusive

A URL names a random token, not the digest: knowing a file's content does not find its URL,
and each URL expires on its own while equal outputs share one blob. Writers (runners, the
router's upload route) and the sweeper are separate processes on one disk, so the order is
fixed: hash into ``tmp/``, then under the shared lock put the blob in place and write the
record; the sweeper, under the exclusive lock, drops expired records and then every blob no
record names.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from yurt.files.location import TOKEN

# Stray temporary files older than this are left by a process that died mid-write.
STALE_TMP_S = 24 * 3600.0
CHUNK = 1024 * 1024
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoredFile:
    """One file URL's record."""

    token: str
    sha256: str
    content_type: str
    file_name: str
    file_size: int
    created: float
    expires_at: float | None

    def expired(self, now: float) -> bool:
        """Whether the file is gone for readers at ``now``."""
        return self.expires_at is not None and now >= self.expires_at


def clean_name(name: str | None, default: str = "file.bin") -> str:
    """A file name fit for a URL's last part and a download: no directories, no control
    characters, at most 200 characters. Pure."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    if base in ("", ".", ".."):
        return default
    return base[-200:]


# Puts a finished temporary file in place as ``record``'s blob and keeps the record.
Place = Callable[[Path, "StoredFile"], None]


class BlobWriter:
    """Bytes being written into a store: ``write`` chunks, then ``commit`` or ``abort``. They
    are hashed into a temporary file in ``tmp``; ``commit`` hands it to ``place``."""

    def __init__(self, tmp: Path, place: Place) -> None:
        self.place = place
        fd, name = _mkstemp(tmp)
        self.path = Path(name)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``."""
        self.file.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)

    def commit(
        self, content_type: str, file_name: str, ttl: float | None, now: float | None = None
    ) -> StoredFile:
        """Put the bytes in place under a new token that expires ``ttl`` seconds from ``now``."""
        self.file.close()
        now = time.time() if now is None else now
        record = StoredFile(
            token=secrets.token_urlsafe(24),
            sha256=self.hash.hexdigest(),
            content_type=content_type,
            file_name=clean_name(file_name),
            file_size=self.size,
            created=now,
            expires_at=None if ttl is None else now + ttl,
        )
        try:
            self.place(self.path, record)
        finally:
            self.path.unlink(missing_ok=True)
        return record

    def abort(self) -> None:
        """Drop what was written."""
        self.file.close()
        self.path.unlink(missing_ok=True)


class Writes:
    """``put_bytes`` and ``put_path`` over a store's ``writer``."""

    def writer(self) -> BlobWriter:
        """A writer of one new file."""
        raise NotImplementedError

    def put_bytes(
        self, data: bytes, content_type: str, file_name: str, ttl: float | None
    ) -> StoredFile:
        """Store ``data``."""
        writer = self.writer()
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return writer.commit(content_type, file_name, ttl)

    def put_path(
        self, path: Path, content_type: str, file_name: str, ttl: float | None
    ) -> StoredFile:
        """Store a copy of the file at ``path``, read chunk by chunk."""
        writer = self.writer()
        try:
            with path.open("rb") as src:
                while chunk := src.read(CHUNK):
                    writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.commit(content_type, file_name, ttl)


def parse_record(data: bytes) -> StoredFile | None:
    """The record in ``data``, or None if it is damaged. A digest that is not 64 hex digits,
    or a type with control characters, is damage: the digest becomes a path (or a key) and
    the type a header. Pure."""
    try:
        fields: Any = json.loads(data)
        record = StoredFile(**fields)
    except (ValueError, TypeError):
        return None
    if not SHA256.fullmatch(str(record.sha256)) or not str(record.content_type).isprintable():
        return None
    return record


def record_bytes(record: StoredFile) -> bytes:
    """``record`` as ``parse_record`` reads it. Pure."""
    return json.dumps(asdict(record)).encode()


class FileStore(Writes):
    """The store in ``root``; every method is blocking file I/O (the router calls them in a
    thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.refs = root / "refs"
        self.tmp = root / "tmp"

    def ensure(self) -> None:
        """Make the store's directories, private to their owner, if they are missing."""
        for d in (self.root, self.blobs, self.refs, self.tmp):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def blob_path(self, sha256: str) -> Path:
        """Where the blob of ``sha256`` lives."""
        return self.blobs / sha256[:2] / sha256

    def writer(self) -> BlobWriter:
        """A writer of one new file."""
        self.ensure()
        return BlobWriter(self.tmp, self.place)

    def place(self, path: Path, record: StoredFile) -> None:
        """Move the finished file ``path`` in as ``record``'s blob (unless it is there already)
        and write the record, holding the lock shared."""
        with self.locked(exclusive=False):
            blob = self.blob_path(record.sha256)
            if not blob.exists():
                blob.parent.mkdir(mode=0o700, exist_ok=True)
                os.replace(path, blob)
            self.write_record(record)

    def get(self, token: str, now: float | None = None) -> StoredFile | None:
        """The live record of ``token``; None when unknown, damaged, expired or its blob gone."""
        if not TOKEN.fullmatch(token):
            return None
        record = self.read_record(self.refs / f"{token}.json")
        now = time.time() if now is None else now
        if record is None or record.expired(now):
            return None
        if not self.blob_path(record.sha256).is_file():
            return None
        return record

    def open(self, record: StoredFile) -> IO[bytes]:
        """The bytes of ``record``, to read."""
        return self.blob_path(record.sha256).open("rb")

    def write_record(self, record: StoredFile) -> None:
        """Write ``record`` whole or not at all."""
        fd, name = _mkstemp(self.tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(record_bytes(record))
        os.replace(name, self.refs / f"{record.token}.json")

    @staticmethod
    def read_record(path: Path) -> StoredFile | None:
        """The record in ``path``, or None if it is missing or damaged (``parse_record``)."""
        try:
            return parse_record(path.read_bytes())
        except OSError:
            return None

    @contextlib.contextmanager
    def locked(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the store's lock (``flock``: it binds every process on this machine)."""
        self.ensure()
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def sweep(self, now: float | None = None) -> int:
        """Delete expired records, the blobs no record names, and stale temporary files;
        returns how many records went."""
        now = time.time() if now is None else now
        dropped = 0
        with self.locked(exclusive=True):
            live: set[str] = set()
            for path in self.refs.glob("*.json"):
                record = self.read_record(path)
                if record is None or record.expired(now):
                    path.unlink(missing_ok=True)
                    dropped += 1
                else:
                    live.add(record.sha256)
            for blob in self.blobs.glob("*/*"):
                if blob.name not in live:
                    blob.unlink(missing_ok=True)
        drop_stale(self.tmp, now)
        return dropped


def drop_stale(tmp: Path, now: float) -> None:
    """Delete the temporary files in ``tmp`` a process that died mid-write left."""
    with contextlib.suppress(FileNotFoundError):
        for path in tmp.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < now - STALE_TMP_S:
                    path.unlink()


def _mkstemp(directory: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(dir=directory, prefix=".w")
