"""One realtime session on a runner: inputs in, the endpoint called, outputs out, then the end.

It follows fal's runner (``fal.realtime``) where that defines behaviour:

- *unary*: inputs wait in a buffer of ``buffering`` (the client's ``max_buffering`` when it
  asked for one) that drops the oldest input when a new one arrives and it is full; each call
  takes up to ``max_batch_size`` waiting inputs, fewer where the first input's
  ``can_batch(next, batch_size)`` says no. Outputs leave in the order they were made.
- a session with no input for ``session_timeout`` seconds ends: the unanswered inputs are still
  answered, then an ``x-fal-error`` ``TIMEOUT`` message and a close (as a streaming session ends
  once its outputs are out: fal's clients expect exactly that message).
- an endpoint that raises ends the session with ``INTERNAL_ERROR`` naming the exception; an
  input that is not msgpack or not valid for the model, with ``VALIDATION_ERROR``.
- a client that hangs up ends the session silently. It and an invalid input end it at once:
  the call in progress is cancelled (async) or finishes unobserved (sync).

The session talks to a ``Channel`` (``yurt.realtime_channel``): the runner's websocket behind a
small adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import BaseModel

from yurt.realtime_channel import Channel, ChannelClosed, Outbox, StarletteChannel
from yurt.realtime_frames import (
    TIMEOUT_REASON,
    ErrorCode,
    FrameError,
    error_message,
    parse_max_buffering,
    to_input,
    to_output,
)

if TYPE_CHECKING:
    # Only a type here: realtime_endpoint imports this module when a session starts.
    from yurt.realtime_endpoint import RealtimeEndpoint

log = structlog.get_logger("yurt.realtime")

# How a session ended: the message said before closing, or nothing (the client is gone).
Ending = tuple[ErrorCode, str] | None
_TIMED_OUT: Ending = ("TIMEOUT", TIMEOUT_REASON)


async def run_session(
    instance: Any, channel: Channel, rt: RealtimeEndpoint, *, max_buffering: int | None = None
) -> None:
    """Serve one accepted connection until it ends, then close it."""
    buffering = max_buffering or rt.settings.buffering
    outbox = Outbox(channel, maxsize=(buffering or 1) * 2)
    ending: Ending
    try:
        try:
            ending = await _MODES[rt.settings.mode](instance, channel, rt, outbox, buffering)
        finally:
            await outbox.finish()
    except ChannelClosed:
        ending = None
    except FrameError as exc:
        ending = ("VALIDATION_ERROR", str(exc))
    except Exception as exc:
        log.exception("realtime_endpoint_failed", endpoint=rt.name)
        ending = ("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
    if ending is not None:
        with contextlib.suppress(ChannelClosed):
            await channel.send(error_message(*ending))
    await channel.close()


async def serve_websocket(instance: Any, websocket: Any, rt: RealtimeEndpoint) -> None:
    """A realtime method's body: accept the runner's websocket (starlette's) and serve it."""
    channel = StarletteChannel(websocket)
    await websocket.accept()
    try:
        max_buffering = parse_max_buffering(websocket.query_params.get("max_buffering"))
    except ValueError as exc:
        with contextlib.suppress(ChannelClosed):
            await channel.send(error_message("BAD_REQUEST", str(exc)))
        await channel.close()
        return
    await run_session(instance, channel, rt, max_buffering=max_buffering)


# -- unary: a buffer of inputs, batches, one output each --------------------------------------


def take_batch(items: deque[Any], size: int) -> list[Any]:
    """Up to ``size`` inputs off the front of ``items``, as fal batches: the first input's
    ``can_batch(next_input, batch_size)``, where it has one, may stop the batch early."""
    batch = [items.popleft()]
    first = batch[0]
    can_batch = getattr(first, "can_batch", None)
    while items and len(batch) < size:
        if callable(can_batch) and not can_batch(items[0], len(batch)):
            break
        batch.append(items.popleft())
    return batch


InboxState = Literal["open", "timed_out", "failed"]


class Inbox:
    """Inputs waiting for a call: a bounded buffer that drops the oldest, and how input ended.

    ``open`` -> ``timed_out`` (no input for session_timeout: what waits is still answered) or
    ``failed`` (the client hung up or sent a bad frame: the session stops at once).
    """

    def __init__(self, buffering: int | None) -> None:
        self.items: deque[Any] = deque(maxlen=buffering)
        self.state: InboxState = "open"
        self.error: BaseException | None = None
        self.failed = asyncio.Event()
        self._changed = asyncio.Event()

    def put(self, item: Any) -> None:
        self.items.append(item)  # a full deque drops its oldest: fal's buffering
        self._changed.set()

    def end(self, state: InboxState, error: BaseException | None = None) -> None:
        if self.state == "open":
            self.state, self.error = state, error
            if state == "failed":
                self.failed.set()
        self._changed.set()

    def raise_failure(self) -> None:
        if self.state == "failed":
            assert self.error is not None
            raise self.error

    async def next_batch(self, size: int) -> list[Any] | None:
        """The next batch to call with; None once input timed out and the buffer is empty."""
        while True:
            self.raise_failure()
            if self.items:
                return take_batch(self.items, size)
            if self.state == "timed_out":
                return None
            self._changed.clear()
            await self._changed.wait()


async def _read_into(
    channel: Channel, rt: RealtimeEndpoint, inbox: Inbox, timeout: float | None
) -> None:
    try:
        while True:
            try:
                frame = await asyncio.wait_for(channel.receive(), timeout)
            except TimeoutError:
                inbox.end("timed_out")
                return
            inbox.put(to_input(frame, rt.input_model, rt.decoder))
    except Exception as exc:
        inbox.end("failed", exc)


async def _unary(
    instance: Any, channel: Channel, rt: RealtimeEndpoint, outbox: Outbox, buffering: int | None
) -> Ending:
    inbox = Inbox(buffering)
    reader = asyncio.create_task(_read_into(channel, rt, inbox, rt.settings.session_timeout))
    try:
        while (batch := await inbox.next_batch(rt.settings.max_batch_size)) is not None:
            output = await _unless_failed(inbox, _call(rt.func, instance, *batch))
            await outbox.put(to_output(output, rt.encoder))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return _TIMED_OUT


async def _unless_failed(inbox: Inbox, call: Awaitable[Any]) -> Any:
    """The call's result; the call cancelled as soon as the client hangs up or errs."""
    work = asyncio.ensure_future(call)
    failed = asyncio.ensure_future(inbox.failed.wait())
    try:
        await asyncio.wait({work, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    inbox.raise_failure()
    return work.result()


# -- streaming modes ---------------------------------------------------------------------------


async def _inputs(channel: Channel, rt: RealtimeEndpoint) -> AsyncIterator[Any]:
    """The inputs of a streaming session, ending when none came for session_timeout or the
    client hung up (as fal's; a reply to a client that hung up then goes nowhere)."""
    while True:
        try:
            frame = await asyncio.wait_for(channel.receive(), rt.settings.session_timeout)
        except (TimeoutError, ChannelClosed):
            return
        yield to_input(frame, rt.input_model, rt.decoder)


async def _server_streaming(
    instance: Any, channel: Channel, rt: RealtimeEndpoint, outbox: Outbox, _: int | None
) -> Ending:
    try:
        frame = await asyncio.wait_for(channel.receive(), rt.settings.session_timeout)
    except TimeoutError:
        return _TIMED_OUT
    value = to_input(frame, rt.input_model, rt.decoder)
    if inspect.isasyncgenfunction(rt.func):
        result = rt.func(instance, value)
    else:
        result = await _call(rt.func, instance, value)
    await _send_all(result, rt, outbox)
    return _TIMED_OUT


async def _client_streaming(
    instance: Any, channel: Channel, rt: RealtimeEndpoint, outbox: Outbox, _: int | None
) -> Ending:
    output = await rt.func(instance, _inputs(channel, rt))
    await outbox.put(to_output(output, rt.encoder))
    return _TIMED_OUT


async def _bidi(
    instance: Any, channel: Channel, rt: RealtimeEndpoint, outbox: Outbox, _: int | None
) -> Ending:
    result = rt.func(instance, _inputs(channel, rt))
    if inspect.isawaitable(result):
        result = await result
    await _send_all(result, rt, outbox)
    return _TIMED_OUT


async def _send_all(result: Any, rt: RealtimeEndpoint, outbox: Outbox) -> None:
    if hasattr(result, "__aiter__"):
        async with contextlib.aclosing(result) as outputs:
            async for output in outputs:
                await outbox.put(to_output(output, rt.encoder))
        return
    if isinstance(result, BaseModel | dict | str | bytes) or not hasattr(result, "__iter__"):
        raise TypeError(
            f"{rt.name} is annotated to stream outputs but returned a {type(result).__name__}; "
            "return (or yield from) an iterator of outputs"
        )
    iterator = iter(result)
    done = object()
    while (output := await asyncio.to_thread(next, iterator, done)) is not done:
        await outbox.put(to_output(output, rt.encoder))


_MODES: dict[str, Callable[..., Any]] = {
    "unary": _unary,
    "server_streaming": _server_streaming,
    "client_streaming": _client_streaming,
    "bidi": _bidi,
}


async def _call(func: Callable[..., Any], instance: Any, *args: Any) -> Any:
    if inspect.iscoroutinefunction(func):
        return await func(instance, *args)
    # A sync endpoint runs on a worker thread (with this context), so the loop keeps reading.
    return await asyncio.to_thread(func, instance, *args)
