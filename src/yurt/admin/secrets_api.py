"""The admin API's secret routes (admin only)::

    GET    /_yurt/api/v1/secrets          -> [{name, set_at}]
    PUT    /_yurt/api/v1/secrets/{name}   {value} -> 201 | 200 {name, set_at, outcome}
    DELETE /_yurt/api/v1/secrets/{name}   -> 200 {name, outcome: "unset"} | 404

A value is never in an answer, a log line or an error.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from yurt.admin.secrets import SecretKeeper
from yurt.errors import ClusterError, ConfigError
from yurt.router.http import Reply, error_reply, json_reply
from yurt.secret_rules import name_problem, value_problem

log = structlog.get_logger("yurt.admin")


class SecretValue(BaseModel):
    """The body of ``PUT /_yurt/api/v1/secrets/{name}``."""

    model_config = ConfigDict(extra="forbid")

    value: str


async def secret_call(
    request: web.BaseRequest,
    keeper: SecretKeeper | None,
    parts: list[str],
    read: Callable[[web.BaseRequest], Awaitable[bytes | Reply]],
    invalid: Callable[[ValidationError], Reply],
) -> Reply:
    """``secrets[/NAME]`` (``parts``: what follows ``secrets``), the keeper's failures as
    replies; ``keeper`` None: this backend carries no secrets."""
    if keeper is None:
        return error_reply(
            501,
            "not_implemented",
            "this server's backend does not carry secrets to runners yet (the local "
            "backend does); give the app its keys another way",
        )
    try:
        return await _call(request, keeper, parts, read, invalid)
    except ConfigError as exc:  # the store's file or key: names a path, never a value
        log.error("secrets_unreadable", error=str(exc))
        return error_reply(500, "secrets_unreadable", str(exc))
    except ValueError as exc:  # too large for where they are kept: sizes, no value
        return error_reply(422, "bad_request", str(exc))
    except ClusterError as exc:  # Nomad keeps them and refused or did not answer
        log.error("secrets_unreachable", error=str(exc))
        return error_reply(503, "secrets_unavailable", str(exc))


async def _call(
    request: web.BaseRequest,
    store: SecretKeeper,
    name: list[str],
    read: Callable[[web.BaseRequest], Awaitable[bytes | Reply]],
    invalid: Callable[[ValidationError], Reply],
) -> Reply:
    method = request.method
    if not name:
        if method != "GET":
            return error_reply(405, "method_not_allowed", f"{method} {request.path}")
        found = await store.list_secrets()
        return json_reply([{"name": s.name, "set_at": s.set_at} for s in found])
    if method == "PUT":
        body = await read(request)
        if isinstance(body, Reply):
            return body
        try:
            value = SecretValue.model_validate_json(body).value
        except ValidationError as exc:
            return invalid(exc)
        problem = name_problem(name[0]) or value_problem(value)
        if problem is not None:  # the name or the value's shape; never the value
            return error_reply(422, "bad_request", problem)
        new = await store.set_secret(name[0], value, time.time())
        # The name only: values never reach a log.
        log.info("secret_set", name=name[0], outcome="created" if new else "updated")
        info = next((s for s in await store.list_secrets() if s.name == name[0]), None)
        reply = {"name": name[0], "set_at": info.set_at if info else time.time()}
        return json_reply(
            {**reply, "outcome": "created" if new else "updated"}, 201 if new else 200
        )
    if method == "DELETE":
        if not await store.unset_secret(name[0]):
            return error_reply(
                404, "secret_not_found", f"no secret {name[0][:256]!r} is set on this server"
            )
        log.info("secret_unset", name=name[0])
        return json_reply({"name": name[0], "outcome": "unset"})
    return error_reply(405, "method_not_allowed", f"{method} {request.path} is not served")
