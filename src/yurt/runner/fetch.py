"""Fetching a runner's payload from the yurt server (on a cluster the runner has no files).

Standard library only: the runner imports no control-plane code. The server answers
``GET <url>`` with the payload bytes to a bearer token that is good for that revision alone;
the digest is checked against the one in the job before a byte is unpickled.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request

from yurt.errors import PayloadError
from yurt.packaging import read_header
from yurt.runner.contract import PAYLOAD_TOKEN_ENV

TOKEN_ENV = PAYLOAD_TOKEN_ENV  # where the runner finds its payload token
# The server may be restarting while Nomad places a runner: try for about half a minute.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
_FATAL = {401: "refused the payload token", 403: "refused the payload token"}


def fetch_payload(
    url: str,
    token: str,
    sha256: str,
    *,
    timeout: float = 60.0,
    delays: tuple[float, ...] = RETRY_DELAYS,
) -> bytes:
    """Download a payload and check that it is the one asked for; raises ``PayloadError``."""
    data = _download(url, token, timeout, delays)
    header, _ = read_header(data)  # checks the content against the header's digest
    if header.sha256 != sha256:
        raise PayloadError(
            f"the server sent payload {header.sha256[:12]} for revision {sha256[:12]} "
            f"({url}); redeploy the app"
        )
    return data


def _download(url: str, token: str, timeout: float, delays: tuple[float, ...]) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    problem = ""
    for delay in (*delays, None):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                body: bytes = resp.read()
                return body
        except urllib.error.HTTPError as exc:
            if exc.code in _FATAL:
                raise PayloadError(
                    f"the yurt server {_FATAL[exc.code]} ({exc.code}) for {url}: "
                    "the job's token belongs to another server or revision; redeploy the app"
                ) from exc
            if exc.code == 404:
                raise PayloadError(
                    f"the yurt server has no payload at {url} (404); redeploy the app"
                ) from exc
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # HTTPException: a transfer cut short (IncompleteRead), e.g. a server restarting.
            problem = str(getattr(exc, "reason", exc)) or type(exc).__name__
        if delay is None:
            break
        time.sleep(delay)
    raise PayloadError(
        f"cannot download the payload from {url}: {problem}; is the yurt server up and "
        "reachable from this node (its --public-url)?"
    )
