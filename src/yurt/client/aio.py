"""``AsyncClient``: the asyncio client, on aiohttp (imported on first use)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import ssl
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from yurt.client.protocol import (
    DEFAULT_TIMEOUT,
    STREAM_SILENCE,
    Call,
    CancelOutcome,
    Completed,
    EventReader,
    Priority,
    Reply,
    Status,
    base_url,
    common_headers,
    decode_cancel,
    decode_result,
    decode_status,
    decode_submitted,
    decode_uploaded,
    default_context,
    endpoint_url,
    json_call,
    lower_headers,
    request_failed,
    request_urls,
    result_call,
    result_step,
    status_call,
    stream_call,
    stream_ended,
    stream_event,
    submit_call,
    unreachable,
    upload_call,
    upload_target,
)

if TYPE_CHECKING:
    import aiohttp


class AsyncClient:
    """The asyncio twin of ``Client``: ``async with AsyncClient(url) as client: ...``."""

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = base_url(url)
        self.timeout = timeout
        self._headers = common_headers(key)
        self._ssl = ssl_context or default_context(self.url)
        self._session: aiohttp.ClientSession | None = None

    async def run(
        self,
        app: str,
        arguments: Any,
        *,
        path: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run ``app`` (``owner/app[/path]``) and return its decoded JSON reply."""
        call = json_call(endpoint_url(self.url, app, path), arguments, headers)
        return decode_result(await self.send(call, timeout))

    async def submit(
        self,
        app: str,
        arguments: Any,
        *,
        path: str = "",
        webhook_url: str | None = None,
        priority: Priority | None = None,
        hint: str | None = None,
        start_timeout: float | None = None,
        no_retry: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncRequestHandle:
        """Queue a request to ``app``; returns its handle once the router has accepted it."""
        call = submit_call(
            self.url,
            app,
            arguments,
            path=path,
            webhook_url=webhook_url,
            priority=priority,
            hint=hint,
            start_timeout=start_timeout,
            no_retry=no_retry,
            headers=headers,
        )
        return AsyncRequestHandle(*decode_submitted(await self.send(call)), self)

    async def subscribe(
        self,
        app: str,
        arguments: Any,
        *,
        with_logs: bool = False,
        on_enqueue: Callable[[str], object] | None = None,
        on_queue_update: Callable[[Status], object] | None = None,
        **options: Any,
    ) -> Any:
        """Submit, then wait for the result, as fal-client's ``subscribe`` does.

        ``on_enqueue`` gets the request id once the router has accepted it; ``on_queue_update``
        each status from the status stream (with its logs if ``with_logs``); either may be a
        coroutine function. ``options`` are ``submit``'s.
        """
        handle = await self.submit(app, arguments, **options)
        if on_enqueue is not None:
            await _maybe_await(on_enqueue(handle.request_id))
        if on_queue_update is not None:
            async for status in handle.iter_events(with_logs=with_logs):
                await _maybe_await(on_queue_update(status))
        return await handle.result()

    async def upload(self, data: bytes, content_type: str, file_name: str | None = None) -> str:
        """Put ``data`` in the router's file store; its URL, to pass in a request body."""
        call = upload_call(self.url, data, len(data), content_type, file_name)
        return decode_uploaded(await self.send(call))

    async def upload_file(
        self, path: str | os.PathLike[str], content_type: str | None = None
    ) -> str:
        """Put the file at ``path`` in the router's file store, streamed as it is read; its
        URL. The content type is guessed from the name when not given."""
        name, kind, size = upload_target(path, content_type)
        f = await asyncio.to_thread(open, path, "rb")
        with f:  # aiohttp reads it chunk by chunk, in a thread
            return decode_uploaded(await self.send(upload_call(self.url, f, size, kind, name)))

    def get_handle(self, app: str, request_id: str) -> AsyncRequestHandle:
        """The handle of a request submitted earlier."""
        return AsyncRequestHandle(request_id, *request_urls(self.url, app, request_id), self)

    async def send(self, call: Call, timeout: float | None = None) -> Reply:
        """Make one call and read the whole reply; only a missing reply raises."""
        import aiohttp

        timeout = timeout or self.timeout
        try:
            async with self._open(call, timeout) as resp:
                return Reply(resp.status, lower_headers(resp.headers), await resp.read())
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            raise unreachable(call.url, exc, timeout) from exc

    async def stream(self, call: Call) -> AsyncGenerator[bytes]:
        """Make one call and yield its body as it comes; an error reply raises."""
        import aiohttp

        timeout = max(self.timeout, STREAM_SILENCE)
        try:
            async with self._open(call, timeout) as resp:
                if resp.status >= 400:
                    raise request_failed(
                        Reply(resp.status, lower_headers(resp.headers), await resp.read())
                    )
                async for chunk in resp.content.iter_any():
                    yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            raise unreachable(call.url, exc, timeout) from exc

    def _open(self, call: Call, timeout: float) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session.request(
            call.method,
            call.url,
            data=call.body,
            headers=call.headers,
            ssl=self._ssl if self._ssl is not None else True,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass(frozen=True)
class AsyncRequestHandle:
    """A queued request, followed through the URLs the router returned."""

    request_id: str
    response_url: str = field(repr=False)
    status_url: str = field(repr=False)
    cancel_url: str = field(repr=False)
    client: AsyncClient = field(repr=False)

    async def status(self, *, with_logs: bool = False) -> Status:
        """Where the request is now."""
        reply = await self.client.send(status_call(self.status_url, with_logs))
        return decode_status(reply, self.request_id)

    async def iter_events(self, *, with_logs: bool = False) -> AsyncGenerator[Status]:
        """Each change of status, read off the router's event stream, up to ``Completed``."""
        call = stream_call(self.status_url, with_logs)
        while True:  # a stream cut short is opened again: the router starts it with the status
            reader, seen = EventReader(), False
            async with contextlib.aclosing(self.client.stream(call)) as chunks:
                async for chunk in chunks:
                    for data in reader.feed(chunk):
                        seen = True
                        event = stream_event(data, self.request_id)
                        yield event
                        if isinstance(event, Completed):
                            return
            if not seen:
                raise stream_ended(call.url)

    async def result(self) -> Any:
        """Wait for completion, then return the decoded result; a failed request raises.

        The router holds the result request until the request completes (``Prefer: wait``);
        on a server that does not say it did, the status stream is followed to completion.
        """
        call, timeout = result_call(self.response_url, self.client.timeout)
        reply = await self.client.send(call, timeout)
        while (step := result_step(reply)) == "ask_again":
            reply = await self.client.send(call, timeout)
        if step == "follow_stream":
            async for _ in self.iter_events():
                pass
            reply = await self.client.send(Call("GET", self.response_url, {}))
        return decode_result(reply, self.request_id)

    async def cancel(self) -> CancelOutcome:
        """Ask the router to cancel: out of the queue at once, or its runner told to stop."""
        reply = await self.client.send(Call("PUT", self.cancel_url, {}))
        return decode_cancel(reply, self.request_id)


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value
