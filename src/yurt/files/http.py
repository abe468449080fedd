"""The router's file routes: ``GET``/``HEAD /files/<token>/<name>`` and ``POST /files/upload``.

Reads are served from disk with ranges (aiohttp's ``FileResponse``: ``Range``, ``If-Range``,
``HEAD``, sendfile), or streamed from the bucket when the store is in S3 (``yurt.files.s3``:
a ranged GetObject for a ``Range``). An upload is streamed to a temporary file chunk by chunk,
never held whole, and answered with the file's JSON (``File``'s fields plus ``access_url``,
the field fal's storage answers with).

Access: a file URL is a capability (a random token), so reading needs no key. Uploads go
through ``authorize``: ``key_check`` asks for an API key whenever private apps would
(``yurt.access.keys_required``). Local runners of a store in S3 post their outputs here too,
with the upload token ``FilesApi.runner_env`` gives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiohttp import web

from yurt.access import keys_required
from yurt.config import FilesConfig, RouterConfig
from yurt.errors import ConfigError
from yurt.files.location import (
    FILES_PREFIX,
    LIFECYCLE_HEADER,
    PAYLOAD_HEADER,
    UPLOAD_PATH,
    file_url,
    location_env,
    parse_path,
    requested_ttl,
)
from yurt.files.ranges import plan
from yurt.files.s3 import S3Store, S3Unavailable
from yurt.files.store import CHUNK, BlobWriter, FileStore, StoredFile, clean_name
from yurt.keys import KeyStore

log = structlog.get_logger("yurt.files")

T = TypeVar("T")
# Threads for the store's blocking calls: reads of a bucket wait on the network chunk by
# chunk, and must not take the threads the rest of the router runs its blocking work in.
IO_THREADS = 16

# ``None`` lets the request in; a response refuses it (401/403 with the reason).
Authorize = Callable[[web.BaseRequest], Awaitable[web.StreamResponse | None]]
# Whether a token is the payload token of a digest: ``(sha256, token) -> bool``.
PayloadCheck = Callable[[str, str], bool]
# fal-client's storage upload names the file in this header.
FILE_NAME_HEADERS = ("x-fal-file-name", "x-yurt-file-name")


async def allow_all(request: web.BaseRequest) -> None:
    """An upload check that lets everyone in."""
    return None


def key_check(
    keys: KeyStore,
    router: RouterConfig,
    payload_token_ok: PayloadCheck | None = None,
    upload_token: str | None = None,
) -> Authorize:
    """Uploads need a live API key when calls to private apps do: once the server has a key,
    or beyond loopback unless it serves everyone (``--public``). A runner on a cluster shows
    its payload's token instead (``Authorization: Bearer``, with ``X-Yurt-Payload-Sha256``); a
    local runner of a store in S3, ``upload_token`` (``Authorization: Bearer``)."""

    async def authorize(request: web.BaseRequest) -> web.StreamResponse | None:
        if not keys_required(router.host, keys.any(), router.public):
            return None
        authorization = request.headers.get("Authorization")
        if keys.verify(authorization) is not None:
            return None
        sha256 = request.headers.get(PAYLOAD_HEADER, "")
        scheme, _, token = (authorization or "").partition(" ")
        bearer = scheme.lower() == "bearer"
        if bearer and payload_token_ok and sha256 and payload_token_ok(sha256, token):
            return None
        if bearer and upload_token and not sha256 and hmac.compare_digest(token, upload_token):
            return None
        detail = (
            "uploads need an API key: send `Authorization: Key <id>:<secret>`; "
            "`yurt keys create` makes one"
        )
        return error(401, "unauthorized", detail)

    return authorize


def error(status: int, error_type: str, detail: str) -> web.Response:
    """A JSON error in the router's shape."""
    body = json.dumps({"detail": detail, "error_type": error_type}).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def describe(record: StoredFile, public_url: str) -> dict[str, object]:
    """The JSON of a stored file: ``File``'s fields, plus ``access_url`` as fal's storage has it.
    Pure."""
    url = file_url(public_url, record.token, record.file_name)
    return {
        "url": url,
        "access_url": url,
        "content_type": record.content_type,
        "file_name": record.file_name,
        "file_size": record.file_size,
    }


