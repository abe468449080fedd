"""Opening a websocket session on a runner: the upgrade request, and the runner's answer.

Each session has a connection of its own (the pool's connections carry one request at a time
and go back to the pool; a session keeps its connection until it ends) and one of the runner's
slots, so that sessions count toward the app's multiplexing as requests do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httptools

from yurt.backoff import capped_backoff
from yurt.router.http import Reply, end_to_end, error_reply, forward_headers
from yurt.router.pool import UpstreamError
from yurt.router.rules import direct_error, direct_status
from yurt.router.tunnel import Tunnel

if TYPE_CHECKING:
    from yurt.router.admitted import Upgrade
    from yurt.router.core import RequestCore
    from yurt.router.dispatch import Slot

Header = tuple[bytes, bytes]
CONNECT_TIMEOUT = 5.0
MAX_REFUSAL_BODY = 1 << 20  # what of a refusal's body is passed on
BUSY_PAUSE_FIRST, BUSY_PAUSE_MAX = 0.02, 0.5  # seconds between upgrades a busy runner refused


async def open_tunnel(
    core: RequestCore, upgrade: Upgrade, client_headers: Sequence[Header], request_id: bytes
) -> Tunnel | Reply:
    """The runner's connection after its ``101``, holding a slot; else the reply to send.

    A runner that answers ``429 runner_busy`` is still finishing a session whose socket has
    closed (the router gave its slot back at the close): the upgrade waits and asks again, as a
    sync call's 429 is retried, until the app's dispatch deadline.
    """
    route = upgrade.route
    loop = asyncio.get_running_loop()
    deadline = loop.time() + core.router.dispatch_timeout(route.spec)
    refused = 0
    while True:
        opened = await _open_once(core, upgrade, client_headers, request_id)
        busy = isinstance(opened, Reply) and opened.status == 429 and _says_busy(opened)
        refused += 1
        pause = capped_backoff(refused, first=BUSY_PAUSE_FIRST, cap=BUSY_PAUSE_MAX)
        if not busy or loop.time() + pause > deadline:
            return opened
        await asyncio.sleep(pause)


def _says_busy(reply: Reply) -> bool:
    return any(k.lower() == b"x-yurt-error-type" and v == b"runner_busy" for k, v in reply.headers)


async def _open_once(
    core: RequestCore, upgrade: Upgrade, client_headers: Sequence[Header], request_id: bytes
) -> Tunnel | Reply:
    route = upgrade.route
    slot = await core.acquire(route, upgrade.start_timeout)
    if isinstance(slot, Reply):
        return slot
    try:
        opened = await _handshake(
            slot, upgrade.target, client_headers, request_id, route.spec.request_timeout
        )
    except UpstreamError as exc:
        verdict = direct_error(exc.kind)
        core.router.terminate_slot(route, slot, verdict.reason)
        route.release(slot)
        assert verdict.status is not None
        return error_reply(verdict.status, verdict.error_type, verdict.detail)
    except BaseException:
        route.release(slot)
        raise
    if isinstance(opened, Reply):
        if (verdict := direct_status(opened.status)).terminate:
            core.router.terminate_slot(route, slot, verdict.reason)
        route.release(slot)
        return opened
    opened.release = lambda: route.release(slot)
    return opened


class _Head:
    """Collects a response head from httptools."""

    def __init__(self) -> None:
        self.headers: list[Header] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


async def _handshake(
    slot: Slot,
    target: bytes,
    client_headers: Sequence[Header],
    request_id: bytes,
    timeout: float,
) -> Tunnel | Reply:
    host, port = slot.endpoint.host, slot.endpoint.port
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError as exc:
        raise UpstreamError("connect_refused", f"connection to {host}:{port} refused") from exc
    except (TimeoutError, OSError) as exc:
        raise UpstreamError("connect_error", f"cannot connect to {host}:{port}: {exc}") from exc
    upgrade = next((v for k, v in client_headers if k.lower() == b"upgrade"), b"websocket")
    headers = forward_headers(client_headers, request_id)
    headers += [(b"connection", b"Upgrade"), (b"upgrade", upgrade)]
    authority = f"{host}:{port}".encode()
    parts = [b"GET ", target, b" HTTP/1.1\r\nhost: ", authority, b"\r\n"]
    if token := slot.endpoint.token:  # the runner's own (runner/token.py), as the pool sends it
        parts += (b"x-yurt-runner-token: ", token.encode(), b"\r\n")
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    try:
        writer.write(b"".join(parts))
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            collected = _Head()
            parser = httptools.HttpResponseParser(collected)
            with contextlib.suppress(httptools.HttpParserUpgrade):
                parser.feed_data(head)
            status = parser.get_status_code()
            if status == 101:
                return Tunnel(101, collected.headers, reader, writer, _unset)
            length = next(
                (int(v) for k, v in collected.headers if k.lower() == b"content-length"), 0
            )
            body = await reader.readexactly(min(length, MAX_REFUSAL_BODY)) if length else b""
    except TimeoutError as exc:
        writer.close()
        raise UpstreamError("timeout", "the runner did not answer the upgrade in time") from exc
    except (
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        httptools.HttpParserError,
        ValueError,
        ConnectionError,
        OSError,
    ) as exc:
        writer.close()
        raise UpstreamError("disconnected", f"the runner broke off the upgrade: {exc}") from exc
    writer.close()
    kept = [(k, v) for k, v in end_to_end(collected.headers) if k.lower() != b"x-fal-request-id"]
    return Reply(status, kept, body)


def _unset() -> None:
    raise AssertionError("a tunnel's release is set by open_tunnel")
