"""HTTP(S) GETs for the download helpers, refusing addresses a caller should not reach.

An app that downloads URLs its callers give it would otherwise fetch, for any caller, what
its runner can reach: loopback (the router's own routes on one machine), private networks,
cloud metadata at 169.254.169.254. As fal's toolkit does, each hop's host is resolved once,
every address must be globally routable, and the connection goes to the address checked (so
a second DNS answer cannot swap in another); redirects are followed by hand, each checked.

Not checked: the store's own URL (``YURT_FILES_URL``, private on a cluster), everything when
``YURT_DOWNLOAD_PRIVATE=1`` (an operator whose models sit on a private mirror), and URLs sent
through a proxy from the environment (the proxy connects, not the runner).
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import urllib.request
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from yurt.files.location import from_environ
from yurt.toolkit.errors import DownloadError

ALLOW_PRIVATE_ENV = "YURT_DOWNLOAD_PRIVATE"
MAX_REDIRECTS = 5
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
_CREDENTIAL_HEADERS = frozenset(("authorization", "cookie", "proxy-authorization"))


def refused_address(address: str) -> bool:
    """Whether ``address`` is one downloads must not reach: not globally routable (loopback,
    private, link-local, shared, reserved...), an IPv4 mapped into IPv6 judged as itself. Pure.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global


class _Pinned(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _checked_address(url: str, host: str, port: int) -> str:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DownloadError(f"Failed to download {url}: cannot resolve {host}: {exc}") from exc
    addresses = [str(info[4][0]) for info in found]
    if not addresses or any(refused_address(a) for a in addresses):
        raise DownloadError(
            f"Failed to download {url}: {host} is a loopback, private or otherwise local "
            f"address, which downloads do not reach (set {ALLOW_PRIVATE_ENV}=1 on the server "
            "to allow them)"
        )
    return addresses[0]


def _unchecked(url: str) -> bool:
    if os.environ.get(ALLOW_PRIVATE_ENV) == "1":
        return True
    where = from_environ()
    if where is not None and url.startswith(where.public_url + "/"):
        return True
    host = urlsplit(url).hostname or ""
    proxy = urllib.request.getproxies().get(urlsplit(url).scheme)
    return bool(proxy) and not urllib.request.proxy_bypass(host)


def open_url(url: str, headers: dict[str, str], timeout: float = 60.0) -> IO[bytes]:
    """GET ``url``; the response to read. An error status is a ``DownloadError``."""
    if _unchecked(url):
        return _open_plain(url, headers, timeout)
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DownloadError(f"Failed to download {url}: only http and https URLs")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _checked_address(url, parts.hostname, port)
        kind = _PinnedTLS if parts.scheme == "https" else _Pinned
        conn = kind(parts.hostname, port, address, timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", path, headers={"User-Agent": "yurt", **headers})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DownloadError(f"Failed to download {url}: {exc}") from exc
        location = resp.getheader("location")
        if resp.status in _REDIRECTS and location:
            resp.close()
            conn.close()
            target = urljoin(url, location)
            if urlsplit(target).netloc != parts.netloc:
                headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
            url = target
            continue
        if resp.status >= 400:
            resp.close()
            conn.close()
            raise _status_error(url, resp.status, resp.reason, resp)
        return resp
    raise DownloadError(f"Failed to download {url}: more than {MAX_REDIRECTS} redirects")


def _status_error(url: str, status: int, reason: str, resp: Any) -> DownloadError:
    error = DownloadError(f"Failed to download {url}: HTTP {status} {reason}")
    error.status = status  # type: ignore[attr-defined]
    error.headers = getattr(resp, "headers", None)  # type: ignore[attr-defined]
    return error


def _open_plain(url: str, headers: dict[str, str], timeout: float) -> IO[bytes]:
    import urllib.error

    request = urllib.request.Request(url, headers={"User-Agent": "yurt", **headers})
    try:
        resp: IO[bytes] = urllib.request.urlopen(request, timeout=timeout)
        return resp
    except urllib.error.HTTPError as exc:
        raise _status_error(url, exc.code, str(exc.reason), exc) from exc
    except (OSError, ValueError) as exc:
        raise DownloadError(f"Failed to download {url}: {exc}") from exc