class FilesApi:
    """Serves the store under ``/files/`` and deletes expired files every ``sweep_interval``."""

    def __init__(
        self,
        store: FileStore | S3Store,
        config: FilesConfig,
        router: RouterConfig,
        authorize: Authorize = allow_all,
        upload_token: str | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.router = router
        self.authorize = authorize
        self.upload_token = upload_token
        self._sweeper: asyncio.Task[None] | None = None
        self._threads = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="yurt-files")

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the store's own threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(fn, *args))

    def runner_env(self, public_url: str) -> dict[str, str]:
        """What tells a local runner where the store is (``yurt.files.location``): the store's
        directory, or for a store in S3 the upload token to post its outputs with (bucket
        credentials stay in this process)."""
        if isinstance(self.store, FileStore):
            return location_env(self.store.root, public_url, self.config.ttl)
        return location_env(None, public_url, self.config.ttl, self.upload_token)

    @staticmethod
    def serves(path: str) -> bool:
        """Whether ``path`` is one of these routes."""
        return path.startswith(FILES_PREFIX)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one request under ``/files/``."""
        if request.path == UPLOAD_PATH:
            if request.method != "POST":
                return error(405, "method_not_allowed", f"{request.method} {UPLOAD_PATH}: use POST")
            return await self.upload(request)
        token = parse_path(request.path)
        if token is None:
            return error(404, "not_found", f"no file at {request.path}")
        if request.method not in ("GET", "HEAD"):
            return error(405, "method_not_allowed", f"{request.method}: files take GET or HEAD")
        try:
            record = await self._io(self.store.get, token)
            if record is None:
                # Unknown and expired alike: a capability URL says nothing about what it was.
                return error(404, "not_found", "no such file, or it has expired")
            if isinstance(self.store, FileStore):
                return web.FileResponse(
                    self.store.blob_path(record.sha256), headers=self._headers(record)
                )
            return await self._stream(request, self.store, record)
        except S3Unavailable as exc:
            return unavailable(exc)

    def _headers(self, record: StoredFile) -> dict[str, str]:
        headers = {
            "Content-Type": record.content_type,
            "Content-Disposition": f"inline; filename*=UTF-8''{_rfc5987(record.file_name)}",
            "X-Content-Type-Options": "nosniff",
            # An uploaded page (text/html, SVG) opened from this origin must not run as it:
            # sandboxed, it is an origin of its own with no scripts.
            "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; "
            "media-src 'self'",
            "Cache-Control": f"private, max-age={_max_age(record)}",
        }
        return headers

    async def _stream(
        self, request: web.BaseRequest, store: S3Store, record: StoredFile
    ) -> web.StreamResponse:
        """``record`` from the bucket, the span a ``Range`` asks for (a ranged GetObject)."""
        etag, modified = f'"{record.sha256}"', formatdate(record.created, usegmt=True)
        headers = self._headers(record) | {
            "ETag": etag,
            "Last-Modified": modified,
            "Accept-Ranges": "bytes",
        }
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        span = plan(
            request.headers.get("Range"),
            request.headers.get("If-Range"),
            record.file_size,
            {etag, modified},
        )
        if span.status == 416:
            refused = error(416, "range_not_satisfiable", f"the file has {record.file_size} bytes")
            refused.headers["Content-Range"] = f"bytes */{record.file_size}"
            return refused
        if span.status == 206:
            headers["Content-Range"] = f"bytes {span.first}-{span.last}/{record.file_size}"
        if request.method == "HEAD" or span.length == 0:
            if not await self._io(store.has_blob, record):
                return error(404, "not_found", "no such file, or it has expired")
            headers["Content-Length"] = str(span.length)
            return web.Response(status=span.status, headers=headers)
        last = span.last if span.status == 206 else None  # all: no Range asked of S3
        body = await self._io(store.open, record, span.first, last)
        if body is None:
            return error(404, "not_found", "no such file, or it has expired")
        try:
            response = web.StreamResponse(status=span.status, headers=headers)
            response.content_length = span.length
            await response.prepare(request)
            while chunk := await self._io(body.read, CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
        except S3Unavailable as exc:
            # The head is sent: no error reply can follow; the connection must end short.
            log.warning("files_stream_cut", error=str(exc))
            raise ConnectionResetError("the file store stopped answering mid-file") from exc
        finally:
            body.close()

    def public_url(self, request: web.BaseRequest) -> str:
        """The base of the URLs handed out: configured, else this request's scheme and Host."""
        return self.router.public_url or f"{request.scheme}://{request.host}"

    async def upload(self, request: web.BaseRequest) -> web.StreamResponse:
        """Stream the body into the store and answer with the file's JSON."""
        if (refusal := await self.authorize(request)) is not None:
            return refusal
        limit = self.config.max_upload_size
        if request.content_length is not None and request.content_length > limit:
            return _closing(error(413, "payload_too_large", f"uploads are at most {limit} bytes"))
        if request.headers.get("expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)
        writer = await self._io(self.store.writer)
        try:
            refused = await self._receive(request, writer, limit)
        except BaseException:
            await self._io(writer.abort)
            raise
        if refused is not None:
            await self._io(writer.abort)
            return _closing(refused)
        content_type = request.headers.get("content-type") or "application/octet-stream"
        name = next((request.headers[h] for h in FILE_NAME_HEADERS if h in request.headers), "")
        ttl = requested_ttl(self.config.ttl, request.headers.get(LIFECYCLE_HEADER))
        try:
            record = await self._io(
                writer.commit, content_type, clean_name(name, "upload.bin"), ttl
            )
        except S3Unavailable as exc:
            return unavailable(exc)
        log.info("file_uploaded", size=record.file_size, content_type=content_type)
        body = json.dumps(describe(record, self.public_url(request))).encode()
        return web.Response(status=200, body=body, content_type="application/json")

    async def _receive(
        self, request: web.BaseRequest, writer: BlobWriter, limit: int
    ) -> web.Response | None:
        """Write the body through ``writer``; an error reply if it is too large, too slow or
        cut short. The router's slow-client rule: each byte pushes the deadline back by
        1/min_body_rate seconds."""
        cfg = self.router
        length = request.content_length
        began = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout_at(began + cfg.body_timeout) as deadline:
                while chunk := await request.content.readany():
                    if writer.size + len(chunk) > limit:
                        return error(413, "payload_too_large", f"uploads are at most {limit} bytes")
                    await self._io(writer.write, chunk)
                    deadline.reschedule(began + cfg.body_timeout + writer.size / cfg.min_body_rate)
        except TimeoutError:
            detail = f"the upload arrived slower than {cfg.min_body_rate:g} bytes/s"
            return error(408, "request_read_timeout", detail)
        if length is not None and writer.size < length:
            detail = f"the upload ended after {writer.size} of its {length} bytes"
            return error(400, "bad_request", detail)
        return None

    async def start(self) -> None:
        """Make the store and begin deleting expired files. A bucket that answers with a
        refusal (missing, forbidden) is a ``ConfigError``; one that does not answer is logged,
        and its files answer 503 until it does."""
        try:
            await self._io(self.store.ensure)
        except S3Unavailable as exc:
            if exc.code is not None:
                raise ConfigError(
                    f"[files] s3: {exc}; check bucket, endpoint_url, region and credentials"
                ) from exc
            log.warning("files_store_unavailable", error=str(exc))
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        """Stop the sweeper and the store's threads."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                dropped = await self._io(self.store.sweep)
                if dropped:
                    log.info("files_expired", count=dropped)
            except OSError as exc:
                log.warning("files_sweep_failed", error=str(exc))
            await asyncio.sleep(self.config.sweep_interval)


def build_files_api(
    data_dir: Path,
    config: FilesConfig,
    router: RouterConfig,
    keys: KeyStore,
    payload_token_ok: PayloadCheck | None = None,
) -> FilesApi:
    """The file routes over the store in ``data_dir/files``, or in the bucket of ``[files]
    s3``; uploads checked against ``keys`` and runners' payload or upload tokens."""
    if config.s3 is None:
        authorize = key_check(keys, router, payload_token_ok)
        return FilesApi(FileStore(store_dir(data_dir)), config, router, authorize)
    store = S3Store(config.s3, store_dir(data_dir) / "tmp")
    upload_token = secrets.token_urlsafe(32)
    authorize = key_check(keys, router, payload_token_ok, upload_token)
    return FilesApi(store, config, router, authorize, upload_token)


def store_dir(data_dir: Path) -> Path:
    """Where the file store lives in a data dir."""
    return data_dir / "files"


def unavailable(exc: S3Unavailable) -> web.Response:
    """The reply when the bucket failed: 503, logged with S3's error code."""
    log.warning("files_store_unavailable", error=str(exc))
    return error(503, "file_store_unavailable", "the file store did not answer; try again")


def _closing(response: web.Response) -> web.Response:
    # The rest of an unread body would be taken for the next request.
    response.force_close()
    return response


def _max_age(record: StoredFile) -> int:
    if record.expires_at is None:
        return 365 * 24 * 3600
    return max(0, int(record.expires_at - time.time()))


def _rfc5987(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
