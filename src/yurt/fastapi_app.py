"""The FastAPI app that serves an App's fal-style endpoints, as fal builds it.

fal turns every endpoint into a FastAPI route (``add_api_route(path, method, methods=["POST"])``,
websockets with ``add_api_websocket_route``); yurt does the same for the endpoints that need it
(``yurt.signatures``), so that their parameters, returns and exceptions mean what they mean in
FastAPI. The runner calls the app in-process (``yurt.runner.asgi``); ``build_spec`` builds it
once at class creation to refuse a signature FastAPI cannot serve and to take the endpoint's
OpenAPI description from it. Nothing here does I/O.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from yurt.errors import AppDefinitionError, AppException
from yurt.exceptions import FieldException, RequestCancelledException, gpu_failure

VALIDATION_ERROR = "validation_error"
ENDPOINT_ERROR = "endpoint_error"


# FastAPI versions with built-in OpenTelemetry spend a third of a request's time on operation
# spans even with no provider configured; the runner has its own metrics and logs.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


@dataclass(frozen=True)
class Route:
    """One endpoint to serve: its path, the callable, and how it is reached."""

    path: str
    call: Callable[..., Any]
    is_websocket: bool = False
    # Methods besides POST (a health check declared with ``HealthCheck(method="GET")``).
    extra_methods: tuple[str, ...] = ()


def build_app(routes: Iterable[Route]) -> FastAPI:
    """A FastAPI app serving ``routes`` with yurt's (and fal's) error answers."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, **_NO_TELEMETRY)
    for route in routes:
        name = getattr(route.call, "__name__", "endpoint")
        if route.is_websocket:
            app.add_api_websocket_route(route.path, route.call, name=name)
        else:
            _add_http(app, route, name)
    app.add_exception_handler(AppException, _app_exception)
    app.add_exception_handler(FieldException, _field_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RequestCancelledException, _cancelled)
    app.add_exception_handler(Exception, _unhandled)
    return app


def _add_http(app: FastAPI, route: Route, name: str) -> None:
    # One route per method: FastAPI names an operation after its route's first method, so
    # two methods on one route would share an operationId.
    for method in ("POST", *route.extra_methods):
        app.add_api_route(route.path, route.call, name=name, methods=[method])


def route_openapi(route: Route, where: str) -> dict[str, Any]:
    """The OpenAPI paths and component schemas FastAPI gives one route (for ``build_spec``).

    Raises ``AppDefinitionError`` when FastAPI cannot serve the signature.
    """
    try:
        app = FastAPI()
        if route.is_websocket:
            app.add_api_websocket_route(route.path, route.call)
            return {"paths": {}, "schemas": {}}
        _add_http(app, route, getattr(route.call, "__name__", "endpoint"))
        document = app.openapi()
    except Exception as exc:
        raise AppDefinitionError(
            f"{where}: FastAPI cannot serve this endpoint's signature ({type(exc).__name__}: "
            f"{exc}); annotate its parameters with pydantic models, dict or plain types, or "
            "fastapi.Request/Response"
        ) from exc
    return {
        "paths": document.get("paths", {}),
        "schemas": document.get("components", {}).get("schemas", {}),
    }


def validation_detail(errors: Iterable[Any]) -> list[dict[str, Any]]:
    """FastAPI's validation errors as ``{loc, msg, type}``, never quoting the input."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]


def error_headers(error_type: str) -> dict[str, str]:
    """The error-type headers every yurt-made error carries."""
    return {"x-fal-error-type": error_type, "x-yurt-error-type": error_type}


async def _app_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppException)
    return JSONResponse({"detail": exc.message}, exc.status_code, headers=exc.headers)


async def _field_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FieldException)
    return JSONResponse(exc.to_pydantic_format(), exc.status_code, headers=exc.response_headers())


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    body = {"detail": validation_detail(exc.errors()), "error_type": VALIDATION_ERROR}
    headers = error_headers(VALIDATION_ERROR) | {"x-fal-billable-units": "0"}
    return JSONResponse(body, 422, headers=headers)


async def _cancelled(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, 499)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this answer is sent; the runner's bridge logs it.
    gpu = gpu_failure(exc)
    if gpu is not None:
        return JSONResponse({"detail": gpu.message}, gpu.status_code)
    body = {"detail": f"{type(exc).__name__}: {exc}", "error_type": ENDPOINT_ERROR}
    return JSONResponse(body, 500, headers=error_headers(ENDPOINT_ERROR))
