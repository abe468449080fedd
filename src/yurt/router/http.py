"""Small HTTP helpers of the router: error bodies, request ids, header filtering."""

from __future__ import annotations

import json
import uuid

from aiohttp import web
from multidict import CIMultiDict

# Hop-by-hop headers (RFC 9110 section 7.6.1), those the pool writes itself, and the request
# ids, which only the router sets.
DROPPED_REQUEST_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
        b"x-fal-request-id",
        b"x-yurt-request-id",
    }
)
# aiohttp writes its own Date and Server.
DROPPED_REPLY_HEADERS = frozenset({"date", "server"})


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def error_response(status: int, error_type: str, detail: str, request_id: str) -> web.Response:
    """A router-made error: ``{detail, error_type}`` with the error-type and request-id headers."""
    headers = CIMultiDict(
        {
            "X-Yurt-Error-Type": error_type,
            "X-Fal-Error-Type": error_type,
            "x-yurt-request-id": request_id,
            "x-fal-request-id": request_id,
        }
    )
    body = json.dumps({"detail": detail, "error_type": error_type}).encode()
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


def forward_headers(
    raw: tuple[tuple[bytes, bytes], ...], request_id: str
) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop ones, with our request id."""
    out = [(k, v) for k, v in raw if k.lower() not in DROPPED_REQUEST_HEADERS]
    out.append((b"x-fal-request-id", request_id.encode()))
    return out


def reply_headers(raw: list[tuple[bytes, bytes]], request_id: str) -> CIMultiDict[str]:
    """The runner's response headers (already without hop-by-hop ones) plus request ids."""
    headers: CIMultiDict[str] = CIMultiDict()
    for k, v in raw:
        name = k.decode("latin-1")
        if name.lower() not in DROPPED_REPLY_HEADERS:
            headers.add(name, v.decode("latin-1"))
    headers["x-yurt-request-id"] = request_id
    headers["x-fal-request-id"] = request_id
    return headers
