"""Files in an S3-compatible bucket (``[files] s3 = {...}``), through boto3.

The same shape as the store on disk (``yurt.files.store``), under the configured prefix::

    blobs/<sha256>          the bytes, once per content
    refs/<token>.json       one file URL: its blob, content type, name, size, expiry

Bytes are hashed into a temporary file on the server's disk as they arrive (a body is never
held whole), then sent with boto3's managed transfer (multipart past 8 MiB, from the file).
Only the router's process writes here: runners post their outputs to ``/files/upload``, so
no bucket credential ever reaches a runner. The sweep deletes a blob only when no live record
names it and no commit in this process is writing one that does (the digests in flight are
kept under a lock the deletion holds); across processes nothing excludes them, so a bucket
prefix belongs to one server, as a data dir does.

boto3 is imported when a store is made, so a server without ``[files] s3`` never loads it.
Every boto3 and botocore error leaves this module as ``S3Unavailable`` (an ``OSError``), with
the operation and S3's error code, never a credential.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from yurt.config import S3Config
from yurt.errors import ConfigError
from yurt.files.location import TOKEN
from yurt.files.store import (
    BlobWriter,
    StoredFile,
    Writes,
    drop_stale,
    parse_record,
    record_bytes,
)

MIB = 1024 * 1024
# S3 answers these codes for a key that is not there (HEAD has no body, so only the status).
_MISSING = frozenset(("NoSuchKey", "NotFound", "404"))
# DeleteObjects takes at most 1000 keys a call.
_DELETE_BATCH = 1000


class S3Unavailable(OSError):
    """A call to the bucket failed; the message names the call and S3's error code (``code``,
    None when no answer came)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Body(Protocol):
    """The bytes of a GetObject, read in chunks."""

    def read(self, amt: int | None = None) -> bytes: ...

    def close(self) -> None: ...


