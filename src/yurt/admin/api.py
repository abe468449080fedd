"""The admin API under ``/_yurt/api/v1/``: upload payloads, deploy apps, list them.

::

    PUT  /_yurt/api/v1/payloads/{sha256}     payload bytes           -> 201 {sha256, revision}
    GET  /_yurt/api/v1/payloads/{sha256}     (runners: revision token) -> payload bytes
    POST /_yurt/api/v1/apps                  {spec, payload_sha256, owner?} -> 201 | 200
                                             (``outcome``: created, updated or unchanged)
    GET  /_yurt/api/v1/apps                  -> [app]
    GET  /_yurt/api/v1/apps/{owner}/{app}    -> app, with its revisions and runners
    GET  /_yurt/api/v1/apps/{owner}/{app}/revisions -> [{sha256, deployed_at}], oldest first
    DELETE /_yurt/api/v1/apps/{owner}/{app}  -> 200 {app_id, revision, outcome: "undeployed",
                                             failed_requests} | 404 app_not_found
    DELETE /_yurt/api/v1/apps/{app}          the same, for the server's default owner
    GET    /_yurt/api/v1/secrets             -> [{name, set_at}], never a value
    PUT    /_yurt/api/v1/secrets/{name}      {value} -> 201 | 200 {name, set_at, outcome}
    DELETE /_yurt/api/v1/secrets/{name}      -> 200 {name, outcome: "unset"} | 404
    GET|POST /_yurt/api/v1/keys, DELETE /_yurt/api/v1/keys/{id}: API keys (admin/keys_api.py)

Every call but a payload download needs the admin token when one is configured
(``Authorization: Bearer <token>``) or an ADMIN-scoped key (``Authorization: Key <id>:<secret>``);
once any key exists, a server with no admin token wants an ADMIN key. A payload download needs
that revision's token (what runners hold), the admin token or an ADMIN key. A payload is code
the runners will execute, so the server refuses to listen beyond loopback with no admin token
(see ``check_exposure``). Under ``yurt run`` (``deploys=False``) only payload downloads are
served.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import re
from typing import Any, Protocol

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from yurt.admin.keys_api import key_call
from yurt.admin.secrets import SecretKeeper
from yurt.admin.secrets_api import secret_call
from yurt.admin.store import AppStore, Deployment, Removal, is_sha256
from yurt.errors import ConfigError, DeployError, PayloadError, SchedulingError
from yurt.keys import KeyStore
from yurt.machines import CATALOG
from yurt.packaging import PayloadHeader, read_header
from yurt.router.http import Reply, error_reply, json_reply
from yurt.spec import AppSpec

log = structlog.get_logger("yurt.admin")

PREFIX = "/_yurt/api/v1/"
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")


class DeployRequest(BaseModel):
    """The body of ``POST /_yurt/api/v1/apps``."""

    model_config = ConfigDict(extra="forbid")

    spec: AppSpec
    payload_sha256: str
    owner: str | None = None


class Deployer(Protocol):
    """What the admin API drives (the platform)."""

    store: AppStore
    default_owner: str

    async def deploy(self, app_id: str, spec: AppSpec, sha256: str) -> tuple[Deployment, str]:
        """Serve ``sha256`` as the app's current revision: created, updated or unchanged."""
        ...

    def describe_app(self, app_id: str) -> dict[str, Any] | None:
        """The app's load and runners, if served."""
        ...

    def environment(self, app_id: str, after: int = 0) -> dict[str, Any] | None:
        """The app's environment and its build's events past the first ``after``."""
        ...

    async def undeploy(self, app_id: str) -> Removal | None:
        """Stop serving the app and forget it; None when there is no such app."""
        ...


def check_exposure(host: str, admin_token: str | None) -> None:
    """Refuse an admin API open to the network: it accepts code to run."""
    if admin_token is not None:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(
            f"the server listens on {host} with no admin token, so anyone who reaches it "
            "could deploy code; set --admin-token (or $YURT_ADMIN_TOKEN), or listen on "
            "127.0.0.1"
        )


