"""The queue's HTTP routes under ``/queue/``, as fal's queue protocol has them.

==========================================================  ======================================
``POST /queue/{owner}/{app}[/{path}][?fal_webhook=URL]``    submit; 200 with the request's URLs
``GET  .../requests/{id}/status[?logs=1]``                  202 while queued or running, 200 after
``GET  .../requests/{id}/status/stream[?logs=1]``           the same as server-sent events
``GET  .../requests/{id}``                                  the result, once completed (*)
``PUT  .../requests/{id}/cancel``                           CANCELLATION_REQUESTED / ALREADY_...
==========================================================  ======================================

(*) With ``Prefer: wait=N`` (RFC 7240) a result request is held until the request completes, for
at most N seconds (60 at most), and says so with ``Preference-Applied``: a caller waiting for a
result needs no status stream. fal's protocol has no such thing; its clients never ask for it.

``QueueApi.serve`` works on plain data, so that both of the router's faces call it: the fast lane
(``fastlane.py``) for every queue request, and aiohttp (``web.py``) for those arriving on a
connection it already holds.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Sequence
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from yurt.access import Caller, may_see
from yurt.errors import RequestError
from yurt.queue.destinations import DestinationPolicy
from yurt.queue.model import Header, Job, State
from yurt.queue.ports import RouterPort
from yurt.queue.routing import RoutingError, parse_routing
from yurt.queue.store import Record, without_credentials
from yurt.router.admitted import Answer, QueueCall, Stream
from yurt.router.http import (
    JSON_TYPE,
    Reply,
    error_reply,
    invalid_reply,
    json_reply,
    new_request_id,
)

if TYPE_CHECKING:
    from yurt.queue.engine import QueueEngine

PREFIX = "/queue"
_TRUE = frozenset({"1", "true", "yes"})
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
KEEPALIVE = 15.0  # seconds of silence before a status stream sends a comment
MAX_RESULT_WAIT = 60  # the longest a result request is held for completion (Prefer: wait)
SSE_HEADERS: list[Header] = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]


class QueueApi:
    """Serves ``/queue/...``: submissions, statuses, results and cancellations."""

    def __init__(
        self, router: RouterPort, engine: QueueEngine, *, stream_tick: float = 1.0
    ) -> None:
        self.router = router
        self.engine = engine
        self.destinations = DestinationPolicy(engine.config.webhook_allow)
        # How often a status stream looks for a changed queue position.
        self.stream_tick = stream_tick
        self.closing = False

    def close(self) -> None:
        """The router is stopping: open status streams end (cut short, not completed)."""
        self.closing = True
        self.engine.close()

    async def serve(self, call: QueueCall) -> Answer:
        """The reply and the request id it concerns, or a status stream to send."""
        path = call.path[len(PREFIX) :]
        if call.method == b"POST":
            return await self._submit(call, path)
        parts = path.split("/")  # "", owner, app, "requests", id, rest...
        if len(parts) < 5 or parts[3] != "requests" or not parts[4]:
            detail = f"no queue route for {call.method.decode()} {call.path}"
            return error_reply(404, "not_found", detail), new_request_id()
        app_id, request_id, tail = f"{parts[1]}/{parts[2]}", parts[4], parts[5:]
        # Only ids of the form the router makes: an id is echoed in a response header.
        found = self.engine.record(request_id) if _REQUEST_ID.fullmatch(request_id) else None
        if found is not None and not self._may_see(found, call.caller):
            found = None  # another key's request: as if there were none, not "forbidden"
        if found is None or found.app_id != app_id:
            reply_id = request_id if found is not None else new_request_id()
            if tail == ["cancel"] and call.method == b"PUT":
                return json_reply({"status": "NOT_FOUND"}, 404), reply_id
            detail = f"no request {request_id!r} of {app_id!r} (unknown, or purged)"
            return error_reply(404, "request_not_found", detail), reply_id
        if isinstance(found, Record) and found.state is not State.COMPLETED and tail != ["cancel"]:
            detail = (
                f"request {request_id} waits for {found.app_id}, which this router does not "
                f"serve now; it runs once a router serving {found.app_id} starts on this data dir"
            )
            return error_reply(503, "app_not_served", detail), request_id
        if call.method == b"GET" and not tail:
            wait = prefer_wait(call.headers)
            if wait is None:
                return self._result_reply(found), request_id
            wait = min(wait, MAX_RESULT_WAIT)
            found = await self._completed(request_id, found, wait)
            reply = self._result_reply(found)
            if not (self.closing and isinstance(found, Job)):
                # Not when cut short by a stop: the caller must not ask again at once.
                reply.headers.append((b"preference-applied", b"wait=%d" % wait))
            return reply, request_id
        logs = _query(call.query).get("logs", "").lower() in _TRUE
        if call.method == b"GET" and tail == ["status"]:
            body = await self.status(found, call.base, logs)
            # From the body: the request may have completed while its logs were fetched.
            done = body["status"] == State.COMPLETED.value
            return json_reply(body, 200 if done else 202), request_id
        if call.method == b"GET" and tail == ["status", "stream"]:
            return Stream(
                request_id, self._events(request_id, call.base, logs), headers=SSE_HEADERS
            )
        if call.method == b"PUT" and tail == ["cancel"]:
            outcome = self.engine.cancel(request_id)
            code = {"CANCELLATION_REQUESTED": 202, "ALREADY_COMPLETED": 400}.get(outcome, 404)
            return json_reply({"status": outcome}, code), request_id
        detail = f"{call.method.decode()} {call.path}"
        return error_reply(405, "method_not_allowed", detail), request_id

    # -- submit ------------------------------------------------------------------------------

    async def _submit(self, call: QueueCall, path: str) -> tuple[Reply, str]:
        resolved = self.router.resolve(path)
        if isinstance(resolved, Reply):
            return resolved, new_request_id()
        route, endpoint = resolved
        gate = self.router.gate
        caller = gate.check(route.spec.app_auth, call.headers, known=call.caller)
        if isinstance(caller, Reply):
            return caller, new_request_id()
        # Every routing header is an x- one: only those are decoded.
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in call.headers
            if k[:2] in (b"x-", b"X-")
        }
        try:
            routing = parse_routing(headers, _query(call.query))
        except RoutingError as exc:
            return invalid_reply(exc.detail()), new_request_id()
        if routing.webhook is not None:  # where the router is asked to POST: checked first
            refused = await self.destinations.check_url(routing.webhook)
            if refused is not None:
                reply = error_reply(422, "webhook_destination_refused", refused.message())
                return reply, new_request_id()
        query = call.query and "&".join(
            p
            for p in call.query.split("&")
            if p and not p.startswith(("fal_webhook=", "yurt_webhook="))
        )
        kept = without_credentials(call.headers)  # written to disk, replayed to a runner
        over = gate.take(caller)  # given back when the request completes (the engine)
        if over is not None:
            return over, new_request_id()
        try:
            job = await self.engine.submit(
                route, endpoint, query, kept, call.body, routing, owner=caller.owner
            )
        except BaseException as exc:
            gate.give_back(caller.owner)
            if not isinstance(exc, RequestError):
                raise
            return error_reply(exc.status, exc.error_type, exc.detail), new_request_id()
        position = self.engine.position(job) if job.state is State.IN_QUEUE else 0
        url = self._url(call.base, job.app_id, job.id)
        return Reply(200, [JSON_TYPE], submitted_body(url, job.id, position)), job.id

    def _may_see(self, found: Job | Record, caller: Caller) -> bool:
        route = self.router.routes.get(found.app_id)
        public = route is not None and route.spec.app_auth == "public"
        return may_see(found.owner, caller, public or not self.router.gate.keys_on())

    def _url(self, base: str, app_id: str, request_id: str) -> str:
        base = self.router.config.public_url or base
        return f"{base.rstrip('/')}{PREFIX}/{app_id}/requests/{request_id}"

    def _urls(self, base: str, app_id: str, request_id: str) -> dict[str, str]:
        url = self._url(base, app_id, request_id)
        return {"response_url": url, "status_url": f"{url}/status", "cancel_url": f"{url}/cancel"}

    # -- status ------------------------------------------------------------------------------

    async def status(self, found: Job | Record, base: str, logs: bool) -> dict[str, Any]:
        """The protocol's status object."""
        out: dict[str, Any] = {"status": found.state.value, "request_id": found.id}
        out.update(self._urls(base, found.app_id, found.id))
        if isinstance(found, Job):
            if found.state is State.IN_QUEUE:
                out["queue_position"] = self.engine.position(found)
            # fal-client reads "logs" without a default: always present, None when not asked.
            out["logs"] = await self.engine.live_logs(found) if logs else None
            return out
        out["logs"] = found.logs if logs else None
        result = found.result
        metrics: dict[str, Any] = {}
        if result is not None:
            if result.inference_time is not None:
                metrics["inference_time"] = result.inference_time
            if not result.ok:
                out["error"] = result.error
                out["error_type"] = result.error_type
        out["metrics"] = metrics
        return out

    async def _events(
        self, request_id: str, base: str, logs: bool
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        last, quiet = b"", 0.0
        while not self.closing:
            # Taken before the state is read: a change from here on wakes the wait below.
            changed = self.engine.waiter(request_id)
            found = self.engine.record(request_id)
            if found is None:  # purged meanwhile
                yield b"", True
                return
            # The state as the event shows it: a live job may complete while its logs are
            # fetched, and its COMPLETED event (with the result's error) comes on the next turn.
            done = found.state is State.COMPLETED
            event = json.dumps(await self.status(found, base, logs)).encode()
            if event != last:
                yield b"data: " + event + b"\n\n", done
                last, quiet = event, 0.0
            elif quiet >= KEEPALIVE:
                # A comment line: proxies and clients see the stream is alive.
                yield b": keep-alive\n\n", False
                quiet = 0.0
            if done:
                return
            try:
                async with asyncio.timeout(self.stream_tick):
                    await asyncio.shield(changed)
            except TimeoutError:
                quiet += self.stream_tick

    # -- result ------------------------------------------------------------------------------

    async def _completed(self, request_id: str, found: Job | Record, wait: float) -> Job | Record:
        """The request once completed, or as it is after ``wait`` seconds or at a stop."""
        loop = self.engine.loop
        deadline = loop.time() + wait
        # ``found`` was read in this loop turn, and nothing below awaits between reading the
        # state and taking the waiter: no change can slip in between.
        while isinstance(found, Job) and not self.closing and loop.time() < deadline:
            await _either(loop, self.engine.waiter(request_id), deadline)
            again = self.engine.record(request_id)
            if again is None:  # purged meanwhile
                break
            found = again
        return found

    def _result_reply(self, found: Job | Record) -> Reply:
        if isinstance(found, Job) or found.result is None:
            return error_reply(
                400,
                "request_in_progress",
                f"request {found.id} is {found.state.value}; its result is not ready",
            )
        result = found.result
        return Reply(result.status, list(result.headers), result.body)


async def _either(
    loop: asyncio.AbstractEventLoop, changed: asyncio.Future[None], deadline: float
) -> None:
    """Until ``changed`` is done or the loop's clock reaches ``deadline``.

    Its own future, never ``changed`` itself: a cancelled wait must not cancel the future other
    watchers share (what ``shield`` and ``timeout`` would do, at half again the cost).
    """
    woken = loop.create_future()

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    changed.add_done_callback(wake)
    timer = loop.call_at(deadline, wake)
    try:
        await woken
    finally:
        timer.cancel()
        changed.remove_done_callback(wake)


def prefer_wait(headers: Sequence[Header]) -> int | None:
    """The seconds of an RFC 7240 ``Prefer: wait=N`` among ``headers``; None if none asks."""
    for name, value in headers:
        if len(name) != 6 or name.lower() != b"prefer":
            continue
        for preference in value.split(b","):
            token, _, rest = preference.split(b";")[0].partition(b"=")
            seconds = rest.strip().strip(b'"')
            if token.strip().lower() == b"wait" and seconds.isdigit():
                return int(seconds)
    return None


def submitted_body(url: str, request_id: str, position: int) -> bytes:
    """The submission's reply, as ``json.dumps`` writes it, for seven times less CPU: the
    one reply every submission gets. ``url`` is the request's ``response_url``."""
    quoted = encode_basestring_ascii(url)[:-1]  # the opening quote and the escaped URL
    return (
        f'{{"status": "IN_QUEUE", "request_id": {encode_basestring_ascii(request_id)}, '
        f'"response_url": {quoted}", "status_url": {quoted}/status", '
        f'"cancel_url": {quoted}/cancel", "queue_position": {position:d}}}'
    ).encode()


def _query(raw: str) -> dict[str, str]:
    return dict(parse_qsl(raw, keep_blank_values=True)) if raw else {}
