"""``POST /tokens/``: a short-lived token for some apps, for a client that cannot send a header.

fal's clients ask it (at ``fal_client.client.REST_URL``) with their key before opening a realtime
websocket, then send the token as ``?fal_jwt_token=``::

    POST /tokens/   {"allowed_apps": ["my-app"], "token_expiration": 120}
                    Authorization: Key <id>:<secret>        -> 201 "<token>"

The answer is the token as a JSON string, what fal's ``_parse_token_response`` reads. A token
lives at most an hour (``yurt.keys.MAX_TOKEN_S``) and dies with its key.
"""

from __future__ import annotations

import json
import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from yurt.router.gate import Gate
from yurt.router.http import JSON_TYPE, Reply, error_reply

TOKEN_PATHS = frozenset(("/tokens", "/tokens/"))
MAX_BODY = 16 * 1024


class TokenRequest(BaseModel):
    """The body fal's clients send."""

    model_config = ConfigDict(extra="ignore")

    allowed_apps: list[str] = Field(min_length=1, max_length=64)
    token_expiration: int = Field(default=120, ge=1)


async def token_reply(gate: Gate, request: web.BaseRequest) -> Reply:
    """Answer one ``/tokens/`` call."""
    if request.method != "POST":
        return error_reply(405, "method_not_allowed", f"{request.method} /tokens/: use POST")
    caller = gate.caller(request.raw_headers)
    if caller.key is None or gate.tokens is None:
        return error_reply(
            401,
            "unauthorized",
            "a token is made for an API key: send Authorization: Key <id>:<secret>",
        )
    if (request.content_length or 0) > MAX_BODY:
        return error_reply(413, "request_too_large", f"a token request is at most {MAX_BODY} bytes")
    body = await request.content.read(MAX_BODY + 1)
    try:
        asked = TokenRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        return error_reply(422, "bad_request", f"not a token request: {fields or 'body'}")
    token = gate.tokens.mint(caller.key, asked.allowed_apps, asked.token_expiration, time.time())
    return Reply(201, [JSON_TYPE], json.dumps(token).encode())
