"""How the runner calls an App's endpoints, once a request was admitted to a slot.

A model-style endpoint is called with its validated body and its return shaped here (JSON, a
stream of server-sent events for a generator, a starlette ``Response`` run as the ASGI app it
is); a fal-style endpoint goes through the FastAPI app (``yurt.runner.asgi``). Either way the
user's code runs in a task of its own, with ``current_request`` set and its output captured as
the request's logs, so that cancelling it leaves the handler free to answer 499.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from yurt.app import CURRENT_REQUEST, App
from yurt.runner.invoke import (
    call,
    error_response,
    exception_response,
    is_deliberate,
    is_stream,
    stream_generator,
    to_response,
    validation_response,
)
from yurt.runner.logcapture import capturing
from yurt.runner.requests import ActiveRequest
from yurt.spec import EndpointSpec

log = structlog.get_logger("yurt.runner")

Invoker = Callable[[web.Request, ActiveRequest], Awaitable[web.StreamResponse]]


class Calls:
    """Calls into one App instance: ``executor`` runs sync endpoints, ``asgi`` is the FastAPI
    app of its fal-style endpoints (None when it has none)."""

    def __init__(self, instance: App, executor: ThreadPoolExecutor, asgi: Any) -> None:
        self.instance, self.executor, self.asgi = instance, executor, asgi

    def invoker(self, ep: EndpointSpec, body_model: type[BaseModel] | None) -> Invoker:
        """The call of endpoint ``ep``; ``body_model`` is a model-style endpoint's body."""
        if ep.style == "fastapi":
            return functools.partial(self.asgi_call, websocket=ep.is_websocket)
        method = getattr(self.instance, ep.method_name)
        # Judged once, not per request: a coroutine function is awaited here, anything else
        # runs on the executor (``call``).
        coroutine = inspect.iscoroutinefunction(method)
        return functools.partial(
            self.model, method=method, body_model=body_model, is_async=ep.is_async, coro=coroutine
        )

    async def model(
        self,
        request: web.Request,
        active: ActiveRequest,
        method: Any,
        body_model: type[BaseModel] | None,
        is_async: bool,
        coro: bool = False,
    ) -> web.StreamResponse:
        args: tuple[Any, ...] = ()
        if body_model is not None:
            try:
                args = (body_model.model_validate_json(await request.read() or b"{}"),)
            except ValidationError as exc:
                return validation_response(exc)
        if active.cancelled:
            return cancelled(active)
        # The user call gets a task of its own, so that cancelling it leaves this handler
        # free to answer 499.
        task = asyncio.create_task(self.call_user(request, active, method, args, coro))
        if is_async:
            active.task = task
        try:
            return await task
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if this is not None and this.cancelling():
                raise  # the handler itself is cancelled: shutdown past the grace period
            if active.cancelled:
                return cancelled(active)
            detail = "CancelledError: the endpoint was cancelled without a cancel request"
            log.error("endpoint_failed", request_id=active.request_id, path=request.path)
            return error_response(500, "endpoint_error", detail)
        except Exception as exc:
            if not is_deliberate(exc):  # a failure, not an answer: its traceback is logged
                log.exception("endpoint_failed", request_id=active.request_id, path=request.path)
            chosen = exception_response(exc)
            if chosen is not None:
                return chosen
            return error_response(500, "endpoint_error", f"{type(exc).__name__}: {exc}")

    async def asgi_call(
        self, request: web.Request, active: ActiveRequest, *, websocket: bool
    ) -> web.StreamResponse:
        from yurt.runner.asgi import HttpExchange, WebSocketExchange

        assert self.asgi is not None
        exchange = (WebSocketExchange if websocket else HttpExchange)(self.asgi, request)
        task = asyncio.create_task(self.in_request(active, exchange.run))
        # FastAPI runs a sync endpoint in a thread and waits for it even when cancelled, so
        # cancelling the task never frees a slot whose thread still computes.
        active.task = task
        try:
            return await task
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if this is not None and this.cancelling():
                raise
            began = exchange.began()
            return began if began is not None else cancelled(active)

    async def in_request(
        self, active: ActiveRequest, run: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # A task runs in a copy of the context: these settings end with it. FastAPI and
        # ``call`` hand the context on to the worker thread of a sync endpoint.
        CURRENT_REQUEST.set(active.context)
        structlog.contextvars.bind_contextvars(request_id=active.request_id)
        with capturing(active.logs):
            return await run()

    async def call_user(
        self,
        request: web.Request,
        active: ActiveRequest,
        method: Any,
        args: tuple[Any, ...],
        coro: bool = False,
    ) -> web.StreamResponse:
        # As ``in_request``, written out: this is every model-style request's path.
        CURRENT_REQUEST.set(active.context)
        structlog.contextvars.bind_contextvars(request_id=active.request_id)
        with capturing(active.logs):
            result = await method(*args) if coro else await call(method, self.executor, *args)
            if is_stream(result):
                # Produced in this task, so that what the generator prints is the request's.
                return await self.stream(request, result)
            return to_response(result)

    async def stream(self, request: web.Request, result: Any) -> web.StreamResponse:
        if inspect.isasyncgen(result) or inspect.isgenerator(result):
            return await stream_generator(request, result, self.executor)
        from yurt.runner.asgi import HttpExchange

        # A starlette Response is an ASGI app: run it as one.
        return await HttpExchange(result, request).run()


def cancelled(active: ActiveRequest) -> web.Response:
    """The answer to a request whose cancellation was acknowledged."""
    return error_response(499, "client_cancelled", f"request {active.request_id} was cancelled")
