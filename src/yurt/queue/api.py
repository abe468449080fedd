"""The queue's HTTP routes under ``/queue/``, as fal's queue protocol has them.

==========================================================  ======================================
``POST /queue/{owner}/{app}[/{path}][?fal_webhook=URL]``    submit; 200 with the request's URLs
``GET  .../requests/{id}/status[?logs=1]``                  202 while queued or running, 200 after
``GET  .../requests/{id}/status/stream[?logs=1]``           the same as server-sent events
``GET  .../requests/{id}``                                  the result, once completed
``PUT  .../requests/{id}/cancel``                           CANCELLATION_REQUESTED / ALREADY_...
==========================================================  ======================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from yurt.errors import RequestError
from yurt.queue.model import Job, State
from yurt.queue.routing import RoutingError, parse_routing
from yurt.queue.store import Record
from yurt.router.http import Reply, error_reply, json_reply, new_request_id

if TYPE_CHECKING:
    from yurt.queue.engine import QueueEngine
    from yurt.router.server import Router

PREFIX = "/queue"
_TRUE = frozenset({"1", "true", "yes"})
KEEPALIVE = 15.0  # seconds of silence before a status stream sends a comment

BodyReader = Callable[[web.BaseRequest], Awaitable[bytes]]
Responder = Callable[[Reply, str], web.StreamResponse]


class QueueApi:
    """Serves ``/queue/...`` on the router's aiohttp face."""

    def __init__(self, router: Router, engine: QueueEngine, *, stream_tick: float = 1.0) -> None:
        self.router = router
        self.engine = engine
        # How often a status stream re-sends a changed queue position, and keeps alive.
        self.stream_tick = stream_tick

    async def handle(
        self, request: web.BaseRequest, read_body: BodyReader, respond: Responder
    ) -> web.StreamResponse:
        """Serve one request whose path starts with ``/queue/``."""
        path = request.path[len(PREFIX) :]
        parts = path.split("/")  # "", owner, app, rest...
        if request.method == "POST":
            return await self._submit(request, path, read_body, respond)
        if len(parts) < 5 or parts[3] != "requests" or not parts[4]:
            return respond(
                error_reply(
                    404, "not_found", f"no queue route for {request.method} {request.path}"
                ),
                new_request_id(),
            )
        app_id, request_id, tail = f"{parts[1]}/{parts[2]}", parts[4], parts[5:]
        found = self.engine.record(request_id)
        if found is None or found.app_id != app_id:
            if tail == ["cancel"] and request.method == "PUT":
                return respond(json_reply({"status": "NOT_FOUND"}, 404), request_id)
            detail = f"no request {request_id!r} of {app_id!r} (unknown, or purged)"
            return respond(error_reply(404, "request_not_found", detail), request_id)
        logs = request.query.get("logs", "").lower() in _TRUE
        if request.method == "GET" and tail == ["status"]:
            return respond(await self._status_reply(request, found, logs), request_id)
        if request.method == "GET" and tail == ["status", "stream"]:
            return await self._stream(request, request_id, logs)
        if request.method == "GET" and not tail:
            return respond(self._result_reply(found), request_id)
        if request.method == "PUT" and tail == ["cancel"]:
            outcome = self.engine.cancel(request_id)
            code = {"CANCELLATION_REQUESTED": 202, "ALREADY_COMPLETED": 400}.get(outcome, 404)
            return respond(json_reply({"status": outcome}, code), request_id)
        return respond(
            error_reply(405, "method_not_allowed", f"{request.method} {request.path}"), request_id
        )

    # -- submit ------------------------------------------------------------------------------

    async def _submit(
        self, request: web.BaseRequest, path: str, read_body: BodyReader, respond: Responder
    ) -> web.StreamResponse:
        resolved = self.router.resolve(path)
        if isinstance(resolved, Reply):
            return respond(resolved, new_request_id())
        route, endpoint = resolved
        try:
            routing = parse_routing(request.headers, request.query)
        except RoutingError as exc:
            body = {"detail": exc.detail(), "error_type": "bad_request"}
            return respond(json_reply(body, 422), new_request_id())
        try:
            body_bytes = await read_body(request)
        except RequestError as exc:
            return respond(error_reply(exc.status, exc.error_type, exc.detail), new_request_id())
        query = "&".join(
            p
            for p in request.raw_path.partition("?")[2].split("&")
            if p and not p.startswith(("fal_webhook=", "yurt_webhook="))
        )
        job = await self.engine.submit(
            route, endpoint, query, request.raw_headers, body_bytes, routing
        )
        urls = self._urls(request, job.app_id, job.id)
        reply = json_reply(
            {
                "status": "IN_QUEUE",
                "request_id": job.id,
                **urls,
                "queue_position": self.engine.position(job) if job.state is State.IN_QUEUE else 0,
            }
        )
        return respond(reply, job.id)

    def _urls(self, request: web.BaseRequest, app_id: str, request_id: str) -> dict[str, str]:
        base = self.router.config.public_url or f"{request.scheme}://{request.host}"
        url = f"{base.rstrip('/')}{PREFIX}/{app_id}/requests/{request_id}"
        return {"response_url": url, "status_url": f"{url}/status", "cancel_url": f"{url}/cancel"}

    # -- status ------------------------------------------------------------------------------

    async def status(
        self, request: web.BaseRequest, found: Job | Record, logs: bool
    ) -> dict[str, Any]:
        """The protocol's status object."""
        out: dict[str, Any] = {"status": found.state.value, "request_id": found.id}
        out.update(self._urls(request, found.app_id, found.id))
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

    async def _status_reply(
        self, request: web.BaseRequest, found: Job | Record, logs: bool
    ) -> Reply:
        body = await self.status(request, found, logs)
        return json_reply(body, 200 if found.state is State.COMPLETED else 202)

    async def _stream(
        self, request: web.BaseRequest, request_id: str, logs: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "x-fal-request-id": request_id,
                "x-yurt-request-id": request_id,
            }
        )
        await response.prepare(request)
        last, quiet = b"", 0.0
        with contextlib.suppress(ConnectionError):
            while True:
                found = self.engine.record(request_id)
                if found is None:  # purged meanwhile
                    break
                event = json.dumps(await self.status(request, found, logs)).encode()
                if event != last:
                    await response.write(b"data: " + event + b"\n\n")
                    last, quiet = event, 0.0
                elif quiet >= KEEPALIVE:
                    # A comment line: proxies and clients see the stream is alive.
                    await response.write(b": keep-alive\n\n")
                    quiet = 0.0
                quiet += self.stream_tick
                if found.state is State.COMPLETED:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.engine.changed(request_id), self.stream_tick)
            await response.write_eof()
        return response

    # -- result ------------------------------------------------------------------------------

    def _result_reply(self, found: Job | Record) -> Reply:
        if isinstance(found, Job) or found.result is None:
            return error_reply(
                400,
                "request_in_progress",
                f"request {found.id} is {found.state.value}; its result is not ready",
            )
        result = found.result
        return Reply(result.status, list(result.headers), result.body)
