"""py-consul's aio client on an aiohttp session built from ``ConsulConfig``'s TLS settings.

The HTTP plumbing under ``ConsulDiscovery`` (``consul.py``), which maps its errors and retries
its calls (``yurt.backends.agentcall``).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import consul
import consul.aio
import consul.base

from yurt.config import ConsulConfig


class _NamedSession:
    """An aiohttp session whose requests send and check ``server_name`` over TLS
    (CONSUL_TLS_SERVER_NAME) instead of the address's host."""

    def __init__(self, session: aiohttp.ClientSession, server_name: str) -> None:
        self._session = session
        self._server_name = server_name

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._session.request(method, url, server_hostname=self._server_name, **kwargs)

    async def close(self) -> None:
        await self._session.close()


class _HTTPClient(consul.aio.HTTPClient):  # type: ignore[misc]
    """py-consul's aio transport on a session built from ``ConsulConfig``'s TLS settings.

    py-consul builds its SSLContext only when verifying, ignores a CA directory and a server
    name, and passes aiohttp's deprecated ``ssl_context``/``verify_ssl``: the session is ours.
    """

    def __init__(
        self, host: str, port: int, scheme: str, tls: ConsulConfig, timeout: float | None
    ) -> None:
        consul.base.HTTPClient.__init__(self, host, port, scheme)
        self.loop = None
        ssl_context = tls.ssl_context() if scheme == "https" else None
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout)
            if timeout
            else aiohttp.client.DEFAULT_TIMEOUT,
        )
        name = tls.tls_server_name if scheme == "https" else None
        self._session = session if not name else _NamedSession(session, name)


class ConsulClient(consul.aio.Consul):  # type: ignore[misc]
    """py-consul's aio client with its transport built by ``_HTTPClient``."""

    def __init__(self, tls: ConsulConfig, **kwargs: Any) -> None:
        self._tls = tls  # set first: the base __init__ calls http_connect
        super().__init__(**kwargs)

    def http_connect(
        self, host: str, port: int, scheme: str, verify: object = True, cert: object = None
    ) -> _HTTPClient:
        return _HTTPClient(host, port, scheme, self._tls, self.connections_timeout)
