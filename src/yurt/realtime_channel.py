"""How a realtime session meets its websocket: the ``Channel`` it reads and writes, the
adapter over starlette's (FastAPI's) websocket the runner hands a realtime method, and the
``Outbox`` that sends outputs in order without holding up the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from yurt.realtime_frames import FrameError


class ChannelClosed(Exception):
    """The client hung up (or the connection broke): nothing more can be said to it."""


class Channel(Protocol):
    """A websocket as a session sees it: whole frames, and ``ChannelClosed`` once it is gone."""

    async def receive(self) -> bytes:
        """The next binary frame; ``FrameError`` for a text frame; ``ChannelClosed``."""
        ...

    async def send(self, frame: bytes | str) -> None:
        """Send a binary (bytes) or text (str) frame; ``ChannelClosed`` if it cannot go."""
        ...

    async def close(self) -> None:
        """Close normally; never raises."""
        ...


# -- sending -----------------------------------------------------------------------------------


class Outbox:
    """Outputs on their way out, sent by a task of their own so that the next call need not
    wait for a slow client; at most ``maxsize`` wait, and a full outbox holds the caller back
    (fal's is ``buffering * 2`` long). ``ChannelClosed`` once sending failed."""

    def __init__(self, channel: Channel, maxsize: int) -> None:
        self._channel = channel
        self._queue: asyncio.Queue[bytes | str] = asyncio.Queue(maxsize)
        self._sender = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            frame = await self._queue.get()
            await self._channel.send(frame)
            self._queue.task_done()

    def _check(self) -> None:
        if self._sender.done():
            exc = None if self._sender.cancelled() else self._sender.exception()
            raise ChannelClosed("the client is gone") from exc

    async def put(self, frame: bytes | str) -> None:
        self._check()
        try:
            self._queue.put_nowait(frame)
            return
        except asyncio.QueueFull:
            pass
        waiting = asyncio.ensure_future(self._queue.put(frame))
        await asyncio.wait({waiting, self._sender}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
        self._check()

    async def finish(self) -> None:
        """Wait until every output is sent (or sending failed), then stop the sender."""
        drained = asyncio.ensure_future(self._queue.join())
        try:
            await asyncio.wait({drained, self._sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            failed = self._sender.done() and not self._sender.cancelled()
            self._sender.cancel()
            with contextlib.suppress(BaseException):
                await self._sender
        if failed:
            raise ChannelClosed("the client is gone")


# -- adapters ----------------------------------------------------------------------------------


class StarletteChannel:
    """A starlette (FastAPI) ``WebSocket`` as a ``Channel``."""

    def __init__(self, websocket: Any) -> None:
        self._ws = websocket
        self._closed = False

    async def receive(self) -> bytes:
        if self._closed:
            raise ChannelClosed("the client is gone")
        try:
            message = await self._ws.receive()
        except Exception as exc:  # starlette raises RuntimeError past a disconnect
            self._closed = True
            raise ChannelClosed(str(exc)) from exc
        if message["type"] == "websocket.disconnect":
            self._closed = True
            raise ChannelClosed(f"closed with code {message.get('code')}")
        if message.get("bytes") is not None:
            return bytes(message["bytes"])
        raise FrameError("input frames are binary msgpack; this one was text")

    async def send(self, frame: bytes | str) -> None:
        if self._closed:
            raise ChannelClosed("the client is gone")
        try:
            if isinstance(frame, bytes):
                await self._ws.send_bytes(frame)
            else:
                await self._ws.send_text(frame)
        except Exception as exc:
            self._closed = True
            raise ChannelClosed(str(exc)) from exc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._closed = True
