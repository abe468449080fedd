"""``@yurt.realtime``: an endpoint fed and answered over a websocket in msgpack frames, as fal's.

The decorated method takes an input model and returns an output model (or a dict); a client
sends inputs as msgpack maps and gets one output frame per call back, on one connection::

    class Draw(yurt.App):
        @yurt.realtime("/realtime", buffering=2)
        def draw(self, input: Frame) -> Picture: ...

What the method's annotations say picks the mode, as in fal: ``AsyncIterator[In]`` as the input
streams the inputs into one call (*client streaming*), ``AsyncIterator[Out]`` or
``Iterator[Out]`` as the return streams outputs from one input (*server streaming*), both is
*bidi*, neither is *unary*: one call per input, or per batch of up to ``max_batch_size`` inputs.
``buffering`` keeps that many unanswered inputs and drops the oldest beyond it (a client may ask
for fewer or more with ``max_buffering``, 1..60); ``session_timeout`` ends a session that sent
no input for that long. Mistakes are refused here, when the class is written, naming the fix.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from yurt.app import ENDPOINT_ATTR, endpoint
from yurt.errors import AppDefinitionError

if TYPE_CHECKING:
    from yurt.realtime_frames import Decoder, Encoder

F = TypeVar("F", bound=Callable[..., Any])
RealtimeMode = Literal["unary", "server_streaming", "client_streaming", "bidi"]
REALTIME_ATTR = "__yurt_realtime__"

_ASYNC_ITERATORS = (
    typing.AsyncIterator,
    typing.AsyncGenerator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
)
_SYNC_ITERATORS = (
    typing.Iterator,
    typing.Iterable,
    typing.Generator,
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
)


class RealtimeSettings(BaseModel):
    """What a realtime endpoint declared, as its ``EndpointSpec`` carries it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RealtimeMode
    buffering: int | None = Field(default=None, ge=1)
    session_timeout: float | None = Field(default=None, gt=0)
    max_batch_size: int = Field(default=1, ge=1)
    content_type: str = "application/msgpack"


@dataclass(frozen=True)
class RealtimeEndpoint:
    """Everything a runner needs to serve one realtime method (kept on the method)."""

    func: Callable[..., Any]
    settings: RealtimeSettings
    input_model: type[BaseModel] | None
    output_model: type[BaseModel] | None
    encoder: Encoder | None = None
    decoder: Decoder | None = None

    @property
    def name(self) -> str:
        """The decorated method's name."""
        return getattr(self.func, "__name__", "realtime")


_UNSET: Any = object()


def realtime(
    path: str,
    *,
    buffering: int | None = None,
    session_timeout: float | None = None,
    input_modal: Any = _UNSET,
    output_modal: Any = _UNSET,
    max_batch_size: int = 1,
    content_type: str = "application/msgpack",
    encode_message: Encoder | None = None,
    decode_message: Decoder | None = None,
) -> Callable[[F], F]:
    """Serve the decorated method as a realtime websocket endpoint at ``path`` (fal's names).

    ``input_modal`` / ``output_modal`` override the models read off the annotations (``None``:
    inputs arrive as decoded maps); ``encode_message`` / ``decode_message`` replace msgpack.
    """
    if callable(path):
        name = getattr(path, "__name__", repr(path))
        raise AppDefinitionError(
            f"@yurt.realtime on {name!r} has no parentheses; a realtime endpoint needs its "
            f"path: write @yurt.realtime('/realtime') above {name} (fal's clients connect there)"
        )

    def mark(func: F) -> F:
        where = getattr(func, "__qualname__", repr(func))
        if getattr(func, ENDPOINT_ATTR, None) is not None:
            raise AppDefinitionError(
                f"{where} is already an endpoint; give it either @yurt.endpoint or "
                "@yurt.realtime, not both"
            )
        settings = _settings(where, buffering, session_timeout, max_batch_size, content_type)
        rt = describe(
            func, where, settings, input_modal, output_modal, encode_message, decode_message
        )
        return typing.cast(F, endpoint(path, is_websocket=True)(_session_method(rt)))

    return mark


def realtime_of(func: Any) -> RealtimeEndpoint | None:
    """The realtime endpoint a method serves, or None for any other method."""
    found = getattr(func, REALTIME_ATTR, None)
    return found if isinstance(found, RealtimeEndpoint) else None


def _session_method(rt: RealtimeEndpoint) -> Callable[..., Any]:
    # A websocket endpoint like any other (fal does the same): the runner hands it the
    # connection, and the session does the rest.
    from starlette.websockets import WebSocket

    async def session(self: Any, websocket: WebSocket) -> None:
        from yurt.realtime_session import serve_websocket

        await serve_websocket(self, websocket, rt)

    session.__name__ = rt.name
    session.__qualname__ = getattr(rt.func, "__qualname__", rt.name)
    session.__doc__ = rt.func.__doc__
    session.__module__ = rt.func.__module__
    # Set by hand: resolved objects, so that a payload unpickled elsewhere needs no globals.
    session.__annotations__ = {"websocket": WebSocket, "return": None}
    setattr(session, REALTIME_ATTR, rt)
    return session


