"""Calling a yurt router from Python: sync runs and the queue, as fal-client does for fal.

``Client`` is blocking and needs only the standard library; ``AsyncClient`` runs on aiohttp.
Both build their requests and read the replies through the pure functions of ``protocol``, so
they differ only in how bytes go over the wire::

    with yurt.Client("http://127.0.0.1:8080") as client:
        client.run("default/echo", {"prompt": "hi"})
        handle = client.submit("default/echo", {"prompt": "hi"})
        for event in handle.iter_events(with_logs=True):
            print(event)
        handle.result()
        with client.connect("default/draw") as rt:  # a @yurt.realtime endpoint
            rt.send({"prompt": "hi"})
            rt.recv()

https with a private CA: pass ``ssl_context``, or set ``SSL_CERT_FILE``, which OpenSSL reads
when the default context is made.
"""

from __future__ import annotations

from yurt.client.aio import AsyncClient, AsyncRequestHandle
from yurt.client.protocol import (
    CancelOutcome,
    Completed,
    ConnectionFailed,
    InProgress,
    Priority,
    Queued,
    RequestFailed,
    Status,
)
from yurt.client.realtime import AsyncRealtimeConnection, RealtimeConnection, RealtimeError
from yurt.client.sync import Client, RequestHandle

__all__ = [
    "AsyncClient",
    "AsyncRealtimeConnection",
    "AsyncRequestHandle",
    "CancelOutcome",
    "Client",
    "Completed",
    "ConnectionFailed",
    "InProgress",
    "Priority",
    "Queued",
    "RealtimeConnection",
    "RealtimeError",
    "RequestFailed",
    "RequestHandle",
    "Status",
]
