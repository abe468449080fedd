"""Realtime sessions from the client: ``client.connect(app)``, as fal-client's ``realtime``.

A connection sends each input as a msgpack frame and reads outputs back; it speaks the same
frames as ``@yurt.realtime`` (and fal's realtime endpoints)::

    with yurt.Client("http://127.0.0.1:8080") as client, client.connect("default/draw") as rt:
        rt.send({"prompt": "a yurt"})
        print(rt.recv())

``recv`` skips information messages, returns None once the session closed normally, and
raises ``RealtimeError`` for an ``x-fal-error`` message or a broken connection. Both the
blocking and the asyncio connection run on the ``websockets`` library.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlencode

from pydantic import BaseModel

from yurt.client.protocol import Reply, endpoint_url, lower_headers, request_failed, unreachable
from yurt.errors import YurtError
from yurt.realtime_frames import (
    MAX_BUFFERING_RANGE,
    Decoder,
    Encoder,
    control,
    decode,
    encode,
    parse_max_buffering,
)

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection as AsyncWebSocket
    from websockets.sync.client import ClientConnection as SyncWebSocket

REALTIME_PATH = "/realtime"


class RealtimeError(YurtError):
    """The session ended in error: the endpoint's ``x-fal-error`` (``error`` is its code:
    ``INTERNAL_ERROR``, ``VALIDATION_ERROR``, ``TIMEOUT``...), or ``CONNECTION_CLOSED``."""

    def __init__(self, error: str, reason: str = "", payload: Mapping[str, Any] | None = None):
        super().__init__(f"{error}: {reason}" if reason else error)
        self.error = error
        self.reason = reason
        self.payload = dict(payload or {})


# -- pure --------------------------------------------------------------------------------------


def websocket_url(base: str, app: str, path: str = "") -> str:
    """The ws:// (wss:// for https) URL of ``app`` at ``path`` on the router at ``base``."""
    url = endpoint_url(base, app, path)
    return "wss:" + url[len("https:") :] if url.startswith("https:") else "ws:" + url[5:]


def realtime_url(
    base: str, app: str, path: str = REALTIME_PATH, max_buffering: int | None = None
) -> str:
    """The websocket URL of ``app``'s realtime endpoint on the router at ``base``."""
    url = websocket_url(base, app, path)
    if max_buffering is not None:
        parse_max_buffering(str(max_buffering))  # 1..60, as fal-client checks it
        url += "?" + urlencode({"max_buffering": max_buffering})
    return url


def outgoing(arguments: BaseModel | Mapping[str, Any], encoder: Encoder | None) -> bytes:
    """The frame for one input: a model's fields or a mapping, packed."""
    if isinstance(arguments, BaseModel):
        value: Any = arguments.model_dump()
    elif isinstance(arguments, Mapping):
        value = dict(arguments)
    else:
        raise TypeError(f"send takes a dict or a pydantic model, not a {type(arguments).__name__}")
    return (encoder or encode)(value)


def incoming(frame: bytes | str, decoder: Decoder | None) -> dict[str, Any] | None:
    """An output from one frame; None for an information message; raises an error message."""
    if isinstance(frame, bytes):
        value = (decoder or decode)(frame)
        return value if isinstance(value, dict) else {"payload": value}
    payload = control(frame)
    if payload is None:
        return {"type": "text", "payload": frame}
    if payload.get("type") == "x-fal-error":
        raise RealtimeError(
            str(payload.get("error", "UNKNOWN_ERROR")), str(payload.get("reason") or ""), payload
        )
    if payload.get("type") == "x-fal-message":
        return None
    return payload


def _refused(url: str, exc: BaseException, timeout: float) -> YurtError:
    """A failed opening: the router's error reply when it sent one, else unreachable."""
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        reply = Reply(response.status_code, lower_headers(response.headers), response.body or b"")
        return request_failed(reply)
    return unreachable(url, exc, timeout)


def _closed(exc: BaseException) -> dict[str, Any] | None:
    from websockets.exceptions import ConnectionClosedOK

    if isinstance(exc, ConnectionClosedOK):
        return None
    raise RealtimeError("CONNECTION_CLOSED", str(exc)) from exc


_OPEN_ERRORS = (OSError, TimeoutError)


def handshake_headers(headers: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """(headers, user agent) for the opening handshake: the client's own headers but for
    ``accept`` (a websocket answers no JSON), the user agent apart as websockets wants it."""
    out = {k: v for k, v in headers.items() if k.lower() not in ("accept", "user-agent")}
    agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), None)
    return out, agent


