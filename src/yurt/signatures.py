"""What kind of endpoint a method is, read off its signature. Pure.

Two kinds are served differently by the runner:

- ``model``: no parameter, or one parameter annotated with a pydantic model (the whole JSON
  body). yurt's own way, served on the runner's byte path without FastAPI.
- ``fastapi``: anything else fal's ``@fal.endpoint`` accepts, that is whatever FastAPI accepts
  for a route: several body parameters, ``dict`` and plain types (plain types are query
  parameters, as in FastAPI), ``Request``/``Response``/``BackgroundTasks`` parameters,
  ``Body()``/``Query()``/``Header()`` defaults. Served by a FastAPI app built in the runner.

Websocket endpoints (``is_websocket=True``) must be ``async def`` and take a parameter
annotated ``fastapi.WebSocket``, as fal requires.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from yurt.errors import AppDefinitionError

EndpointStyle = Literal["model", "fastapi"]


def resolved_hints(func: Callable[..., Any], where: str) -> dict[str, Any]:
    """The function's annotations, resolved; kept on the function as resolved objects."""
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise AppDefinitionError(
            f"{where}: cannot resolve its type annotations ({exc}); define the models it uses "
            "at module level before the App class"
        ) from exc
    # cloudpickle carries only the globals a function's code names, so string annotations
    # (``from __future__ import annotations``) would not resolve on the runner: keep the
    # resolved objects on the function instead.
    annotations = getattr(func, "__annotations__", None)
    if isinstance(annotations, dict):
        annotations.update(hints)
    return hints


def parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    """The endpoint's parameters, ``self`` left out."""
    return list(inspect.signature(func).parameters.values())[1:]


def body_model(func: Callable[..., Any], where: str) -> type[BaseModel] | None:
    """The pydantic model of a model-style endpoint's one parameter; None when it has none.

    Only meaningful for ``style(...) == "model"``.
    """
    params = parameters(func)
    if not params:
        return None
    hint = resolved_hints(func, where).get(params[0].name)
    assert isinstance(hint, type) and issubclass(hint, BaseModel)
    return hint


def style(func: Callable[..., Any], where: str, *, is_websocket: bool) -> EndpointStyle:
    """How the runner serves this endpoint; raises ``AppDefinitionError`` for a bad websocket."""
    hints = resolved_hints(func, where)
    if is_websocket:
        check_websocket(func, where, hints)
        return "fastapi"
    params = parameters(func)
    if not params:
        return "model"
    if len(params) == 1 and _is_plain_model_param(params[0], hints.get(params[0].name)):
        return "model"
    return "fastapi"


def _is_plain_model_param(param: inspect.Parameter, hint: object) -> bool:
    return (
        param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
        and param.default is inspect.Parameter.empty
        and isinstance(hint, type)
        and issubclass(hint, BaseModel)
    )


def check_websocket(func: Callable[..., Any], where: str, hints: dict[str, Any]) -> None:
    """A websocket endpoint is ``async def`` and takes a ``fastapi.WebSocket``."""
    from starlette.websockets import WebSocket  # fastapi.WebSocket is this class

    has_socket = any(
        isinstance(hints.get(p.name), type) and issubclass(hints[p.name], WebSocket)
        for p in parameters(func)
    )
    wrong = []
    if not inspect.iscoroutinefunction(func):
        wrong.append("be defined with async def")
    if not has_socket:
        wrong.append("take a parameter annotated fastapi.WebSocket")
    if wrong:
        name = getattr(func, "__name__", "endpoint")
        raise AppDefinitionError(
            f"{where}: a websocket endpoint must {' and '.join(wrong)}; for example "
            f"`async def {name}(self, websocket: fastapi.WebSocket) -> None: ...`"
        )


def output_model(func: Callable[..., Any], where: str) -> type[BaseModel] | None:
    """The pydantic model the endpoint declares it returns, if any."""
    hint = resolved_hints(func, where).get("return")
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None
