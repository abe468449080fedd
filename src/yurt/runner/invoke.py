"""Calling user code: endpoints, setup and teardown, sync or async, and shaping their replies."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from pydantic import BaseModel, ValidationError

from yurt.errors import AppException
from yurt.exceptions import FieldException, RequestCancelledException, gpu_failure

JSON = "application/json"
VALIDATION_ERROR = "validation_error"
# Where a request holds its reply once that reply's head went out (a stream, an ASGI reply, a
# websocket): a failure after it must not send a second one (``server._began_or``).
BEGAN = "yurt.reply"


async def begin_reply(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``response``'s head, noting on ``request`` that its reply began."""
    request[BEGAN] = response
    await response.prepare(request)


async def call(func: Callable[..., Any], executor: ThreadPoolExecutor, *args: Any) -> Any:
    """Await an async callable; run a sync one on ``executor`` so the event loop stays free."""
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    ctx = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(executor, functools.partial(ctx.run, func, *args))
    if inspect.isawaitable(result):
        return await result
    return result


def json_response(status: int, payload: Any) -> web.Response:
    """A JSON response from any JSON-serialisable value."""
    return web.Response(status=status, body=json.dumps(payload).encode(), content_type=JSON)


def to_response(result: Any) -> web.StreamResponse:
    """Turn what an endpoint returned into an HTTP response (a JSON 500 naming the type of
    what JSON cannot hold)."""
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, bytes):
        return web.Response(body=result, content_type="application/octet-stream")
    try:
        if isinstance(result, BaseModel):
            return web.Response(body=result.model_dump_json().encode(), content_type=JSON)
        return json_response(200, result)
    except (TypeError, ValueError, RecursionError) as exc:
        # pydantic's own error names the type; json's says "Object of type X ..." too, but a
        # too-deep value or an int past the digit limit say nothing of what was returned.
        return error_response(
            500,
            "unserializable_result",
            f"the endpoint returned a {type(result).__name__} that cannot be sent as JSON: "
            f"{type(exc).__name__}: {exc}",
        )


