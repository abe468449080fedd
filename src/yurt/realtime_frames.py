"""The realtime wire format, without I/O: msgpack frames out and in, and the control messages.

A realtime session speaks fal's protocol: each input and each output is one binary websocket
frame holding a msgpack map (``use_bin_type``, so ``bytes`` travel as msgpack bin and come back
as ``bytes``); control messages are JSON text frames with a ``type`` of ``x-fal-error`` (the
session ends: ``error`` is a code, ``reason`` says why) or ``x-fal-message`` (information a
client skips). Both the runner's session and yurt's client read and write through here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import msgpack
from pydantic import BaseModel, ValidationError

# Codes of an ``x-fal-error`` message. fal's runner sends INTERNAL_ERROR and TIMEOUT; an input
# that does not decode or validate gets VALIDATION_ERROR here (fal sends INTERNAL_ERROR for it).
ErrorCode = Literal["INTERNAL_ERROR", "TIMEOUT", "VALIDATION_ERROR", "BAD_REQUEST"]
# fal's runner ends a session that saw no input for session_timeout (and every streaming
# session once its outputs are out) with this reason; fal's clients raise it as an error.
TIMEOUT_REASON = "no inputs, reconnect when needed!"
# ``max_buffering`` a client may ask for: fal-client's and fal-js's bounds.
MAX_BUFFERING_RANGE = (1, 60)

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]


class FrameError(ValueError):
    """An input frame that cannot become an input: not msgpack, not a map, or invalid."""


def encode(message: Any) -> bytes:
    """One msgpack frame, as fal packs it (``bytes`` as msgpack bin)."""
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def decode(frame: bytes) -> Any:
    """A msgpack frame's value (strings as ``str``, bin as ``bytes``)."""
    return msgpack.unpackb(frame, raw=False)


def error_message(code: ErrorCode, reason: str) -> str:
    """The JSON text of an ``x-fal-error`` control message."""
    return _compact({"type": "x-fal-error", "error": code, "reason": reason})


def timings_message(seconds: float) -> str:
    """The JSON text of fal's ``timings`` information message."""
    return _compact({"type": "x-fal-message", "action": "timings", "timing": seconds})


def _compact(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def to_input(frame: bytes, model: type[BaseModel] | None, decoder: Decoder | None = None) -> Any:
    """What the endpoint gets for one input frame: the model built from the map, or the
    decoded value itself when the endpoint declares no model. Raises ``FrameError``."""
    try:
        value = (decoder or decode)(frame)
    except Exception as exc:
        raise FrameError(f"the input frame is not valid msgpack: {exc}") from exc
    if model is None:
        return value
    if not isinstance(value, dict):
        raise FrameError(
            f"the input frame holds a {type(value).__name__}; a map of "
            f"{model.__name__}'s fields is expected"
        )
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise FrameError(validation_reason(exc)) from exc


def validation_reason(exc: ValidationError) -> str:
    """One line naming each invalid field, without echoing the input."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '(input)'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return f"invalid input ({'; '.join(parts)})"


def to_output(value: Any, encoder: Encoder | None = None) -> bytes:
    """One output frame from what the endpoint returned: a pydantic model or a dict.

    A model is dumped in Python mode, as fal's ``.dict()`` does, so that ``bytes`` fields
    travel as msgpack bin. Anything else is a ``TypeError`` naming the type.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump()
    elif not isinstance(value, dict):
        raise TypeError(
            f"a realtime endpoint must return a dict or a pydantic model, not a "
            f"{type(value).__name__}"
        )
    return (encoder or encode)(value)


def parse_max_buffering(raw: str | None) -> int | None:
    """The ``max_buffering`` query parameter a client connected with, checked (1..60)."""
    if raw is None or raw == "":
        return None
    low, high = MAX_BUFFERING_RANGE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not low <= value <= high:
        raise ValueError(f"max_buffering={raw!r} must be an integer from {low} to {high}")
    return value


def control(text: str) -> dict[str, Any] | None:
    """A text frame read by a client: the JSON object it holds; None for non-JSON text."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None
