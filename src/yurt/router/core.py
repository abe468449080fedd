"""The router's request core: a parsed request in; a reply, a stream or an upgrade out.

Both faces call it: the fast lane (``fastlane.py``) and the aiohttp face (``web.py``) read and
frame bytes, and decide nothing. A request is taken in two steps, because a face must know what
it has before it reads a body (to refuse it early, to answer ``Expect: 100-continue``):

- ``admit`` looks at the head and says what the request is: a sync run, a queue call, a refusal
  (a ``Reply``), or ``None`` for yurt's own routes under ``/_yurt/``, which only the aiohttp face
  serves;
- ``serve`` takes what ``admit`` gave and the body, and answers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from yurt.access import ANONYMOUS
from yurt.errors import RequestError
from yurt.openapi import document as openapi_document
from yurt.playground.routing import PAGE_METHODS, wants_page
from yurt.router.admitted import (
    UNKNOWN,
    Admitted,
    Answer,
    QueueCall,
    Stream,
    SyncRun,
    Unknown,
    Upgrade,
)
from yurt.router.dispatch import AppRoute, NoSlotInTime, Slot
from yurt.router.flight import forward
from yurt.router.http import (
    Reply,
    error_reply,
    forward_head,
    invalid_reply,
    json_reply,
    new_request_id,
)
from yurt.router.metrics import SYNC
from yurt.router.options import TIMEOUT_HEADERS, RoutingError, parse_start_timeout
from yurt.router.pool import BodyStream, UpstreamError, UpstreamResponse

# Re-exported: the router imports them from here.
from yurt.router.queueing import QueueEngine as QueueEngine
from yurt.router.queueing import QueueService as QueueService
from yurt.router.rules import direct_error, direct_status
from yurt.router.tunnel import Tunnel
from yurt.router.upgrade import open_tunnel

if TYPE_CHECKING:
    from yurt.router.server import Router

Header = tuple[bytes, bytes]
# Distinct endpoint paths admit remembers (more: it forgets them all and starts again).
MAX_KNOWN_PATHS = 4096


QUEUE_PREFIX = "/queue/"
PLATFORM_PREFIX = "/_yurt/"
OPENAPI = "/openapi.json"  # GET /{owner}/{app}/openapi.json: the app's document


class RequestCore:
    """Decides what each request is and answers it; the faces only frame bytes."""

    def __init__(self, router: Router) -> None:
        self.router = router
        # Paths admit has resolved to an app's endpoint, with the runner's target and the run
        # of a caller without a key or a timeout (one for all of them: nothing changes a run):
        # a POST to one of them skips the prefix checks and the parse. Checked against the
        # router's routes on each use, so a redeployed or removed app is never served from here.
        self._endpoints: dict[str, tuple[AppRoute, frozenset[str], bytes, SyncRun]] = {}
        # The headers of the last run ``forward`` sent, and the lines it forwarded of them.
        self.last_headers: tuple[Sequence[Header], bytes] = ((), b"")

    def admit(
        self,
        method: bytes,
        path: str,
        query: str,
        headers: Sequence[Header],
        scheme: str,
        host: str,
        timeout_header: Header | Unknown | None = UNKNOWN,
        authorization: bytes | Unknown | None = UNKNOWN,
        *,
        upgrade: bool = False,
    ) -> Admitted | Reply | None:
        """What a request is, from its head (``path`` decoded, ``query`` raw, ``host`` as the
        caller named it, empty if it did not).

        ``timeout_header`` is the caller's ``X-Fal-Request-Timeout`` (or its twin) where the
        face noted it while parsing (``None``: it sent none); ``UNKNOWN`` has it looked up in
        ``headers``; ``authorization`` likewise is its ``Authorization`` value. ``upgrade``: the
        request asks to switch protocols; only an app's websocket upgrade is the core's.
        """
        router = self.router
        if method == b"POST" and not upgrade and not query:
            known = self._endpoints.get(path)
            if known is not None:
                route, paths, target, anonymous = known
                # Still the app's route, and still its endpoints (a new revision may drop one).
                if router.routes.get(route.app_id) is route and route.paths is paths:
                    return self._sync_run(
                        route, target, headers, query, timeout_header, authorization, anonymous
                    )
        queue_api = router.queue_api
        if upgrade and (path.startswith((QUEUE_PREFIX, PLATFORM_PREFIX)) or method != b"GET"):
            return None
        if router.files is not None and router.files.serves(path):
            return None  # the file store's routes are the aiohttp face's
        if method == b"GET" and not upgrade and (doc := self._openapi(path, headers, query)):
            return doc
        if path.startswith(QUEUE_PREFIX) and queue_api is not None:
            if not host:
                host = f"{self.router.config.host}:{self.router.port}"
            caller = self.router.gate.caller(headers, authorization)
            return QueueCall(method, path, query, headers, b"", f"{scheme}://{host}", caller)
        if path.startswith(PLATFORM_PREFIX) or path in ("/tokens", "/tokens/"):
            return None  # the aiohttp face answers these (``web.py``, ``tokens.py``)
        if method in PAGE_METHODS and not upgrade and wants_page(path, headers, router.routes):
            return None  # a playground page (yurt.playground): the aiohttp face serves it
        resolved = self.router.resolve(path)
        if isinstance(resolved, Reply):
            return resolved
        route, endpoint = resolved
        target = endpoint.encode() + (b"?" + query.encode("latin-1") if query else b"")
        if method == b"POST" and not upgrade:
            if not query:
                if len(self._endpoints) >= MAX_KNOWN_PATHS:
                    self._endpoints.clear()
                self._endpoints[path] = (route, route.paths, target, SyncRun(route, target))
            return self._sync_run(route, target, headers, query, timeout_header, authorization)
        return self._not_post(route, target, method, path, query, headers, upgrade=upgrade)

    def _not_post(
        self,
        route: AppRoute,
        target: bytes,
        method: bytes,
        path: str,
        query: str,
        headers: Sequence[Header],
        *,
        upgrade: bool,
    ) -> Upgrade | Reply:
        """An app's path asked for with another method than POST: its websocket upgrade, once
        the caller is let in, or a 405."""
        checked = self.router.gate.check(route.spec.app_auth, headers, query, route.app_id)
        if isinstance(checked, Reply):
            return checked
        if upgrade:
            return Upgrade(route, target)
        detail = f"{method.decode('latin-1')} {path}: endpoints take POST"
        return error_reply(405, "method_not_allowed", detail)

    def _sync_run(
        self,
        route: AppRoute,
        target: bytes,
        headers: Sequence[Header],
        query: str,
        timeout_header: Header | Unknown | None,
        authorization: bytes | Unknown | None,
        anonymous: SyncRun | None = None,
    ) -> SyncRun | Reply:
        """A POST to an app's endpoint, its caller checked (``anonymous``: the run to give a
        caller without a key or a timeout)."""
        checked = self.router.gate.check(
            route.spec.app_auth, headers, query, route.app_id, given=authorization
        )
        if isinstance(checked, Reply):
            return checked
        if timeout_header is UNKNOWN:
            timeout_header = find_timeout_header(headers)
        if timeout_header is None and checked is ANONYMOUS and anonymous is not None:
            return anonymous
        run = SyncRun(route, target, caller=checked)
        if timeout_header is not None:
            name, value = timeout_header
            try:
                run.start_timeout = parse_start_timeout(
                    name.decode("latin-1"), value.decode("latin-1")
                )
            except RoutingError as exc:
                return invalid_reply(exc.detail())
        return run

    def _openapi(self, path: str, headers: Sequence[Header], query: str) -> Reply | None:
        """``GET /{owner}/{app}/openapi.json``: the app's OpenAPI document, from its spec alone
        (no runner needed), to whoever may call the app; None for any other path."""
        if not path.endswith(OPENAPI):
            return None
        route = self.router.routes.get(path.strip("/").rpartition("/")[0])
        if route is None:
            return None
        checked = self.router.gate.check(route.spec.app_auth, headers, query, route.app_id)
        if isinstance(checked, Reply):
            return checked
        return json_reply(openapi_document(route.spec))

    def too_large(self) -> RequestError:
        """The error for a body over the limit."""
        limit = self.router.config.max_body_size
        return RequestError(
            f"request body exceeds the router's limit of {limit} bytes",
            status=413,
            error_type="request_too_large",
        )

    def serve(
        self,
        admitted: Admitted,
        headers: Sequence[Header],
        body: bytes,
        on_sent: Callable[[], None] | None = None,
    ) -> Awaitable[Answer]:
        """Answer an admitted request; ``on_sent`` is called as a sync run leaves for a runner.

        Not a coroutine itself: the face awaits the sync run's own, one frame fewer on every
        request."""
        if isinstance(admitted, SyncRun):
            if admitted.caller.key is not None and self.router.gate.quotas_on:
                return self._counted(admitted, headers, body, on_sent)
            return self._sync(admitted, headers, body, on_sent, new_request_id())
        return self._serve_other(admitted, headers, body)

    # ``forward(run, headers, body, on_sent, land)``: a sync run sent from the fast lane's
    # callbacks when it needs no wait, answered through ``land`` (None); else the awaitable of
    # the task's way, nothing sent (``flight.py``). A method, so that a face only knows the core.
    forward = forward

    def sync_on(
        self,
        run: SyncRun,
        headers: Sequence[Header],
        body: bytes,
        request_id: str,
        slot: Slot,
    ) -> Awaitable[Answer]:
        """``serve`` for a sync run already past its quota and on ``slot``, taken for it (the
        fast lane's ``forward``, which found no idle connection to that runner)."""
        return self._sync(run, headers, body, None, request_id, slot)

    async def _serve_other(
        self, admitted: QueueCall | Upgrade, headers: Sequence[Header], body: bytes
    ) -> Answer:
        if isinstance(admitted, QueueCall):
            api = self.router.queue_api
            assert api is not None  # admit made a QueueCall only with a queue
            admitted.body = body
            return await api.serve(admitted)
        request_id = new_request_id()
        opened = await open_tunnel(self, admitted, headers, request_id.encode())
        return opened if isinstance(opened, Tunnel) else (opened, request_id)

    async def _counted(
        self,
        run: SyncRun,
        client_headers: Sequence[Header],
        body: bytes,
        on_sent: Callable[[], None] | None,
    ) -> Answer:
        """A sync run counted against its key's quota while it runs."""
        request_id = new_request_id()
        gate = self.router.gate
        refused = gate.take(run.caller)
        if refused is not None:
            return refused, request_id
        try:
            return await self._sync(run, client_headers, body, on_sent, request_id)
        finally:
            # A stream counts until its head arrives: its quota is a rate, not its length.
            gate.give_back(run.caller.owner)

    async def _sync(
        self,
        run: SyncRun,
        client_headers: Sequence[Header],
        body: bytes,
        on_sent: Callable[[], None] | None,
        request_id: str,
        slot: Slot | None = None,
    ) -> Answer:
        """Run one direct request on a runner, applying the direct-request rules.

        ``run.start_timeout`` (``X-Fal-Request-Timeout``) bounds the wait for a runner;
        ``on_sent`` is called as the request leaves for one. A runner that streams its reply
        (chunked, or an event stream) gets a ``Stream``, relayed chunk by chunk. ``slot``: one
        already taken for it (``flight.py``, which found no idle connection on it).
        """
        t0 = time.monotonic()
        route = run.route
        if slot is None:
            # A free slot now, the common case, without the wait's coroutine.
            slot = route.try_acquire()
            if slot is None:
                waited = await self.acquire(route, run.start_timeout)
                if isinstance(waited, Reply):
                    return self.served(route, waited, t0), request_id
                slot = waited
        headers = forward_head(client_headers, request_id.encode())
        if on_sent is not None:
            on_sent()
        try:
            upstream = await slot.pool.request(
                b"POST", run.target, headers, body, timeout=route.spec.request_timeout, stream=True
            )
        except UpstreamError as exc:
            return self.failed(route, slot, exc, t0), request_id
        except BaseException:  # cancelled: the slot must not leak
            route.release(slot)
            raise
        reply = self.answered(route, slot, upstream, t0)
        if reply is None:
            return await self.stream_of(route, slot, upstream, t0, request_id)
        return reply, request_id

    def answered(
        self, route: AppRoute, slot: Slot, upstream: UpstreamResponse, t0: float
    ) -> Reply | None:
        """The runner answered a sync run on ``slot``: the rules applied, the reply counted;
        None for a streamed reply, which ``stream_of`` relays (the slot is its until it ends)."""
        status = upstream.status
        verdict = direct_status(status)
        if verdict.terminate:
            self.router.terminate_slot(route, slot, verdict.reason)
        if upstream.stream is not None:
            return None
        route.release(slot)
        # ``served``, written out
        self.router.stats.served(route.app_id, SYNC, status, time.monotonic() - t0)
        return Reply(status, upstream.headers, upstream.body)

    def failed(self, route: AppRoute, slot: Slot, exc: UpstreamError, t0: float) -> Reply:
        """The runner failed a sync run on ``slot`` before answering: the rules applied, the
        error counted."""
        verdict = direct_error(exc.kind)
        self.router.terminate_slot(route, slot, verdict.reason)  # before release: no hand-over
        route.release(slot)
        assert verdict.status is not None
        reply = error_reply(verdict.status, verdict.error_type, verdict.detail)
        return self.served(route, reply, t0)

    async def stream_of(
        self, route: AppRoute, slot: Slot, upstream: UpstreamResponse, t0: float, request_id: str
    ) -> Stream:
        """A runner's streamed reply (``answered`` said None), relayed as it comes."""
        assert upstream.stream is not None
        chunks = self._relay(route, slot, upstream.status, upstream.stream, t0)
        await anext(chunks)  # begun: closing it unread now runs its clean-up
        ready = upstream.stream.ready
        return Stream(request_id, chunks, upstream.status, upstream.headers, ready)

    def stream_dropped(
        self, route: AppRoute, slot: Slot, upstream: UpstreamResponse, t0: float
    ) -> None:
        """A streamed reply whose caller left before it was relayed: what closing its relay
        does (the runner's connection closed, the slot back, the run counted)."""
        assert upstream.stream is not None
        upstream.stream.abandon()
        route.release(slot)
        self.router.stats.served(route.app_id, SYNC, upstream.status, time.monotonic() - t0)

    def served(self, route: AppRoute, reply: Reply, t0: float) -> Reply:
        """Count a finished sync run (a stream counts itself as it ends)."""
        self.router.stats.served(route.app_id, SYNC, reply.status, time.monotonic() - t0)
        return reply

    async def _relay(
        self, route: AppRoute, slot: Slot, status: int, body: BodyStream, t0: float
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        """A runner's streamed body, chunk by chunk; the slot is the stream's until it ends.

        The app's request_timeout covers the whole stream: past it, or should the runner
        fail, the stream ends without its last chunk and the rules for a failed request
        apply. A caller who stops reading closes the runner's connection.
        """
        complete = False
        try:
            yield b"", False  # taken by _forward, so that the clean-up below always runs
            while (chunk := await body.next()) is not None:
                yield chunk, False
            complete = True
            yield b"", True
        except UpstreamError as exc:
            verdict = direct_error(exc.kind)
            self.router.terminate_slot(route, slot, verdict.reason)
            status = verdict.status or status
        finally:
            if not complete:
                body.abandon()
            route.release(slot)
            self.router.stats.served(route.app_id, SYNC, status, time.monotonic() - t0)

    async def acquire(self, route: AppRoute, start_timeout: float | None) -> Slot | Reply:
        """A slot on one of the app's runners, or the reply saying why none came in time."""
        router = self.router
        wait = router.dispatch_timeout(route.spec)
        users = start_timeout is not None and start_timeout < wait
        try:
            slot = route.try_acquire()
            if slot is None:
                if (refused := router.unplaceable(route)) is not None:
                    return error_reply(refused.status, refused.error_type, refused.detail)
                slot = await route.acquire(
                    start_timeout if users and start_timeout is not None else wait
                )
        except NoSlotInTime as exc:
            return self._no_slot(route, exc, start_timeout if users else None)
        except RequestError as exc:
            return error_reply(exc.status, exc.error_type, exc.detail)
        return slot

    def _no_slot(self, route: AppRoute, exc: NoSlotInTime, users: float | None) -> Reply:
        """No runner in time: why (nodes full, say, where the backend knows), and whose
        deadline it was (``users``: the caller's ``X-Fal-Request-Timeout``)."""
        why = self.router.backend.unplaced(route.app_id)
        because = f"; {why.detail}" if why is not None else ""
        if users is None:
            return error_reply(exc.status, exc.error_type, exc.detail + because)
        reply = error_reply(
            504,
            "request_timeout",
            f"no runner was free within the X-Fal-Request-Timeout of {users:g}s" + because,
        )
        reply.headers.append((b"x-fal-request-timeout-type", b"user"))
        return reply


def find_timeout_header(headers: Sequence[Header]) -> Header | None:
    """The caller's ``X-Fal-Request-Timeout`` (or ``X-Yurt-Request-Timeout``), if sent."""
    for name, value in headers:
        lname = name.lower()
        if lname in TIMEOUT_HEADERS:
            return lname, value
    return None
