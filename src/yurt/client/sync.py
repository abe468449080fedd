"""``Client``: the blocking client, on the standard library alone."""

from __future__ import annotations

import contextlib
import http.client
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

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


class Client:
    """A blocking client of one yurt router: ``Client("http://127.0.0.1:8080")``.

    ``key`` is sent as ``Authorization: Key <key>``; ``timeout`` bounds connecting and each wait
    for bytes (a status stream waits at least ``STREAM_SILENCE``: the router keeps it alive; a
    result request held by the router, ``timeout`` beyond the wait it asked for).
    """

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
        https = urllib.request.HTTPSHandler(context=ssl_context or default_context(self.url))
        # No proxy from the environment: the same as AsyncClient (aiohttp's trust_env=False).
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)

    def run(
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
        return decode_result(self.send(call, timeout))

    def submit(
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
    ) -> RequestHandle:
        """Queue a request to ``app``; returns its handle at once."""
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
        return RequestHandle(*decode_submitted(self.send(call)), self)

    def subscribe(
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
        each status from the status stream (with its logs if ``with_logs``). ``options`` are
        ``submit``'s.
        """
        handle = self.submit(app, arguments, **options)
        if on_enqueue is not None:
            on_enqueue(handle.request_id)
        if on_queue_update is not None:
            for status in handle.iter_events(with_logs=with_logs):
                on_queue_update(status)
        return handle.result()

    def upload(self, data: bytes, content_type: str, file_name: str | None = None) -> str:
        """Put ``data`` in the router's file store; its URL, to pass in a request body."""
        call = upload_call(self.url, data, len(data), content_type, file_name)
        return decode_uploaded(self.send(call))

    def upload_file(self, path: str | os.PathLike[str], content_type: str | None = None) -> str:
        """Put the file at ``path`` in the router's file store, streamed as it is read; its
        URL. The content type is guessed from the name when not given."""
        name, kind, size = upload_target(path, content_type)
        with open(path, "rb") as f:
            return decode_uploaded(self.send(upload_call(self.url, f, size, kind, name)))

    def get_handle(self, app: str, request_id: str) -> RequestHandle:
        """The handle of a request submitted earlier."""
        return RequestHandle(request_id, *request_urls(self.url, app, request_id), self)

    def send(self, call: Call, timeout: float | None = None) -> Reply:
        """Make one call and read the whole reply; only a missing reply raises."""
        timeout = timeout or self.timeout
        try:
            with self._open(call, timeout) as resp:
                return Reply(resp.status, lower_headers(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, lower_headers(exc.headers), exc.read())
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            raise unreachable(call.url, exc, timeout) from exc

    def stream(self, call: Call) -> Generator[bytes]:
        """Make one call and yield its body as it comes; an error reply raises."""
        timeout = max(self.timeout, STREAM_SILENCE)
        try:
            resp = self._open(call, timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                reply = Reply(exc.code, lower_headers(exc.headers), exc.read())
            raise request_failed(reply) from None
        except (OSError, http.client.HTTPException) as exc:
            raise unreachable(call.url, exc, timeout) from exc
        with resp:
            try:
                while chunk := resp.read1():
                    yield chunk
            except (OSError, http.client.HTTPException) as exc:
                raise unreachable(call.url, exc, timeout) from exc

    def _open(self, call: Call, timeout: float) -> http.client.HTTPResponse:
        request = urllib.request.Request(
            call.url, data=call.body, headers={**self._headers, **call.headers}, method=call.method
        )
        resp: http.client.HTTPResponse = self._opener.open(request, timeout=timeout)
        return resp

    def close(self) -> None:
        """Nothing to release: each call has its own connection."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class RequestHandle:
    """A queued request, followed through the URLs the router returned."""

    request_id: str
    response_url: str = field(repr=False)
    status_url: str = field(repr=False)
    cancel_url: str = field(repr=False)
    client: Client = field(repr=False)

    def status(self, *, with_logs: bool = False) -> Status:
        """Where the request is now."""
        reply = self.client.send(status_call(self.status_url, with_logs))
        return decode_status(reply, self.request_id)

    def iter_events(self, *, with_logs: bool = False) -> Iterator[Status]:
        """Each change of status, read off the router's event stream, up to ``Completed``."""
        call = stream_call(self.status_url, with_logs)
        while True:  # a stream cut short is opened again: the router starts it with the status
            reader, seen = EventReader(), False
            with contextlib.closing(self.client.stream(call)) as chunks:
                for chunk in chunks:
                    for data in reader.feed(chunk):
                        seen = True
                        event = stream_event(data, self.request_id)
                        yield event
                        if isinstance(event, Completed):
                            return
            if not seen:
                raise stream_ended(call.url)

    def result(self) -> Any:
        """Wait for completion, then return the decoded result; a failed request raises.

        The router holds the result request until the request completes (``Prefer: wait``);
        on a server that does not say it did, the status stream is followed to completion.
        """
        call, timeout = result_call(self.response_url, self.client.timeout)
        reply = self.client.send(call, timeout)
        while (step := result_step(reply)) == "ask_again":
            reply = self.client.send(call, timeout)
        if step == "follow_stream":
            for _ in self.iter_events():
                pass
            reply = self.client.send(Call("GET", self.response_url, {}))
        return decode_result(reply, self.request_id)

    def cancel(self) -> CancelOutcome:
        """Ask the router to cancel: out of the queue at once, or its runner told to stop."""
        reply = self.client.send(Call("PUT", self.cancel_url, {}))
        return decode_cancel(reply, self.request_id)
