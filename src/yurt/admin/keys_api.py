"""The admin API's key routes (admin only)::

    GET    /_yurt/api/v1/keys              -> [{key_id, alias, scope, created_at, last_used}]
    POST   /_yurt/api/v1/keys              {scope?, alias?} -> 201 {..., key: "id:secret"}
    DELETE /_yurt/api/v1/keys/{key_id}     -> 200 {key_id, outcome: "revoked"} | 404

The secret is in the answer to ``POST`` and nowhere else, ever.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from yurt.errors import ConfigError
from yurt.keys import KeyStore, Scope, alias_problem
from yurt.router.http import Reply, error_reply, json_reply

log = structlog.get_logger("yurt.admin")


class NewKey(BaseModel):
    """The body of ``POST /_yurt/api/v1/keys``."""

    model_config = ConfigDict(extra="forbid")

    scope: Scope = "API"
    alias: str | None = None


async def key_call(
    request: web.BaseRequest,
    store: KeyStore,
    rest: list[str],
    read: Callable[[web.BaseRequest], Awaitable[bytes | Reply]],
    invalid: Callable[[ValidationError], Reply],
) -> Reply:
    """Answer one call under ``/keys`` (the caller checked it is an admin's)."""
    method = request.method
    try:
        if not rest and method == "GET":
            store.flush_usage()
            return json_reply([dataclasses.asdict(k) for k in store.list()])
        if not rest and method == "POST":
            body = await read(request)
            if isinstance(body, Reply):
                return body
            try:
                new = NewKey.model_validate_json(body or b"{}")
            except ValidationError as exc:
                return invalid(exc)
            if new.alias is not None and (problem := alias_problem(new.alias)) is not None:
                return error_reply(422, "bad_request", problem)
            info, key = store.create(new.scope, new.alias, time.time())
            log.info("key_created", key_id=info.key_id, scope=info.scope, alias=info.alias)
            return json_reply({**dataclasses.asdict(info), "key": key}, 201)
        if len(rest) == 1 and method == "DELETE":
            if not store.revoke(rest[0]):
                return error_reply(404, "key_not_found", f"no key {rest[0][:64]!r} on this server")
            log.info("key_revoked", key_id=rest[0])
            return json_reply({"key_id": rest[0], "outcome": "revoked"})
    except ConfigError as exc:  # the store's file or key: names a path, never a secret
        log.error("keys_unreadable", error=str(exc))
        return error_reply(500, "keys_unreadable", str(exc))
    return error_reply(405, "method_not_allowed", f"{method} {request.path} is not served")
