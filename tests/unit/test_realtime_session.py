"""Tests for a realtime session: fal's buffering, batching, timeouts and endings.

The session talks to its ``Channel`` seam; here that is an in-memory websocket, so each
behaviour is pinned without a network (the runner tests drive the same code over a socket).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgpack
import pytest
from pydantic import BaseModel

import yurt
from yurt.realtime_channel import ChannelClosed
from yurt.realtime_endpoint import RealtimeEndpoint, realtime_of
from yurt.realtime_frames import encode
from yurt.realtime_session import run_session, take_batch

DEADLINE = 30.0


class In(BaseModel):
    """A realtime input."""

    n: int
    key: str = "a"

    def can_batch(self, other: In, batch_size: int) -> bool:
        """Only inputs of one key batch together (fal's hook)."""
        return other.key == self.key


class Out(BaseModel):
    """A realtime output."""

    ns: list[int]


class MemoryChannel:
    """A websocket in memory: the test plays the client."""

    def __init__(self) -> None:
        self.inbound: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.sent: list[bytes | str] = []
        self.receives = 0
        self.closed = False
        self._changed = asyncio.Event()

    def feed(self, *values: Any) -> None:
        for value in values:
            self.inbound.put_nowait(encode(value) if not isinstance(value, bytes) else value)

    def hang_up(self) -> None:
        self.inbound.put_nowait(None)

    async def receive(self) -> bytes:
        self.receives += 1
        self._changed.set()
        frame = await self.inbound.get()
        if frame is None:
            self.inbound.put_nowait(None)
            raise ChannelClosed("hung up")
        assert isinstance(frame, bytes)
        return frame

    async def send(self, frame: bytes | str) -> None:
        if self.closed:
            raise ChannelClosed("closed")
        self.sent.append(frame)
        self._changed.set()

    async def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def outputs(self) -> list[Any]:
        return [msgpack.unpackb(f) for f in self.sent if isinstance(f, bytes)]

    def ending(self) -> dict[str, Any] | None:
        texts = [json.loads(f) for f in self.sent if isinstance(f, str)]
        return texts[-1] if texts else None


def endpoint(func: Any, **options: Any) -> RealtimeEndpoint:
    rt = realtime_of(yurt.realtime("/realtime", **options)(func))
    assert rt is not None
    return rt


async def serve(rt: RealtimeEndpoint, channel: MemoryChannel, **kw: Any) -> asyncio.Task[None]:
    return asyncio.create_task(run_session(object(), channel, rt, **kw))


class Gate:
    """Holds the first call until opened, so that inputs pile up behind it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()
        self.batches: list[list[int]] = []

    def endpoint(self, **options: Any) -> RealtimeEndpoint:
        async def gated(_: Any, *inputs: In) -> Out:
            self.batches.append([i.n for i in inputs])
            self.entered.set()
            await self.open.wait()
            return Out(ns=[i.n for i in inputs])

        return endpoint(gated, input_modal=In, **options)


async def test_a_full_buffer_drops_the_oldest_input() -> None:
    """With buffering=2, inputs arriving during a call keep only the newest two (fal's deque)."""
    gate, channel = Gate(), MemoryChannel()
    rt = gate.endpoint(buffering=2, session_timeout=DEADLINE)
    task = await serve(rt, channel)
    channel.feed({"n": 1})
    await asyncio.wait_for(gate.entered.wait(), DEADLINE)
    channel.feed(*({"n": n} for n in (2, 3, 4, 5)))
    await channel.until(lambda: channel.receives == 6)  # all five read in
    gate.open.set()
    await channel.until(lambda: len(channel.outputs()) == 3)
    assert channel.outputs() == [{"ns": [1]}, {"ns": [4]}, {"ns": [5]}]
    channel.hang_up()
    await asyncio.wait_for(task, DEADLINE)


async def test_client_max_buffering_overrides_the_apps() -> None:
    """A client's max_buffering=1 keeps only the newest waiting input."""
    gate, channel = Gate(), MemoryChannel()
    task = await serve(gate.endpoint(buffering=10), channel, max_buffering=1)
    channel.feed({"n": 1})
    await asyncio.wait_for(gate.entered.wait(), DEADLINE)
    channel.feed({"n": 2}, {"n": 3})
    await channel.until(lambda: channel.receives == 4)
    gate.open.set()
    await channel.until(lambda: len(channel.outputs()) == 2)
    assert channel.outputs() == [{"ns": [1]}, {"ns": [3]}]
    channel.hang_up()
    await asyncio.wait_for(task, DEADLINE)


async def test_waiting_inputs_batch_up_to_max_batch_size_and_can_batch() -> None:
    """Waiting inputs go to one call, up to max_batch_size, split where can_batch says no."""
    gate, channel = Gate(), MemoryChannel()
    task = await serve(gate.endpoint(max_batch_size=3), channel)
    channel.feed({"n": 1})
    await asyncio.wait_for(gate.entered.wait(), DEADLINE)
    channel.feed(*({"n": n} for n in (2, 3, 4, 5)), {"n": 6, "key": "b"})
    await channel.until(lambda: channel.receives == 7)
    gate.open.set()
    await channel.until(lambda: len(channel.outputs()) == 4)
    assert gate.batches == [[1], [2, 3, 4], [5], [6]]
    channel.hang_up()
    await asyncio.wait_for(task, DEADLINE)


def test_take_batch_asks_the_first_input() -> None:
    """take_batch stops where the first input's can_batch refuses the next one."""
    from collections import deque

    items = deque([In(n=1), In(n=2), In(n=3, key="b"), In(n=4)])
    assert [i.n for i in take_batch(items, 10)] == [1, 2]
    assert [i.n for i in take_batch(items, 10)] == [3]
    assert take_batch(deque([1, 2, 3]), 2) == [1, 2]


async def test_session_timeout_answers_what_waits_then_says_timeout() -> None:
    """No input for session_timeout: the waiting inputs are answered, then TIMEOUT, close."""

    def echo(self: Any, input: In) -> Out:
        return Out(ns=[input.n])

    channel = MemoryChannel()
    channel.feed({"n": 1}, {"n": 2})
    await asyncio.wait_for(await serve(endpoint(echo, session_timeout=0.2), channel), DEADLINE)
    assert channel.outputs() == [{"ns": [1]}, {"ns": [2]}]
    assert channel.ending() == {
        "type": "x-fal-error",
        "error": "TIMEOUT",
        "reason": "no inputs, reconnect when needed!",
    }
    assert channel.closed


async def test_an_endpoint_error_ends_the_session_naming_it() -> None:
    """An exception in the endpoint: x-fal-error INTERNAL_ERROR with its type and message."""

    def boom(self: Any, input: In) -> Out:
        raise ValueError("no good")

    channel = MemoryChannel()
    channel.feed({"n": 1})
    await asyncio.wait_for(await serve(endpoint(boom), channel), DEADLINE)
    assert channel.ending() == {
        "type": "x-fal-error",
        "error": "INTERNAL_ERROR",
        "reason": "ValueError: no good",
    }
    assert channel.closed


async def test_an_invalid_input_ends_the_session_with_validation_error() -> None:
    """An input the model refuses: VALIDATION_ERROR naming the field."""

    def echo(self: Any, input: In) -> Out:
        return Out(ns=[input.n])

    channel = MemoryChannel()
    channel.feed({"n": "x"})
    await asyncio.wait_for(await serve(endpoint(echo), channel), DEADLINE)
    ending = channel.ending()
    assert ending is not None and ending["error"] == "VALIDATION_ERROR"
    assert "n:" in ending["reason"]


async def test_a_hang_up_cancels_the_call_in_progress_and_says_nothing() -> None:
    """The client hanging up cancels an async call at once; no message is sent."""
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def slow(self: Any, input: In) -> Out:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Out(ns=[])

    channel = MemoryChannel()
    task = await serve(endpoint(slow), channel)
    channel.feed({"n": 1})
    await asyncio.wait_for(entered.wait(), DEADLINE)
    channel.hang_up()
    await asyncio.wait_for(task, DEADLINE)
    assert cancelled.is_set()
    assert channel.sent == []


async def test_server_streaming_sends_each_output_then_ends() -> None:
    """One input, an output per yielded item (async or a sync generator), then TIMEOUT."""

    async def count(self: Any, input: In) -> AsyncIterator[Out]:
        for i in range(input.n):
            yield Out(ns=[i])

    def count_sync(self: Any, input: In) -> Iterator[Out]:
        for i in range(input.n):
            yield Out(ns=[i])

    for func in (count, count_sync):
        channel = MemoryChannel()
        channel.feed({"n": 3})
        await asyncio.wait_for(await serve(endpoint(func), channel), DEADLINE)
        assert channel.outputs() == [{"ns": [0]}, {"ns": [1]}, {"ns": [2]}]
        ending = channel.ending()
        assert ending is not None and ending["error"] == "TIMEOUT"


async def test_client_streaming_reads_until_the_timeout_then_answers_once() -> None:
    """Inputs stream into one call until session_timeout; its one output follows."""

    async def total(self: Any, inputs: AsyncIterator[In]) -> Out:
        return Out(ns=[sum([i.n async for i in inputs])])

    channel = MemoryChannel()
    channel.feed({"n": 1}, {"n": 2}, {"n": 3})
    rt = endpoint(total, session_timeout=0.2)
    await asyncio.wait_for(await serve(rt, channel), DEADLINE)
    assert channel.outputs() == [{"ns": [6]}]


async def test_bidi_interleaves_inputs_and_outputs() -> None:
    """Each input can be answered before the next is sent."""

    async def double(self: Any, inputs: AsyncIterator[In]) -> AsyncIterator[Out]:
        async for i in inputs:
            yield Out(ns=[i.n * 2])

    channel = MemoryChannel()
    task = await serve(endpoint(double, session_timeout=DEADLINE), channel)
    for n in (1, 2):
        channel.feed({"n": n})
        await channel.until(lambda n=n: len(channel.outputs()) == n)  # type: ignore[misc]
    assert channel.outputs() == [{"ns": [2]}, {"ns": [4]}]
    channel.hang_up()
    await asyncio.wait_for(task, DEADLINE)


async def test_sync_endpoints_run_off_the_event_loop() -> None:
    """A sync unary endpoint runs on a worker thread."""
    threads: list[int] = []

    def where(self: Any, input: In) -> Out:
        threads.append(threading.get_ident())
        return Out(ns=[])

    channel = MemoryChannel()
    channel.feed({"n": 1})
    await asyncio.wait_for(await serve(endpoint(where, session_timeout=0.2), channel), DEADLINE)
    assert threads and threads[0] != threading.get_ident()


@pytest.mark.parametrize("bad", [[1], "text"])
async def test_returning_neither_model_nor_dict_is_an_internal_error(bad: Any) -> None:
    """What msgpack maps cannot hold ends the session with INTERNAL_ERROR naming the type."""

    def wrong(self: Any, input: dict[str, Any]) -> Any:
        return bad

    channel = MemoryChannel()
    channel.feed({"n": 1})
    await asyncio.wait_for(await serve(endpoint(wrong), channel), DEADLINE)
    ending = channel.ending()
    assert ending is not None and ending["error"] == "INTERNAL_ERROR"
    assert "dict or a pydantic model" in ending["reason"]


async def test_starlette_websocket_text_frames_are_refused_and_binary_served() -> None:
    """Behind starlette's (FastAPI's) WebSocket, as the runner hands it over: binary frames are
    served; a text frame ends the session with VALIDATION_ERROR; the socket is closed."""
    from starlette.websockets import WebSocket

    from yurt.realtime_session import serve_websocket

    def echo(self: Any, input: In) -> Out:
        return Out(ns=[input.n])

    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    incoming.put_nowait({"type": "websocket.connect"})
    incoming.put_nowait({"type": "websocket.receive", "bytes": encode({"n": 7})})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if "bytes" in message:  # the output is out: now the bad frame
            incoming.put_nowait({"type": "websocket.receive", "text": "{}"})

    scope = {"type": "websocket", "path": "/realtime", "query_string": b"", "headers": []}
    websocket = WebSocket(scope, incoming.get, send)
    await asyncio.wait_for(serve_websocket(object(), websocket, endpoint(echo)), DEADLINE)
    kinds = [m["type"] for m in sent]
    assert kinds == ["websocket.accept", "websocket.send", "websocket.send", "websocket.close"]
    assert msgpack.unpackb(sent[1]["bytes"]) == {"ns": [7]}
    ending = json.loads(sent[2]["text"])
    assert ending["error"] == "VALIDATION_ERROR"
    assert "binary msgpack" in ending["reason"]
