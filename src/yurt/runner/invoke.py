"""Calling user code: endpoints, setup and teardown, sync or async, and shaping their replies."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from pydantic import BaseModel

JSON = "application/json"


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
    """Turn what an endpoint returned into an HTTP response."""
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, BaseModel):
        return web.Response(body=result.model_dump_json().encode(), content_type=JSON)
    if isinstance(result, bytes):
        return web.Response(body=result, content_type="application/octet-stream")
    return json_response(200, result)


def error_response(status: int, error_type: str, detail: str) -> web.Response:
    """A runner-made error: ``{detail, error_type}`` with the error-type headers the router sets."""
    response = json_response(status, {"detail": detail, "error_type": error_type})
    response.headers["x-fal-error-type"] = error_type
    response.headers["x-yurt-error-type"] = error_type
    return response
