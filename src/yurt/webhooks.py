"""Completion webhooks: the body yurt posts and the signature a receiver checks.

When a queued request carries ``?fal_webhook=URL``, yurt POSTs its outcome to ``URL`` once it
completes. The body follows fal's webhook body::

    {"request_id": "...", "gateway_request_id": "...", "status": "OK" | "ERROR",
     "payload": <the result as JSON, or null>, "payload_error": "...", "error": "...",
     "error_type": "..."}

Each delivery is signed with the server's webhook secret: HMAC-SHA256 over
``f"{timestamp}.".encode() + body``, sent as ``x-yurt-webhook-signature: v1=<hex>`` beside
``x-yurt-webhook-timestamp`` (unix seconds) and ``x-yurt-webhook-request-id``. Only the timestamp
and the body are signed: take the request id from the verified body, not from the header.

A receiver checks a delivery before trusting it (this module needs nothing but the standard
library, so receivers can import it alone)::

    import json
    from aiohttp import web
    from yurt.webhooks import WebhookVerificationError, verify

    SECRET = "..."  # the server's webhook secret

    async def on_webhook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(SECRET, request.headers, body)
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

REQUEST_ID_HEADER = "x-yurt-webhook-request-id"
TIMESTAMP_HEADER = "x-yurt-webhook-timestamp"
SIGNATURE_HEADER = "x-yurt-webhook-signature"

SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300.0

_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")


class WebhookVerificationError(ValueError):
    """A webhook delivery failed verification; the message names the header or check that failed."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value of ``body`` sent at ``timestamp``: ``v1=<hex HMAC-SHA256>``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def signed_headers(secret: bytes, request_id: str, body: bytes, now: float) -> dict[str, str]:
    """The three ``x-yurt-webhook-*`` headers of a delivery of ``body`` made at ``now``."""
    timestamp = int(now)
    return {
        REQUEST_ID_HEADER: request_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def verify(
    secret: bytes | str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check that ``body`` was signed with ``secret`` less than ``tolerance`` seconds ago.

    ``headers`` is any mapping of the delivery's headers; names match case-insensitively.
    Several signatures separated by spaces or commas are accepted (one per secret while
    secrets rotate). Raises :class:`WebhookVerificationError` naming what failed.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    lowered = {name.lower(): value for name, value in headers.items()}
    raw_timestamp = _header(lowered, TIMESTAMP_HEADER)
    raw_signature = _header(lowered, SIGNATURE_HEADER)
    try:
        timestamp = int(raw_timestamp.strip())
    except ValueError:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} is {raw_timestamp!r}, not unix seconds as an integer"
        ) from None
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
        if token.startswith(prefix)
    ]
    if not candidates:
        raise WebhookVerificationError(
            f"{SIGNATURE_HEADER} holds no {prefix}<hex> signature: {raw_signature!r}"
        )
    expected = sign(key, timestamp, body)[len(prefix) :]
    # Compare every candidate, so the time taken says nothing about which one was close.
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    if not any(matches):
        raise WebhookVerificationError(
            f"{SIGNATURE_HEADER} does not match the body: a different secret, or a body "
            "changed after signing (verify the raw bytes, before any JSON decoding)"
        )


def _header(lowered: Mapping[str, str], name: str) -> str:
    value = lowered.get(name)
    if value is None:
        raise WebhookVerificationError(f"the {name} header is missing: not a signed yurt webhook")
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