def validation_response(exc: ValidationError) -> web.Response:
    """422 for a body that failed validation, in FastAPI's and fal's shape: ``detail`` lists
    ``{loc, msg, type}`` with ``loc`` under ``"body"``. Never the input: it may be any bytes
    (invalid UTF-8, a 100,000-digit number) and is the caller's own anyway."""
    detail = [
        {"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    response = json_response(422, {"detail": detail, "error_type": VALIDATION_ERROR})
    response.headers["x-fal-error-type"] = VALIDATION_ERROR
    response.headers["x-yurt-error-type"] = VALIDATION_ERROR
    # fal bills nothing for a request its app never ran (its RequestValidationError handler).
    response.headers["x-fal-billable-units"] = "0"
    return response


def error_page(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """What aiohttp's own error page for ``status`` and ``exc`` says, as (status, error type,
    detail) for a JSON answer: a request its parser refused, or a handler that failed."""
    # aiohttp raises LineTooLong for a request line or header past max_line_size or
    # max_field_size, and a plain BadHttpMessage for more headers than max_headers.
    if isinstance(exc, http_exceptions.LineTooLong) or (
        type(exc) is http_exceptions.BadHttpMessage and "Too many headers" in exc.message
    ):
        return 431, "request_header_fields_too_large", "the request line or headers are too large"
    if isinstance(exc, http_exceptions.HttpProcessingError) and status < 500:
        # A plain BadHttpMessage says what is wrong in its first line ("Duplicate 'Content-Type'
        # header found."); the lines after it, and the subclasses, quote the caller's bytes.
        why = type(exc).__name__
        if type(exc) is http_exceptions.BadHttpMessage:
            why = exc.message.partition("\n")[0].rstrip(":")
        return status, "bad_request", f"malformed HTTP request: {why}"
    if status == 504:
        return 504, "request_timeout", "the server timed out serving the request"
    return status, "internal_error", "the server failed this request"


def error_response(status: int, error_type: str, detail: str) -> web.Response:
    """A runner-made error: ``{detail, error_type}`` with the error-type headers the router sets."""
    response = json_response(status, {"detail": detail, "error_type": error_type})
    response.headers["x-fal-error-type"] = error_type
    response.headers["x-yurt-error-type"] = error_type
    return response


# An error page: the answer to a request aiohttp itself refused (status, the exception).
ErrorPage = Callable[[int, BaseException | None], web.StreamResponse]


class JsonErrorServer(web.Server):
    """aiohttp's low-level server whose connections answer their own errors (a request its
    parser refused, headers past its limits, a handler that failed) with ``page``, in JSON with
    an error type, instead of aiohttp's text pages. The runner's and the router's."""

    def __init__(self, handler: Any, *, page: ErrorPage, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._page = page

    def __call__(self) -> RequestHandler:
        return _JsonErrors(self, self._page, loop=self._loop, **self._kwargs)


class _JsonErrors(RequestHandler):
    def __init__(self, manager: web.Server, page: ErrorPage, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._page = page

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if a reply began
        response = self._page(status, exc)
        response.force_close()
        return response


def exception_response(exc: BaseException) -> web.Response | None:
    """The answer an endpoint chose by raising ``exc`` (fal's exceptions, FastAPI's
    ``HTTPException``, a GPU failure as 503); None for an error that is only a failure."""
    if isinstance(exc, AppException):
        response = json_response(exc.status_code, {"detail": exc.message})
        response.headers.update(exc.headers)
        return response
    if isinstance(exc, FieldException):
        response = json_response(exc.status_code, exc.to_pydantic_format())
        response.headers.update(exc.response_headers())
        return response
    if isinstance(exc, RequestCancelledException):
        return json_response(499, {"detail": exc.message})
    # Only an app that imported starlette can raise its HTTPException (FastAPI's is a subclass):
    # the check costs nothing to apps that did not.
    starlette = sys.modules.get("starlette.exceptions")
    if starlette is not None and isinstance(exc, starlette.HTTPException):
        response = json_response(exc.status_code, {"detail": exc.detail})
        response.headers.update(exc.headers or {})
        return response
    gpu = gpu_failure(exc)
    if gpu is not None:
        return json_response(gpu.status_code, {"detail": gpu.message})
    return None


def is_deliberate(exc: BaseException) -> bool:
    """Whether an endpoint raised ``exc`` to choose its answer (fal's exceptions, FastAPI's
    ``HTTPException``) rather than failing."""
    if isinstance(exc, AppException | FieldException | RequestCancelledException):
        return True
    starlette = sys.modules.get("starlette.exceptions")
    return starlette is not None and isinstance(exc, starlette.HTTPException)


def is_stream(result: object) -> bool:
    """Whether an endpoint's return is sent in pieces: a generator, or a starlette
    ``Response`` (run as the ASGI app it is)."""
    if isinstance(result, _PLAIN):  # what most endpoints return: one check, not three
        return False
    if inspect.isasyncgen(result) or inspect.isgenerator(result):
        return True
    starlette = sys.modules.get("starlette.responses")
    return starlette is not None and isinstance(result, starlette.Response)


# Returns that are never streams.
_PLAIN = (BaseModel, dict, list, str, bytes, int, float, type(None))


def sse_event(item: object) -> bytes:
    """One server-sent event from what a generator yielded: bytes go out as they are (already
    framed by the app); a str is the event's data; anything else its JSON."""
    if isinstance(item, (bytes, bytearray)):  # a tuple: not a union built per event
        return bytes(item)
    if isinstance(item, BaseModel):
        text = item.model_dump_json()
    elif isinstance(item, str):
        text = item
    else:
        text = json.dumps(item)
    return "".join(f"data: {line}\n" for line in text.split("\n")).encode() + b"\n"


async def stream_generator(
    request: web.Request,
    gen: AsyncIterator[Any] | Iterator[Any],
    executor: ThreadPoolExecutor,
) -> web.StreamResponse:
    """Send each item as a server-sent event as soon as it is produced; a caller hanging up
    stops (closes) the generator at its next item."""
    response = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
    )
    await begin_reply(request, response)
    loop = asyncio.get_running_loop()
    done = object()
    try:
        if inspect.isasyncgen(gen):
            async for item in gen:
                await response.write(sse_event(item))
        else:
            assert isinstance(gen, Iterator)
            ctx = contextvars.copy_context()

            def step() -> Any:
                return ctx.run(next, gen, done)

            while (item := await loop.run_in_executor(executor, step)) is not done:
                await response.write(sse_event(item))
    finally:
        if inspect.isasyncgen(gen):
            await gen.aclose()
        elif inspect.isgenerator(gen):
            gen.close()
    await response.write_eof()
    return response
