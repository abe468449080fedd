"""The router's file routes: ``GET``/``HEAD /files/<token>/<name>`` and ``POST /files/upload``.

Reads are served from disk with ranges (aiohttp's ``FileResponse``: ``Range``, ``If-Range``,
``HEAD``, sendfile). An upload is streamed to a temporary file chunk by chunk, never held
whole, and answered with the file's JSON (``File``'s fields plus ``access_url``, the field
fal's storage answers with).

Access: a file URL is a capability (a random token), so reading needs no key. Uploads go
through ``authorize``: ``key_check`` asks for an API key whenever private apps would
(``yurt.access.keys_required``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from yurt.access import keys_required
from yurt.config import FilesConfig, RouterConfig
from yurt.files.location import FILES_PREFIX, UPLOAD_PATH, file_url, parse_path
from yurt.files.store import BlobWriter, FileStore, StoredFile, clean_name
from yurt.keys import KeyStore

log = structlog.get_logger("yurt.files")

# ``None`` lets the request in; a response refuses it (401/403 with the reason).
Authorize = Callable[[web.BaseRequest], Awaitable[web.StreamResponse | None]]
# fal-client's storage upload names the file in this header.
FILE_NAME_HEADERS = ("x-fal-file-name", "x-yurt-file-name")


async def allow_all(request: web.BaseRequest) -> None:
    """An upload check that lets everyone in."""
    return None


def key_check(keys: KeyStore, router: RouterConfig) -> Authorize:
    """Uploads need a live API key when calls to private apps do: once the server has a key,
    or beyond loopback unless it serves everyone (``--public``)."""

    async def authorize(request: web.BaseRequest) -> web.StreamResponse | None:
        if not keys_required(router.host, keys.any(), router.public):
            return None
        if keys.verify(request.headers.get("Authorization")) is not None:
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
        store: FileStore,
        config: FilesConfig,
        router: RouterConfig,
        authorize: Authorize = allow_all,
    ) -> None:
        self.store = store
        self.config = config
        self.router = router
        self.authorize = authorize
        self._sweeper: asyncio.Task[None] | None = None

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
        record = await asyncio.to_thread(self.store.get, token)
        if record is None:
            # Unknown and expired alike: a capability URL says nothing about what it was.
            return error(404, "not_found", "no such file, or it has expired")
        return self._file_response(record)

    def _file_response(self, record: StoredFile) -> web.StreamResponse:
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
        return web.FileResponse(self.store.blob_path(record.sha256), headers=headers)

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
        writer = await asyncio.to_thread(self.store.writer)
        try:
            refused = await self._receive(request, writer, limit)
        except BaseException:
            await asyncio.to_thread(writer.abort)
            raise
        if refused is not None:
            await asyncio.to_thread(writer.abort)
            return _closing(refused)
        content_type = request.headers.get("content-type") or "application/octet-stream"
        name = next((request.headers[h] for h in FILE_NAME_HEADERS if h in request.headers), "")
        record = await asyncio.to_thread(
            writer.commit, content_type, clean_name(name, "upload.bin"), self.config.ttl
        )
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
                    await asyncio.to_thread(writer.write, chunk)
                    deadline.reschedule(began + cfg.body_timeout + writer.size / cfg.min_body_rate)
        except TimeoutError:
            detail = f"the upload arrived slower than {cfg.min_body_rate:g} bytes/s"
            return error(408, "request_read_timeout", detail)
        if length is not None and writer.size < length:
            detail = f"the upload ended after {writer.size} of its {length} bytes"
            return error(400, "bad_request", detail)
        return None

    async def start(self) -> None:
        """Make the store and begin deleting expired files."""
        await asyncio.to_thread(self.store.ensure)
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        """Stop the sweeper."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep_forever(self) -> None:
        while True:
            try:
                dropped = await asyncio.to_thread(self.store.sweep)
                if dropped:
                    log.info("files_expired", count=dropped)
            except OSError as exc:
                log.warning("files_sweep_failed", error=str(exc))
            await asyncio.sleep(self.config.sweep_interval)


def build_files_api(
    data_dir: Path, config: FilesConfig, router: RouterConfig, keys: KeyStore
) -> FilesApi:
    """The file routes over the store in ``data_dir/files``, uploads checked against ``keys``."""
    return FilesApi(FileStore(store_dir(data_dir)), config, router, key_check(keys, router))


def store_dir(data_dir: Path) -> Path:
    """Where the file store lives in a data dir."""
    return data_dir / "files"


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