def make_client(config: S3Config) -> Any:
    """A boto3 S3 client for ``config``; ``ConfigError`` naming the extra when boto3 is
    missing."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ConfigError(
            "[files] s3 needs boto3, which is not installed: pip install 'yurt[s3]'"
        ) from exc
    secret = config.secret_access_key
    session = config.session_token
    return boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        aws_session_token=session.get_secret_value() if session else None,
        config=Config(
            s3={"addressing_style": config.addressing_style},
            retries={"mode": "standard", "max_attempts": 3},
            # boto3 1.36 began sending CRC checksums on every upload, which several
            # S3-compatible stores refuse; only where the API requires one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


class S3Store(Writes):
    """The store in ``config``'s bucket, spooling writes through ``tmp`` on this machine.
    Every method is blocking I/O (the router calls them in a thread)."""

    def __init__(self, config: S3Config, tmp: Path, client: Any | None = None) -> None:
        self.config = config
        self.bucket = config.bucket
        self.tmp = tmp
        self.client = make_client(config) if client is None else client
        # What the sweep knows of each record (they never change): token -> (sha256, expiry).
        self._known: dict[str, tuple[str, float | None]] = {}
        # Digests being committed; the sweep deletes blobs holding the lock, commits add
        # theirs under it before they look for their blob.
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the prefix."""
        return self.config.prefix + "/".join(parts)

    def blob_key(self, sha256: str) -> str:
        """The key of the blob of ``sha256``."""
        return self.key("blobs", sha256)

    def ensure(self) -> None:
        """Make the spool directory, and check the bucket answers."""
        self.tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._call("HeadBucket", self.client.head_bucket, Bucket=self.bucket)
        except _Missing as exc:
            raise S3Unavailable(
                f"HeadBucket on bucket {self.bucket}: no such bucket", "404"
            ) from exc

    def writer(self) -> BlobWriter:
        """A writer of one new file."""
        self.tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        return BlobWriter(self.tmp, self.place)

    def place(self, path: Path, record: StoredFile) -> None:
        """Upload ``path`` as ``record``'s blob (unless the bucket has it) and put the record."""
        from boto3.s3.transfer import TransferConfig

        blob = self.blob_key(record.sha256)
        committed = False
        with self._lock:
            self._pending[record.sha256] += 1
        try:
            if self._head(blob) is None:
                transfer = TransferConfig(multipart_chunksize=8 * MIB, max_concurrency=4)
                send = self.client.upload_file
                self._call("Upload", send, str(path), self.bucket, blob, Config=transfer)
            self._call(
                "PutObject",
                self.client.put_object,
                Bucket=self.bucket,
                Key=self.key("refs", f"{record.token}.json"),
                Body=record_bytes(record),
                ContentType="application/json",
            )
            committed = True
        finally:
            with self._lock:
                if committed:
                    self._known[record.token] = (record.sha256, record.expires_at)
                self._pending[record.sha256] -= 1
                if not self._pending[record.sha256]:
                    del self._pending[record.sha256]

    def get(self, token: str, now: float | None = None) -> StoredFile | None:
        """The live record of ``token``; None when unknown, damaged or expired."""
        if not TOKEN.fullmatch(token):
            return None
        record = self._record(self.key("refs", f"{token}.json"))
        now = time.time() if now is None else now
        if record is None or record.expired(now):
            return None
        return record

    def has_blob(self, record: StoredFile) -> bool:
        """Whether the bytes of ``record`` are in the bucket."""
        return self._head(self.blob_key(record.sha256)) is not None

    def open(self, record: StoredFile, first: int = 0, last: int | None = None) -> Body | None:
        """Bytes ``first`` to ``last`` (inclusive; None: to the end) of ``record``, to read;
        None when its blob is gone."""
        ranged = {"Range": f"bytes={first}-{'' if last is None else last}"}
        if first == 0 and last is None:
            ranged = {}
        try:
            reply = self._call(
                "GetObject",
                self.client.get_object,
                Bucket=self.bucket,
                Key=self.blob_key(record.sha256),
                **ranged,
            )
        except _Missing:
            return None
        return _Mapped(self, reply["Body"])

    def read(self, record: StoredFile) -> bytes | None:
        """All the bytes of ``record`` (for small files and tests); None when gone."""
        body = self.open(record)
        if body is None:
            return None
        try:
            return body.read()
        finally:
            body.close()

    def sweep(self, now: float | None = None) -> int:
        """Delete expired and damaged records, then every blob no live record names; returns
        how many records went."""
        now = time.time() if now is None else now
        doomed: list[str] = []
        for key in self._list(self.key("refs") + "/"):
            token = key.rsplit("/", 1)[-1].removesuffix(".json")
            with self._lock:
                known = self._known.get(token)
            if known is None:
                record = self._record(key)
                known = None if record is None else (record.sha256, record.expires_at)
            with self._lock:
                if known is None or (known[1] is not None and now >= known[1]):
                    doomed.append(key)
                    self._known.pop(token, None)
                else:
                    self._known[token] = known
        self._delete(doomed)
        blobs = list(self._list(self.key("blobs") + "/"))
        with self._lock:
            # A commit that began before this either is in _known or still _pending; one that
            # begins after it finds its blob gone and sends it again.
            live = set(self._pending) | {
                sha for sha, expires in self._known.values() if expires is None or now < expires
            }
            unnamed = [k for k in blobs if k.rsplit("/", 1)[-1] not in live]
            self._delete(unnamed)
        drop_stale(self.tmp, now)
        return len(doomed)

    # -- calls ---------------------------------------------------------------------------------

    def _record(self, key: str) -> StoredFile | None:
        try:
            reply = self._call("GetObject", self.client.get_object, Bucket=self.bucket, Key=key)
        except _Missing:
            return None
        body = reply["Body"]
        try:
            data = self._call("GetObject", body.read)
        finally:
            body.close()
        return parse_record(data)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            reply: dict[str, Any] = self._call(
                "HeadObject", self.client.head_object, Bucket=self.bucket, Key=key
            )
        except _Missing:
            return None
        return reply

    def _list(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        iterator = iter(pages)
        while True:
            page = self._call("ListObjectsV2", next, iterator, None)
            if page is None:
                return
            for item in page.get("Contents", ()):
                yield item["Key"]

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + _DELETE_BATCH]]
            reply = self._call(
                "DeleteObjects",
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            if errors := reply.get("Errors"):
                codes = sorted({str(e.get("Code")) for e in errors})
                message = f"DeleteObjects on bucket {self.bucket}: {len(errors)} failed {codes}"
                raise S3Unavailable(message, codes[0])

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with boto3's errors mapped: ``_Missing`` for a key that is
        not there, ``S3Unavailable`` for the rest."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise _Missing(code) from exc
            message = f"{what} on bucket {self.bucket}: {code or 'error'}"
            raise S3Unavailable(message, code or "error") from exc
        except (BotoCoreError, Boto3Error) as exc:
            # boto3's transfers wrap S3's answer: its code, when there was one, is the cause's.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError):
                code = str(cause.response.get("Error", {}).get("Code", "")) or "error"
                raise S3Unavailable(f"{what} on bucket {self.bucket}: {code}", code) from exc
            raise S3Unavailable(f"{what} on bucket {self.bucket}: {type(exc).__name__}") from exc


class _Mapped:
    """A GetObject body whose read errors leave as ``S3Unavailable``."""

    def __init__(self, store: S3Store, body: Body) -> None:
        self.store, self.body = store, body

    def read(self, amt: int | None = None) -> bytes:
        data: bytes = self.store._call("GetObject", self.body.read, amt)
        return data

    def close(self) -> None:
        self.body.close()


class _Missing(Exception):
    """The key asked for is not in the bucket."""
