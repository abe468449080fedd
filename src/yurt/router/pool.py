"""Keep-alive HTTP/1.1 connection pool to one upstream server.

The router forwards every request to a runner through this pool, so it sits on the hot path.
The pool writes each request with a single ``transport.write`` on a connection it takes from
its idle ones or opens (connection.py: the connection, its response parsing, the idle stack);
what comes back is an ``UpstreamResponse``, its body whole or a ``BodyStream`` (upstream.py).

The pool never retries a request: a failure is reported as an
:class:`UpstreamError` whose ``kind`` lets the caller decide, because only the
caller knows whether the request is safe to send again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from yurt.router.connection import IdleConnections, UpstreamConnection
from yurt.router.upstream import (
    BodyStream,
    Receiver,
    UpstreamError,
    UpstreamErrorKind,
    UpstreamResponse,
)

__all__ = [
    "BodyStream",
    "ConnectionPool",
    "UpstreamError",
    "UpstreamErrorKind",
    "UpstreamResponse",
]


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections to a single ``host:port``.

    Connections are reused LIFO (``IdleConnections``), so a burst that has passed leaves the
    surplus connections cold where the server's keep-alive timeout can reap them.
    """

    __slots__ = ("_connect_timeout", "_host", "_idle", "_port", "_request_tail")

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_idle: int = 64,
        connect_timeout: float = 5.0,
        max_idle_age: float = 600.0,
        token: str = "",
    ) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._idle = IdleConnections(max_idle, max_idle_age)
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # Everything between the target and the body length is constant, the runner's token
        # (runner/token.py) with it.
        shown = f"x-yurt-runner-token: {token}\r\n" if token else ""
        self._request_tail = f" HTTP/1.1\r\nhost: {authority}\r\n{shown}content-length: ".encode()

    @property
    def idle_count(self) -> int:
        """Number of open connections waiting for a request."""
        return len(self._idle.conns)

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] | bytes,
        body: bytes,
        # A per-call deadline that is cheaper than asyncio.timeout on the hot path.
        timeout: float | None,
        *,
        stream: bool = False,
    ) -> UpstreamResponse:
        """Send one request and return the complete response.

        ``headers`` must not contain host, content-length or connection; they
        are written by the pool. Given as bytes, they are header lines already framed
        (``name: value\r\n`` each), written as they are. ``timeout`` bounds the wait for
        the response (not the connect, which ``connect_timeout`` bounds); ``None`` waits
        forever. Raises :class:`UpstreamError`; the request is never retried,
        not even when a reused idle connection turns out to have been closed
        by the server (kind ``"disconnected"``). ``stream``: a streamed response
        comes back at its head, with its ``stream`` to read the body from.
        """
        conn = self._idle.take()
        if conn is None:
            if self._idle.closed:
                raise UpstreamError("connect_error", "connection pool is closed")
            conn = await self._connect()
        waiter = self._send(conn, method, target, headers, body, timeout, stream)
        try:
            return await waiter
        except asyncio.CancelledError:
            conn.abandon(waiter)
            raise

    def send(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] | bytes,
        body: bytes,
        timeout: float | None,
    ) -> asyncio.Future[UpstreamResponse] | None:
        """``request`` without a coroutine, on an idle connection: the response's future
        (failed with the ``UpstreamError`` that ``request`` would raise), or None when there is
        no idle connection (or the pool is closed): then call ``request``.

        A caller that gives up cancels the future; that closes the connection, as ``request``
        does when cancelled.
        """
        conn = self._idle.take()
        if conn is None:
            return None
        waiter = self._send(conn, method, target, headers, body, timeout)
        waiter.add_done_callback(conn.abandon_if_cancelled)
        return waiter

    def forward(
        self,
        receiver: Receiver,
        target: bytes,
        headers: bytes,
        body: bytes,
        timeout: float | None,
    ) -> bool:
        """``request`` for a POST, without a coroutine or a future, on an idle connection: the
        response (a streamed one at its head) or its ``UpstreamError`` goes to ``receiver``.
        False, with nothing sent, when there is no idle connection (or the pool is closed).

        ``headers``: header lines already framed. A receiver that gives up on a pending
        response calls the connection's ``abandon`` with itself.
        """
        conn = self._idle.take()
        if conn is None:
            return False
        conn.arm(receiver, False, timeout, True)
        tail = self._request_tail
        conn.transport.write(
            b"".join((b"POST ", target, tail, b"%d\r\n" % len(body), headers, b"\r\n", body))
        )
        return True

    def _send(
        self,
        conn: UpstreamConnection,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] | bytes,
        body: bytes,
        timeout: float | None,
        stream: bool = False,
    ) -> asyncio.Future[UpstreamResponse]:
        parts = [method, b" ", target, self._request_tail, b"%d\r\n" % len(body)]
        if isinstance(headers, bytes):
            parts.append(headers)
        else:
            for name, value in headers:
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        parts.append(body)
        waiter = conn.begin(method == b"HEAD", timeout, stream)
        conn.transport.write(b"".join(parts))
        return waiter

    async def close(self) -> None:
        """Close idle connections and refuse requests from now on.

        Requests already in flight finish normally; their connections are
        closed instead of being returned to the pool.
        """
        await self._idle.close()

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        where = f"{self._host}:{self._port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self._idle, loop), self._host, self._port
                )
        except ConnectionRefusedError as exc:
            raise UpstreamError("connect_refused", f"connection to {where} refused") from exc
        except TimeoutError as exc:
            raise UpstreamError(
                "connect_error", f"connecting to {where} timed out after {self._connect_timeout}s"
            ) from exc
        except OSError as exc:
            raise UpstreamError("connect_error", f"cannot connect to {where}: {exc}") from exc
        return conn
