"""``yurt.deploy(App, server=...)``: put an App on a yurt server, no HCL or files to copy.

Two calls to the server's admin API: the payload (``PUT /_yurt/api/v1/payloads/<sha256>``,
skipped when the server has it), then the app (``POST /_yurt/api/v1/apps`` with the spec). The
server makes a new revision when the payload or spec changed, and the backend replaces the
runners, the old serving until the new are healthy. ``undeploy("owner/app", server=...)`` takes
an app off again (``DELETE /_yurt/api/v1/apps/<owner>/<app>``); ``set_secret``,
``list_secrets`` and ``unset_secret`` keep the server's secrets (``/_yurt/api/v1/secrets``);
``create_key``, ``list_keys`` and ``revoke_key`` its API keys (``/_yurt/api/v1/keys``). The
token may be the admin token or an ADMIN-scoped key (sent as ``Authorization: Key``).
Standard library only, like ``yurt.Client``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yurt.app import App
from yurt.config import admin_token_env, server_url_env
from yurt.errors import DeployError
from yurt.keys import looks_like_key
from yurt.packaging import pack, read_header
from yurt.spec import build_spec

API = "/_yurt/api/v1"


@dataclass(frozen=True, slots=True)
class Deployed:
    """What the server answered: the app, its revision and where to call it."""

    app_id: str
    revision: str
    outcome: str  # created | updated | unchanged
    url: str
    queue_url: str


def deploy(
    app: type[App],
    *,
    server: str | None = None,
    token: str | None = None,
    owner: str | None = None,
    timeout: float = 300.0,
    progress: Callable[[str], None] = lambda _: None,
) -> Deployed:
    """Deploy ``app`` to the server at ``server`` ($YURT_SERVER, else http://127.0.0.1:8080)."""
    base = (server or server_url_env()).rstrip("/")
    token = token if token is not None else admin_token_env()
    spec = build_spec(app)
    data = pack(app)
    header, _ = read_header(data)
    progress(f"packed {app.__name__} as revision {header.revision} ({len(data) / 1024:.1f} KiB)")
    call = _Caller(base, token, timeout)
    call("PUT", f"{API}/payloads/{header.sha256}", data, "application/octet-stream")
    progress(f"uploaded the payload to {base}")
    body = json.dumps(
        {"spec": spec.model_dump(mode="json"), "payload_sha256": header.sha256, "owner": owner}
    ).encode()
    status, reply = call("POST", f"{API}/apps", body, "application/json")
    return Deployed(
        app_id=reply["app_id"],
        revision=reply["revision"],
        outcome=reply.get("outcome", "created" if status == 201 else "updated"),
        url=reply["url"],
        queue_url=reply["queue_url"],
    )


def follow_environment(
    app_id: str,
    *,
    server: str | None = None,
    token: str | None = None,
    progress: Callable[[dict[str, Any]], None] = lambda _: None,
    interval: float = 0.5,
    timeout: float = 3600.0,
) -> str:
    """Follow the build of a deployed app's environment on the server (which starts it on
    deploy), each event of it to ``progress``; returns where it ended: ``none`` (no
    requirements), ``ready``, ``failed``, ``on_nodes`` (built where runners start, on Nomad), or
    ``building`` when ``timeout`` passed first."""
    owner, _, name = app_id.partition("/")
    quoted = "/".join(urllib.parse.quote(p, safe="") for p in (owner, name))
    call = _caller(server, token)
    deadline = time.monotonic() + timeout
    seen, first = 0, True
    while True:
        _, reply = call(
            "GET", f"{API}/apps/{quoted}/environment?after={seen}", b"", "application/json"
        )
        state = str(reply["state"])
        if state == "ready" and first:  # built before this deploy: its history is old news
            progress({"digest": reply["digest"], "stage": "reused"})
            return state
        first = False
        for event in reply["events"]:
            progress(event)
        seen = int(reply["seen"])
        if state not in ("absent", "building"):
            return state
        if time.monotonic() > deadline:
            return "building"
        time.sleep(interval)


@dataclass(frozen=True, slots=True)
class Undeployed:
    """What the server answered to an undeploy."""

    app_id: str
    revision: str  # the revision it served last
    failed_requests: int  # requests that waited for a runner and failed with app_undeployed


def undeploy(
    app: str, *, server: str | None = None, token: str | None = None, timeout: float = 300.0
) -> Undeployed:
    """Stop serving ``app`` (``owner/name``, or ``name`` of the server's default owner) on the
    server at ``server`` ($YURT_SERVER, else http://127.0.0.1:8080), stop its runners and
    forget it. Raises ``DeployError`` when the server has no such app or could not stop it.
    """
    base = (server or server_url_env()).rstrip("/")
    token = token if token is not None else admin_token_env()
    parts = app.split("/")
    if len(parts) > 2 or not all(parts):
        raise DeployError(f"{app!r} is not an app: give owner/name, or name for the default owner")
    path = f"{API}/apps/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)
    _, reply = _Caller(base, token, timeout)("DELETE", path, b"", "application/json")
    return Undeployed(
        app_id=reply["app_id"],
        revision=reply["revision"],
        failed_requests=int(reply.get("failed_requests", 0)),
    )


@dataclass(frozen=True, slots=True)
class SecretEntry:
    """A secret as the server lists it: its name and when it was set (Unix time)."""

    name: str
    set_at: float


def set_secret(
    name: str, value: str, *, server: str | None = None, token: str | None = None
) -> str:
    """Set the secret ``name`` on the server (every runner started after gets it as an
    environment variable); returns ``created`` or ``updated``. Raises ``DeployError`` with the
    server's reason (never quoting the value)."""
    path = f"{API}/secrets/{urllib.parse.quote(name, safe='')}"
    body = json.dumps({"value": value}).encode()
    _, reply = _caller(server, token)("PUT", path, body, "application/json")
    return str(reply.get("outcome", "updated"))


def list_secrets(*, server: str | None = None, token: str | None = None) -> list[SecretEntry]:
    """The names of the server's secrets and when each was set; never their values."""
    _, reply = _caller(server, token)("GET", f"{API}/secrets", b"", "application/json")
    return [SecretEntry(name=e["name"], set_at=float(e["set_at"])) for e in reply]


def unset_secret(name: str, *, server: str | None = None, token: str | None = None) -> None:
    """Remove the secret ``name``: runners started after no longer get it. Raises
    ``DeployError`` when the server has no such secret."""
    path = f"{API}/secrets/{urllib.parse.quote(name, safe='')}"
    _caller(server, token)("DELETE", path, b"", "application/json")


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """An API key as the server lists it: never its secret."""

    key_id: str
    alias: str | None
    scope: str
    created_at: float
    last_used: float | None


def create_key(
    scope: str = "API",
    alias: str | None = None,
    *,
    server: str | None = None,
    token: str | None = None,
) -> tuple[KeyEntry, str]:
    """Make an API key on the server; returns it and ``id:secret``, shown this once."""
    body = json.dumps({"scope": scope, "alias": alias}).encode()
    _, reply = _caller(server, token)("POST", f"{API}/keys", body, "application/json")
    return _key_entry(reply), str(reply["key"])


def list_keys(*, server: str | None = None, token: str | None = None) -> list[KeyEntry]:
    """The server's API keys, oldest first, with when each was last used."""
    _, reply = _caller(server, token)("GET", f"{API}/keys", b"", "application/json")
    return [_key_entry(e) for e in reply]


def revoke_key(key_id: str, *, server: str | None = None, token: str | None = None) -> None:
    """Revoke an API key. Raises ``DeployError`` when the server has no such key."""
    path = f"{API}/keys/{urllib.parse.quote(key_id, safe='')}"
    _caller(server, token)("DELETE", path, b"", "application/json")


def _key_entry(e: dict[str, Any]) -> KeyEntry:
    return KeyEntry(
        key_id=e["key_id"],
        alias=e.get("alias"),
        scope=e["scope"],
        created_at=float(e["created_at"]),
        last_used=None if e.get("last_used") is None else float(e["last_used"]),
    )


def _caller(server: str | None, token: str | None, timeout: float = 60.0) -> _Caller:
    base = (server or server_url_env()).rstrip("/")
    return _Caller(base, token if token is not None else admin_token_env(), timeout)


class _Caller:
    def __init__(self, base: str, token: str | None, timeout: float) -> None:
        self.base, self.token, self.timeout = base, token, timeout

    def __call__(self, method: str, path: str, body: bytes, kind: str) -> tuple[int, Any]:
        headers = {"content-type": kind}
        if self.token:
            scheme = "Key" if looks_like_key(self.token) else "Bearer"
            headers["authorization"] = f"{scheme} {self.token}"
        request = urllib.request.Request(self.base + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise DeployError(_explain(self.base, method, path, exc)) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeployError(
                f"cannot reach the yurt server at {self.base}: {reason}; start it with "
                "`yurt server`, or point --server (or $YURT_SERVER) at it"
            ) from exc


def _explain(base: str, method: str, path: str, exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        detail, error_type = body.get("detail"), body.get("error_type")
    except (ValueError, AttributeError, OSError):
        detail = error_type = None
    if error_type == "app_not_found":
        return f"{detail}; `GET {API}/apps` lists the deployed apps"
    if error_type == "secret_not_found":
        return f"{detail}; `yurt secrets list` lists them"
    if error_type == "key_not_found":
        return f"{detail}; `yurt keys list` lists them"
    if exc.code == 401:
        return (
            f"the server at {base} wants the admin token or an ADMIN key: pass --token or set "
            "$YURT_ADMIN_TOKEN"
        )
    if exc.code == 404:
        return f"{base} has no admin API ({method} {path}: 404); is it a `yurt server`?"
    if path.startswith(f"{API}/secrets"):
        what = "secret's change" if method != "GET" else "secrets' listing"
    elif path.startswith(f"{API}/keys"):
        what = "key's change" if method != "GET" else "keys' listing"
    else:
        what = "undeploy" if method == "DELETE" else "deploy"
    return f"the server refused the {what} ({method} {path}: {exc.code}): {detail or exc.reason}"
