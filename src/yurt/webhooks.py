"""Completion webhooks: the body yurt posts and the signature a receiver checks.

When a queued request carries ``?fal_webhook=URL``, yurt POSTs its outcome to ``URL`` once it
completes. The body follows fal's webhook body::

    {"request_id": "...", "gateway_request_id": "...", "status": "OK" | "ERROR",
     "payload": <the result as JSON, or null>, "payload_error": "...", "error": "...",
     "error_type": "..."}

Each delivery is signed with the server's webhook secret: HMAC-SHA256 over
``f"{timestamp}\n{url}\n".encode() + body``, where ``url`` is the destination in the
canonical form :func:`canonical_url` gives, sent as ``x-yurt-webhook-signature: v2=<hex>``
beside ``x-yurt-webhook-timestamp`` (unix seconds) and ``x-yurt-webhook-request-id``. Only the
timestamp, the destination and the body are signed: take the request id from the verified body,
not from the header.

The destination is signed so that a delivery captured at one receiver cannot be replayed to
another: a receiver verifies against the URL *it* is reached at. Build that URL from your own
configuration (the public base URL you gave yurt), never from the request's ``Host`` header,
which whoever sends the request chooses. Behind a proxy that terminates TLS, pass the public
``https://`` URL, not the one the proxy forwards to. yurt sends the canonical form itself, so
the request target as received (aiohttp's ``request.raw_path``, not the decoded ``path_qs``)
is what was signed. (Signatures ``v1=`` covered no URL and are no longer made or accepted:
receivers must pass the URL to ``verify``.)

A receiver checks a delivery before trusting it (this module needs nothing but the standard
library, so receivers can import it alone)::

    import json
    from aiohttp import web
    from yurt.webhooks import WebhookVerificationError, verify

    SECRET = "..."  # the server's webhook secret
    PUBLIC_BASE = "https://hooks.example.com"  # where yurt reaches this receiver

    async def on_webhook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(SECRET, request.headers, body, PUBLIC_BASE + request.raw_path)
        except WebhookVerificationError as exc:
            raise web.HTTPUnauthorized(text=str(exc)) from exc
        event = json.loads(body)
        ...  # deliveries are retried until a 2xx: the same request_id may arrive twice
        return web.Response(status=204)

Any 2xx answer ends the deliveries of that webhook; anything else is retried with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

REQUEST_ID_HEADER = "x-yurt-webhook-request-id"
TIMESTAMP_HEADER = "x-yurt-webhook-timestamp"
SIGNATURE_HEADER = "x-yurt-webhook-signature"

SIGNATURE_VERSION = "v2"
DEFAULT_TOLERANCE = 300.0

_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")
# Unix seconds as ASCII digits only: int() alone would take "1_7", Arabic-Indic digits, or
# thousands of digits that overflow the float arithmetic of the tolerance check.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 pchar plus "/" (and "?" in a query): what stays as is; "%" keeps escapes escaped.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")


class WebhookVerificationError(ValueError):
    """A webhook delivery failed verification; the message names the header or check that failed."""


def canonical_url(url: str) -> str:
    """``url`` as it is signed: scheme and host in lower case, no user info, no default port,
    no fragment, a path of at least ``/``, and path and query percent-encoded as sent.

    Raises :class:`WebhookVerificationError` for what is not an absolute http(s) URL.
    """
    if not isinstance(url, str) or not url.isprintable():
        raise WebhookVerificationError(f"the URL {url!r} is not an http(s) URL")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise WebhookVerificationError(f"the URL {url!r} is not an http(s) URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise WebhookVerificationError(f"the URL {url!r} is not an http(s) URL with a host")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _escaped(parts.path, _PATH_SAFE) or "/"
    query = _escaped(parts.query, _QUERY_SAFE)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _escaped(text: str, safe: str) -> str:
    return _ESCAPE.sub(lambda m: m.group(0).upper(), quote(text, safe=safe))


def sign(secret: bytes, timestamp: int, url: str, body: bytes) -> str:
    """The signature header value of ``body`` sent to ``url`` at ``timestamp``: ``v2=<hex>``."""
    signed = f"{timestamp}\n{canonical_url(url)}\n".encode() + body
    mac = hmac.new(secret, signed, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def signed_headers(
    secret: bytes, request_id: str, url: str, body: bytes, now: float
) -> dict[str, str]:
    """The three ``x-yurt-webhook-*`` headers of a delivery of ``body`` to ``url`` at ``now``."""
    timestamp = int(now)
    return {
        REQUEST_ID_HEADER: request_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, url, body),
    }


def verify(
    secret: bytes | str,
    headers: Mapping[str, str],
    body: bytes,
    url: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check that ``body`` was signed with ``secret`` for ``url`` less than ``tolerance``
    seconds ago.

    ``url`` is where this receiver is reached, from its own configuration (see the module's
    docs): a delivery signed for another destination fails. ``headers`` is any mapping of the
    delivery's headers; names match case-insensitively. Several signatures separated by
    spaces or commas are accepted (one per secret while secrets rotate). Raises
    :class:`WebhookVerificationError` naming what failed, whatever the headers hold.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    lowered = {name.lower(): value for name, value in headers.items() if isinstance(name, str)}
    raw_timestamp = _header(lowered, TIMESTAMP_HEADER)
    raw_signature = _header(lowered, SIGNATURE_HEADER)
    if not _TIMESTAMP.fullmatch(raw_timestamp.strip()):
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} is {raw_timestamp[:40]!r}, not unix seconds as an integer"
        )
    timestamp = int(raw_timestamp.strip())
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} {timestamp} is {current - timestamp:+.0f} s from now, beyond "
            f"the tolerance of {tolerance:g} s: a replay, or a clock to fix"
        )
    prefix = f"{SIGNATURE_VERSION}="
    candidates = [
        token[len(prefix) :]
        for token in re.split(r"[\s,]+", raw_signature)
        if token.startswith(prefix) and _HEX_DIGEST.fullmatch(token[len(prefix) :])
    ]
    if not candidates:
        raise WebhookVerificationError(
            f"{SIGNATURE_HEADER} holds no {prefix}<64 hex digits> signature: "
            f"{raw_signature[:200]!r}"
        )
    expected = sign(key, timestamp, url, body)[len(prefix) :]
    # Compare every candidate, so the time taken says nothing about which one was close.
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    if not any(matches):
        raise WebhookVerificationError(
            f"{SIGNATURE_HEADER} does not match the body and URL: a different secret, a body "
            "changed after signing (verify the raw bytes, before any JSON decoding), or a "
            f"delivery meant for another URL than {canonical_url(url)}"
        )


def _header(lowered: Mapping[str, object], name: str) -> str:
    value = lowered.get(name)
    if value is None:
        raise WebhookVerificationError(f"the {name} header is missing: not a signed yurt webhook")
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        raise WebhookVerificationError(f"the {name} header is not printable ASCII: {value!r:.80}")
    return value


def completion_body(
    request_id: str,
    ok: bool,
    status: int,
    body: bytes,
    content_type: str | None,
    error: str | None,
    error_type: str | None,
) -> bytes:
    """The JSON body of the webhook for a request that completed with ``status`` and ``body``.

    ``payload`` is the result when it is JSON; otherwise it is null and ``payload_error`` says
    why (the result itself stays available at the request's response URL).
    """
    message: dict[str, Any] = {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": "OK" if ok else "ERROR",
    }
    payload, payload_error = _payload(body, content_type)
    message["payload"] = payload
    if payload_error is not None:
        message["payload_error"] = payload_error
    if not ok:
        message["error"] = error if error is not None else f"the request failed with {status}"
    if error_type is not None:
        message["error_type"] = error_type
    return json.dumps(message, separators=(",", ":")).encode()


def _payload(body: bytes, content_type: str | None) -> tuple[Any, str | None]:
    if not body:
        return None, None
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if not _JSON_TYPE.match(media_type):
        return None, (
            f"the result is {media_type or 'of no declared type'}, not JSON: "
            "fetch it from the response URL"
        )
    try:
        return json.loads(body), None
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to decode
        return None, f"the result is declared JSON but does not parse: {exc}"