def _settings(
    where: str,
    buffering: Any,
    session_timeout: Any,
    max_batch_size: Any,
    content_type: Any,
) -> dict[str, Any]:
    if buffering is not None and (type(buffering) is not int or buffering < 1):
        raise AppDefinitionError(
            f"{where}: buffering={buffering!r} must be a whole number of inputs >= 1 (or None "
            "to keep every input); 2 is what fal recommends for interactive apps"
        )
    if session_timeout is not None and (
        isinstance(session_timeout, bool)
        or not isinstance(session_timeout, int | float)
        or not 0 < session_timeout < float("inf")
    ):
        raise AppDefinitionError(
            f"{where}: session_timeout={session_timeout!r} must be a positive number of "
            "seconds (or None: a session lasts until the client closes it)"
        )
    if type(max_batch_size) is not int or max_batch_size < 1:
        raise AppDefinitionError(f"{where}: max_batch_size={max_batch_size!r} must be an int >= 1")
    if not isinstance(content_type, str) or not content_type:
        raise AppDefinitionError(f"{where}: content_type={content_type!r} must be a string")
    return {
        "buffering": buffering,
        "session_timeout": None if session_timeout is None else float(session_timeout),
        "max_batch_size": max_batch_size,
        "content_type": content_type,
    }


def describe(
    func: Callable[..., Any],
    where: str,
    settings: dict[str, Any],
    input_modal: Any = _UNSET,
    output_modal: Any = _UNSET,
    encoder: Encoder | None = None,
    decoder: Decoder | None = None,
) -> RealtimeEndpoint:
    """Read a method's realtime mode and models off its annotations, refusing what cannot run."""
    positional, variadic = _inputs(func)
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise AppDefinitionError(
            f"{where}: cannot resolve its type annotations ({exc}); define the models it uses "
            "at module level before the App class"
        ) from exc
    # fal reads the input type off the first positional parameter after self, only.
    input_type = hints.get(positional[0]) if positional else None
    output_type = hints.get("return")
    in_item = _item(input_type, _ASYNC_ITERATORS)
    out_item = _item(output_type, _ASYNC_ITERATORS)
    out_sync_item = _item(output_type, _SYNC_ITERATORS)
    mode: RealtimeMode
    if in_item is not None:
        mode = "bidi" if out_item is not None else "client_streaming"
    elif out_item is not None or out_sync_item is not None:
        mode = "server_streaming"
    else:
        mode = "unary"
    _check_shape(func, where, mode, positional, variadic, settings["max_batch_size"])
    if mode == "client_streaming" and out_sync_item is not None:
        raise AppDefinitionError(
            f"{where}: a client-streaming endpoint returns one output; to stream outputs back "
            "too, make it an async generator annotated -> AsyncIterator[Output]"
        )
    in_type = input_type if input_modal is _UNSET else input_modal
    if input_modal is _UNSET and in_item is not None:
        in_type = in_item
    out_type = output_modal
    if output_modal is _UNSET:
        out_type = out_item or out_sync_item or output_type
    return RealtimeEndpoint(
        func,
        RealtimeSettings(mode=mode, **settings),
        _model(where, "input", in_type),
        _model(where, "output", out_type),
        encoder,
        decoder,
    )


def _inputs(func: Callable[..., Any]) -> tuple[list[str], bool]:
    params = list(inspect.signature(func).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p.name for p in params if p.kind in kinds]
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    return positional, variadic


def _item(annotation: Any, iterators: tuple[Any, ...]) -> Any:
    """The item type of ``AsyncIterator[X]`` (or a sync iterator), ``Any`` when bare."""
    if annotation is None:
        return None
    if annotation in iterators:
        return Any
    if typing.get_origin(annotation) in iterators:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None


def _check_shape(
    func: Callable[..., Any],
    where: str,
    mode: RealtimeMode,
    positional: list[str],
    variadic: bool,
    max_batch_size: int,
) -> None:
    if not positional and not variadic:
        raise AppDefinitionError(
            f"{where} takes no input; a realtime endpoint takes one, e.g. "
            f"def {func.__name__}(self, input: Input) -> Output"
        )
    is_coro = inspect.iscoroutinefunction(func)
    is_agen = inspect.isasyncgenfunction(func)
    if mode == "client_streaming" and not is_coro:
        raise AppDefinitionError(
            f"{where} takes a stream of inputs, so it must be 'async def' (not a generator) "
            "returning one output"
        )
    if mode == "bidi" and not (is_coro or is_agen):
        raise AppDefinitionError(f"{where} streams inputs and outputs, so it must be async")
    if mode == "unary" and (is_agen or inspect.isgeneratorfunction(func)):
        raise AppDefinitionError(
            f"{where} is a generator but its return is not annotated as one; annotate "
            "-> AsyncIterator[Output] (or Iterator[Output]) to stream outputs for each input"
        )
    if max_batch_size > 1:
        if mode != "unary":
            raise AppDefinitionError(
                f"{where}: max_batch_size={max_batch_size} batches inputs of one call per "
                f"input, but this endpoint is {mode.replace('_', '-')}; drop max_batch_size"
            )
        if not variadic and len(positional) < max_batch_size:
            raise AppDefinitionError(
                f"{where}: max_batch_size={max_batch_size} calls it with up to "
                f"{max_batch_size} inputs at once; take them as "
                f"def {func.__name__}(self, *inputs), with input_modal=YourInput on "
                "@yurt.realtime so that each arrives as the model"
            )


def _model(where: str, role: str, annotation: Any) -> type[BaseModel] | None:
    if annotation is None or annotation is Any or annotation is dict:
        return None
    if typing.get_origin(annotation) is dict:
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    raise AppDefinitionError(
        f"{where}: its {role} is annotated {annotation!r}; a realtime {role} is a pydantic "
        "BaseModel subclass (or dict), sent as a msgpack map"
    )