def open_sync(
    url: str, headers: Mapping[str, str], *, timeout: float, ssl_context: ssl.SSLContext | None
) -> SyncWebSocket:
    """A blocking websocket to ``url``; ``RequestFailed`` (refused) or ``ConnectionFailed``."""
    from websockets.exceptions import InvalidHandshake
    from websockets.sync.client import connect

    extra, agent = handshake_headers(headers)
    try:
        # Entered at once: websockets >= 17.1 warns about a connection opened otherwise; the
        # connection's own close() ends it.
        return connect(
            url,
            additional_headers=extra,
            user_agent_header=agent,
            ssl=ssl_context,
            open_timeout=timeout,
            max_size=None,
            proxy=None,  # as the HTTP calls: no proxy from the environment
        ).__enter__()
    except (*_OPEN_ERRORS, InvalidHandshake) as exc:
        raise _refused(url, exc, timeout) from exc


async def open_async(
    url: str, headers: Mapping[str, str], *, timeout: float, ssl_context: ssl.SSLContext | None
) -> AsyncWebSocket:
    """The asyncio twin of ``open_sync``."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake

    extra, agent = handshake_headers(headers)
    try:
        return await connect(
            url,
            additional_headers=extra,
            user_agent_header=agent,
            ssl=ssl_context,
            open_timeout=timeout,
            max_size=None,
            proxy=None,
        )
    except (*_OPEN_ERRORS, InvalidHandshake) as exc:
        raise _refused(url, exc, timeout) from exc


# -- blocking ----------------------------------------------------------------------------------


class RealtimeConnection:
    """A blocking realtime session; iterate it for outputs until it closes."""

    def __init__(
        self, ws: SyncWebSocket, encoder: Encoder | None = None, decoder: Decoder | None = None
    ) -> None:
        self._ws = ws
        self._encoder, self._decoder = encoder, decoder

    @classmethod
    def open(
        cls,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
        encoder: Encoder | None = None,
        decoder: Decoder | None = None,
    ) -> RealtimeConnection:
        """Open a session at ``url``; ``RequestFailed`` or ``ConnectionFailed`` if it fails."""
        ws = open_sync(url, headers, timeout=timeout, ssl_context=ssl_context)
        return cls(ws, encoder, decoder)

    def send(self, arguments: BaseModel | Mapping[str, Any]) -> None:
        """Send one input."""
        from websockets.exceptions import ConnectionClosed

        try:
            self._ws.send(outgoing(arguments, self._encoder))
        except ConnectionClosed as exc:
            raise RealtimeError("CONNECTION_CLOSED", str(exc)) from exc

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next output; None once the session closed normally. ``TimeoutError`` past
        ``timeout`` seconds without one."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                frame = self._ws.recv(timeout)
            except ConnectionClosed as exc:
                return _closed(exc)
            output = incoming(frame, self._decoder)
            if output is not None:
                return output

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (output := self.recv()) is not None:
            yield output

    def close(self) -> None:
        """Close the session."""
        self._ws.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- asyncio -----------------------------------------------------------------------------------


class AsyncRealtimeConnection:
    """The asyncio twin of ``RealtimeConnection``; ``async for`` it for outputs."""

    def __init__(
        self, ws: AsyncWebSocket, encoder: Encoder | None = None, decoder: Decoder | None = None
    ) -> None:
        self._ws = ws
        self._encoder, self._decoder = encoder, decoder

    @classmethod
    async def open(
        cls,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
        encoder: Encoder | None = None,
        decoder: Decoder | None = None,
    ) -> AsyncRealtimeConnection:
        """Open a session at ``url``; ``RequestFailed`` or ``ConnectionFailed`` if it fails."""
        ws = await open_async(url, headers, timeout=timeout, ssl_context=ssl_context)
        return cls(ws, encoder, decoder)

    async def send(self, arguments: BaseModel | Mapping[str, Any]) -> None:
        """Send one input."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(outgoing(arguments, self._encoder))
        except ConnectionClosed as exc:
            raise RealtimeError("CONNECTION_CLOSED", str(exc)) from exc

    async def recv(self) -> dict[str, Any] | None:
        """The next output; None once the session closed normally."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                frame = await self._ws.recv()
            except ConnectionClosed as exc:
                return _closed(exc)
            output = incoming(frame, self._decoder)
            if output is not None:
                return output

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while (output := await self.recv()) is not None:
            yield output

    async def close(self) -> None:
        """Close the session."""
        await self._ws.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = [
    "MAX_BUFFERING_RANGE",
    "REALTIME_PATH",
    "AsyncRealtimeConnection",
    "RealtimeConnection",
    "RealtimeError",
    "open_async",
    "open_sync",
    "realtime_url",
    "websocket_url",
]