def _bearer(request: web.BaseRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class AdminApi:
    """Serves the admin routes for one platform."""

    def __init__(
        self,
        deployer: Deployer,
        *,
        admin_token: str | None,
        public_url: str | None,
        limit: int,
        deploys: bool = True,
        secrets: SecretKeeper | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        self.deployer = deployer
        self.keys = keys
        self.secrets = secrets  # None: the backend does not carry secrets (501)
        self.deploys = deploys  # False: only runners' payload downloads (``yurt run``)
        self.admin_token = admin_token
        self.public_url = public_url
        self.limit = limit

    def _admin_key(self, request: web.BaseRequest) -> bool:
        if self.keys is None:
            return False
        key = self.keys.verify(request.headers.get("Authorization"))
        return key is not None and key.scope == "ADMIN"

    def _is_admin(self, request: web.BaseRequest) -> bool:
        if self.admin_token is not None and _same(_bearer(request), self.admin_token):
            return True
        if self.keys is not None:
            if self._admin_key(request):
                return True
            if self.keys.any():  # keys are on: an admin shows an ADMIN key or the token
                return False
        # A server with no token listens on loopback only (check_exposure).
        return self.admin_token is None

    async def handle(self, request: web.BaseRequest) -> Reply | web.StreamResponse:
        """Answer one admin call."""
        path = request.path
        if not path.startswith(PREFIX):
            return error_reply(404, "not_found", f"no admin route {path}; the API is {PREFIX}")
        parts = path[len(PREFIX) :].strip("/").split("/")
        method = request.method
        if not self.deploys and not (parts[0] == "payloads" and method == "GET"):
            return error_reply(
                404, "not_found", f"{path}: `yurt run` takes no deploys; deploy to a yurt server"
            )
        if parts[0] == "payloads" and len(parts) == 2:
            if method == "GET":
                return self._download(request, parts[1])
            if method == "PUT":
                if not self._is_admin(request):
                    return _denied()
                return await self._upload(request, parts[1])
        elif parts[0] == "apps" and len(parts) in (1, 2, 3, 4):
            if not self._is_admin(request):
                return _denied()
            if (reply := await self._apps_call(request, parts)) is not None:
                return reply
        elif parts[0] == "keys" and len(parts) in (1, 2) and self.keys is not None:
            if not self._is_admin(request):
                return _denied()
            return await key_call(request, self.keys, parts[1:], self._read, _invalid)
        elif parts[0] == "secrets" and len(parts) in (1, 2):
            if not self._is_admin(request):
                return _denied()
            return await secret_call(request, self.secrets, parts[1:], self._read, _invalid)
        else:
            return error_reply(404, "not_found", f"no admin route {path}")
        return error_reply(405, "method_not_allowed", f"{method} {path} is not served")

    async def _apps_call(self, request: web.BaseRequest, parts: list[str]) -> Reply | None:
        """``apps[/owner[/app[/revisions|environment]]]``; None: not served for this method."""
        path, method = request.path, request.method
        if len(parts) == 2 and method != "DELETE":
            return error_reply(404, "not_found", f"no admin route {path}")
        if len(parts) == 1:
            if method == "POST":
                return await self._deploy(request)
            if method == "GET":
                return json_reply([self._app(request, d) for d in self.deployer.store.all()])
        elif len(parts) == 4 and parts[3] == "environment" and method == "GET":
            return self._environment(request, f"{parts[1]}/{parts[2]}")
        elif len(parts) == 4 and parts[3] != "revisions":
            return error_reply(404, "not_found", f"no admin route {path}")
        elif len(parts) in (2, 3) and method == "DELETE":
            owner = parts[1] if len(parts) == 3 else self.deployer.default_owner
            return await self._undeploy(owner, parts[-1])
        elif method == "GET":
            found = self.deployer.store.get(f"{parts[1]}/{parts[2]}")
            if found is None:
                return error_reply(404, "not_found", f"no app {parts[1]}/{parts[2]} deployed")
            if len(parts) == 3:
                return json_reply(self._app(request, found, full=True))
            return json_reply([r.model_dump() for r in found.revisions])
        return None

    # -- payloads --------------------------------------------------------------------------

    def _download(self, request: web.BaseRequest, sha256: str) -> Reply | web.StreamResponse:
        # Only the revision's token, or the configured admin token: never open, since a
        # payload may carry what the app's author keeps private (code, keys in closures).
        store = self.deployer.store
        token = _bearer(request)
        allowed = (
            (token is not None and is_sha256(sha256) and _same(token, store.token(sha256)))
            or (self.admin_token is not None and _same(token, self.admin_token))
            or self._admin_key(request)
        )
        if not allowed:
            return _denied("give the payload's token: Authorization: Bearer <token>")
        path = store.payload_path(sha256)
        if path is None:
            return error_reply(404, "not_found", f"no payload {sha256[:64]} on this server")
        # Streamed from the file: a payload may be large, and the loop serves everyone.
        return web.FileResponse(path, headers={"content-type": "application/octet-stream"})

    async def _upload(self, request: web.BaseRequest, sha256: str) -> Reply:
        if not is_sha256(sha256):
            return error_reply(422, "bad_request", "payloads are named by 64 lowercase hex digits")
        body = await self._read(request)
        if isinstance(body, Reply):
            return body
        try:
            # Hashing and writing a large payload would stall every request on the loop.
            header = await asyncio.to_thread(self._keep, body, sha256)
        except PayloadError as exc:
            return error_reply(422, "bad_request", str(exc))
        return json_reply({"sha256": header.sha256, "revision": header.revision}, 201)

    def _keep(self, data: bytes, sha256: str) -> PayloadHeader:
        try:
            header, _ = read_header(data)
        except PayloadError as exc:
            raise PayloadError(f"not a valid payload: {exc}") from exc
        if header.sha256 != sha256:
            raise PayloadError(f"the payload's digest is {header.sha256}, not {sha256}")
        self.deployer.store.put_payload(data, header)
        return header

    async def _read(self, request: web.BaseRequest) -> bytes | Reply:
        length = request.content_length
        too_large = error_reply(
            413, "request_too_large", f"the body is larger than the limit of {self.limit} bytes"
        )
        if length is not None and length > self.limit:
            return too_large
        chunks, size = [], 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > self.limit:
                return too_large
            chunks.append(chunk)
        return b"".join(chunks)

    # -- apps ------------------------------------------------------------------------------

    async def _deploy(self, request: web.BaseRequest) -> Reply:
        body = await self._read(request)
        if isinstance(body, Reply):
            return body
        try:
            req = DeployRequest.model_validate_json(body)
        except ValidationError as exc:
            return _invalid(exc)
        problem = _check(req, self.deployer.default_owner)
        if problem is not None:
            return problem
        owner = req.owner or self.deployer.default_owner
        app_id = f"{owner}/{req.spec.app_name}"
        if self.deployer.store.payload_path(req.payload_sha256) is None:
            return error_reply(
                422,
                "bad_request",
                f"payload_sha256: no payload {req.payload_sha256[:12]} on this server; "
                f"PUT it to {PREFIX}payloads/{req.payload_sha256} first",
            )
        try:
            deployment, outcome = await self.deployer.deploy(app_id, req.spec, req.payload_sha256)
        except SchedulingError as exc:  # e.g. a GPU this server's machine does not have
            log.warning("deploy_refused", app=app_id, error=str(exc))
            return error_reply(422, "bad_request", f"{app_id} was not deployed: {exc}")
        except DeployError as exc:  # the cluster refused or did not answer: say what it said
            log.warning("deploy_failed", app=app_id, error=str(exc))
            return error_reply(502, "deploy_failed", f"{app_id} was not deployed: {exc}")
        reply = {**self._app(request, deployment), "outcome": outcome}
        return json_reply(reply, 201 if outcome == "created" else 200)

    def _environment(self, request: web.BaseRequest, app_id: str) -> Reply:
        after = request.query.get("after", "0")
        if not after.isdigit():
            return error_reply(422, "bad_request", f"after: {after!r} is not a count of events")
        found = self.deployer.environment(app_id, int(after))
        if found is None:
            return error_reply(404, "app_not_found", f"no app {app_id} deployed on this server")
        return json_reply(found)

    async def _undeploy(self, owner: str, app_name: str) -> Reply:
        app_id = f"{owner}/{app_name}"
        if not (_is_segment(owner) and _is_segment(app_name)):  # the store makes paths of them
            return error_reply(404, "app_not_found", f"no app {app_id!r} deployed on this server")
        try:
            done = await self.deployer.undeploy(app_id)
        except DeployError as exc:  # Nomad refused or did not answer: the app is as it was
            log.warning("undeploy_failed", app=app_id, error=str(exc))
            return error_reply(
                502, "undeploy_failed", f"{app_id} was not undeployed (it still runs): {exc}"
            )
        if done is None:
            return error_reply(404, "app_not_found", f"no app {app_id} deployed on this server")
        return json_reply(
            {
                "app_id": app_id,
                "revision": done.deployment.current.revision,
                "outcome": "undeployed",
                "failed_requests": done.failed,
            }
        )

    # -- secrets ---------------------------------------------------------------------------

    def _app(self, request: web.BaseRequest, d: Deployment, full: bool = False) -> dict[str, Any]:
        base = self.public_url or f"{request.scheme}://{request.host}"
        out: dict[str, Any] = {
            "app_id": d.app_id,
            "revision": d.current.revision,
            "sha256": d.current.sha256,
            "url": f"{base}/{d.app_id}",
            "queue_url": f"{base}/queue/{d.app_id}",
            "endpoints": [e.path for e in d.spec.endpoints],
            "machine_types": d.spec.machine_types,
        }
        if full:
            out["revisions"] = [r.model_dump() for r in d.revisions]
            out["status"] = self.deployer.describe_app(d.app_id)
        return out


def _is_segment(value: str) -> bool:
    """A name the store may make a path of: one URL segment, never ``.`` or ``..``."""
    return bool(_SEGMENT.match(value)) and value not in (".", "..")


def _check(req: DeployRequest, default_owner: str) -> Reply | None:
    owner = req.owner or default_owner
    if not _is_segment(owner):
        return error_reply(422, "bad_request", f"owner: {owner!r} is not a URL segment")
    if not _is_segment(req.spec.app_name):
        return error_reply(422, "bad_request", f"spec.app_name: {req.spec.app_name!r} is invalid")
    unknown = [m for m in req.spec.machine_types if m not in CATALOG]
    if unknown:
        return error_reply(
            422,
            "bad_request",
            f"spec.machine_types: {unknown} unknown to this server; it knows {sorted(CATALOG)}",
        )
    if not is_sha256(req.payload_sha256):
        return error_reply(422, "bad_request", "payload_sha256: 64 lowercase hex digits")
    return None


def _invalid(exc: ValidationError) -> Reply:
    errors = [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False)
    ]
    fields = ", ".join(".".join(e["loc"]) or "body" for e in errors[:5])
    return Reply(
        422,
        [(b"content-type", b"application/json")],
        json.dumps({"detail": errors, "error_type": "bad_request", "fields": fields}).encode(),
    )


def _same(given: str | None, expected: str) -> bool:
    """Constant-time comparison of tokens (as bytes: any header text compares, none raises)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _denied(detail: str = "give the admin token: Authorization: Bearer <token>") -> Reply:
    return error_reply(401, "unauthorized", detail)
