"""An in-process Consul agent double: service registry, health checks and blocking queries.

Reproduces these facts of NOMAD_CONSUL.md:

- ``PUT /v1/agent/service/register`` takes ``{ID, Name, Tags, Address, Port, Meta, Check |
  Checks[] {CheckID, Name, HTTP, Method, Header, Interval, Timeout, TTL, TCP, Status,
  DeregisterCriticalServiceAfter}}`` with durations as Go duration **strings**; checks start
  critical unless ``Status`` is given. ``PUT /v1/agent/service/deregister/:id``; TTL checks via
  ``PUT /v1/agent/check/pass|warn|fail/:id``.
- ``GET /v1/health/service/:name?passing&tag&index&wait`` returns ``{Node, Service, Checks}``
  entries; ``passing`` requires every check, the node's ``serfHealth`` included; an empty
  ``Service.Address`` stays empty (clients fall back to ``Node.Address``).
- Blocking queries: ``wait`` is a Go duration, default 5 min, capped at 10 min, plus a jitter of
  up to wait/16; the reply carries ``X-Consul-Index``; a query wakes on any change of that
  service's entries or check statuses. ``reset_index()`` makes the index go backwards, as after
  a Consul restart: clients must start again from 0.
- HTTP checks really run: a GET every Interval (first one after a random stagger within it,
  as Consul does), 2xx passing, 429 warning, anything else critical. TCP checks connect.
- ``SuccessBeforePassing``, ``FailuresBeforeWarning`` and ``FailuresBeforeCritical`` (HTTP and
  TCP checks) hold a check's status until that many results in a row, with the counters
  starting at their thresholds so that the first result counts at once
  (``NewStatusHandler``/``StatusHandler.updateCheck`` in agent/checks/check.go,
  hashicorp/consul@4395cd11); ``FailuresBeforeWarning`` 0 means ``FailuresBeforeCritical``
  (``addCheck`` in agent/agent.go), so below the threshold a check stays passing.
- ACL (on once ``token`` or ``tokens`` is given): ``token`` may do everything, each of
  ``tokens`` what its rules say (``service:read``, ``service:write``, ``node:read``,
  ``agent:read``), a request without ``X-Consul-Token`` is the anonymous token (no rules unless
  ``anonymous`` gives some), and any other token is a 403 "ACL not found" (the server resolves
  the token before anything else: ``ResolveTokenAndDefaultMeta`` in
  agent/consul/health_endpoint.go ``Health.ServiceNodes``). Reads are **filtered, not refused**:
  an entry needs ``node:read`` and ``service:read`` (``aclFilter.filterCheckServiceNodes`` in
  agent/consul/acl_filter.go, which reports whether it removed any), so a token short of them
  gets ``[]`` with 200; ``X-Consul-Results-Filtered-By-ACLs: true`` says so
  (``setResultsFilteredByACLs`` in agent/http.go, hashicorp/consul@9e1283c1) unless the token is
  anonymous (``maskResultsFilteredByACLs`` in agent/consul/rpc.go blanks it for an empty token;
  the agent's own ``/v1/agent/services`` handler, ``AgentServices`` in agent/agent_endpoint.go,
  sets it only ``if token != ""``). ACL filtering comes before ``passing`` (the agent drops
  non-passing entries after the RPC), so hidden failing entries count as filtered too.
  Writes (register, deregister, TTL updates) without ``service:write`` and ``/v1/agent/self``
  without ``agent:read`` are a 403 "Permission denied".

Stricter than Consul: unknown keys in a registration are a 400 (Consul ignores some); keys
match case-insensitively and without underscores (as Consul's decoder does, so py-consul's
lowercase keys work) but nothing else; durations given as numbers are refused (Consul reads a
number as nanoseconds); the token is read from the header only; only HTTP, TCP and TTL checks
exist. Simpler: one node, one datacenter (a health query for another is a 500, as with no
WAN path to it), no catalog writes, no KV, no ``near``/``filter``;
ACL rules cover every name (no per-service or prefix rules), and denials say less than Consul's;
``X-Consul-Index`` is per service name rather than the max of Consul's tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from ._durations import parse_go_duration

__all__ = ["ConsulDouble"]

VERSION = "1.20.2"
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
SERF_CHECK = "serfHealth"
STATUSES = ("passing", "warning", "critical")
RULES = frozenset({"service:read", "service:write", "node:read", "agent:read"})
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
_RULES_KEY = web.RequestKey("acl_rules", frozenset)  # what the request's token may do
_TOKEN_KEY = web.RequestKey("acl_token", str)  # the request's token, "" when anonymous

_SERVICE_KEYS = {"ID", "Name", "Tags", "Address", "Port", "Meta", "Check", "Checks"}
_SERVICE_KEYS |= {"EnableTagOverride", "Weights", "Kind", "TaggedAddresses"}
_CHECK_KEYS = {
    "CheckID",
    "ID",
    "Name",
    "Notes",
    "HTTP",
    "Method",
    "Header",
    "Interval",
    "Timeout",
    "TTL",
    "TCP",
    "Status",
    "DeregisterCriticalServiceAfter",
    "TLSSkipVerify",
    "Body",
    "SuccessBeforePassing",
    "FailuresBeforeWarning",
    "FailuresBeforeCritical",
}
_THRESHOLDS = ("SuccessBeforePassing", "FailuresBeforeWarning", "FailuresBeforeCritical")
_DURATIONS = ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter")


class _BadRequest(Exception):
    pass


def _fold(key: str) -> str:
    return key.replace("_", "").lower()


def _canonical(body: Any, allowed: set[str], what: str) -> dict[str, Any]:
    """Keys mapped to their Consul spelling; unknown keys are a 400 here (stricter)."""
    if not isinstance(body, dict):
        raise _BadRequest(f"Request decode failed: {what} must be a JSON object")
    names = {_fold(k): k for k in allowed}
    out: dict[str, Any] = {}
    for key, value in body.items():
        name = names.get(_fold(key))
        if name is None:
            raise _BadRequest(f"Request decode failed: unknown field {key!r} in {what}")
        out[name] = value
    return out


@dataclass
class _Check:
    id: str
    name: str
    service_id: str
    service_name: str
    status: str
    http: str = ""
    method: str = "GET"
    header: dict[str, list[str]] = field(default_factory=dict)
    tcp: str = ""
    interval: float = 0.0
    timeout: float = 10.0
    ttl: float = 0.0
    deregister_after: float = 0.0
    output: str = ""
    pinned: bool = False
    critical_since: float | None = None
    task: asyncio.Task[None] | None = None
    ttl_deadline: float = 0.0
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    successes: int = 0  # in a row; starts at its threshold (NewStatusHandler)
    failures: int = 0

    @property
    def kind(self) -> str:
        return "http" if self.http else "tcp" if self.tcp else "ttl" if self.ttl else ""


@dataclass
class _Service:
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    create_index: int
    modify_index: int
    check_ids: list[str] = field(default_factory=list)


class ConsulDouble:
    """A Consul agent in-process on 127.0.0.1; see the module docstring for what it does."""

    def __init__(
        self,
        *,
        token: str | None = None,
        tokens: Mapping[str, Iterable[str]] | None = None,
        anonymous: Iterable[str] = (),
        node: str = "node-1",
        node_address: str = "127.0.0.1",
        datacenter: str = "dc1",
    ) -> None:
        self.token = token
        self.tokens = {secret: frozenset(rules) for secret, rules in (tokens or {}).items()}
        self.anonymous = frozenset(anonymous)
        for rules in (*self.tokens.values(), self.anonymous):
            if not rules <= RULES:
                raise ValueError(
                    f"unknown ACL rules {sorted(rules - RULES)}; known: {sorted(RULES)}"
                )
        self.acl_enabled = token is not None or bool(self.tokens)
        self.node = node
        self.node_address = node_address
        self.datacenter = datacenter
        self.requests: list[tuple[str, str]] = []
        self._services: dict[str, _Service] = {}
        self._checks: dict[str, _Check] = {}
        self._index = 10
        self._service_index: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._serf = _Check(SERF_CHECK, "Serf Health Status", "", "", "passing")
        self._serf.output = "Agent alive and reachable"
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.url = ""

    # lifecycle

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_put("/v1/agent/service/register", self._register)
        r.add_put("/v1/agent/service/deregister/{id}", self._deregister)
        r.add_get("/v1/agent/services", self._agent_services)
        r.add_get("/v1/health/service/{name}", self._health)
        r.add_get("/v1/catalog/services", self._catalog_services)
        r.add_put("/v1/agent/check/{verb:pass|warn|fail}/{id}", self._ttl_update)
        r.add_get("/v1/status/leader", self._leader)
        r.add_get("/v1/agent/self", self._self)
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._reaper = asyncio.create_task(self._reap())

    async def stop(self) -> None:
        tasks = [c.task for c in self._checks.values() if c.task]
        if self._reaper:
            tasks.append(self._reaper)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        if self._session:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ConsulDouble:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # test hooks

    def entries(self, name: str, passing: bool = False) -> list[dict[str, Any]]:
        """What ``GET /v1/health/service/<name>`` would answer now."""
        out = []
        for service in sorted(self._services.values(), key=lambda s: s.id):
            if service.name != name:
                continue
            checks = [self._serf] + [self._checks[c] for c in service.check_ids]
            if passing and any(c.status != "passing" for c in checks):
                continue
            out.append(self._entry(service, checks))
        return out

    def set_check_status(self, check_id: str, status: str | None, output: str = "") -> None:
        """Force a check's status (``serfHealth`` included); it sticks until set to None.

        While forced, the check's own probe stops overriding it.
        """
        check = self._serf if check_id == SERF_CHECK else self._checks[check_id]
        if status is None:
            check.pinned = False
            return
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        check.pinned = True
        self._set_status(check, status, output or f"set by test to {status}")

    def reset_index(self) -> None:
        """Make every index smaller than any handed out before, as after a Consul restart."""
        self._index = 1
        self._service_index = dict.fromkeys(self._service_index, 1)
        self._wake()

    def check_ids(self, service_id: str) -> list[str]:
        """The ids of a registered service's checks."""
        return list(self._services[service_id].check_ids)

    def check_status(self, check_id: str) -> str | None:
        """A check's status now, or None when no such check is registered."""
        check = self._serf if check_id == SERF_CHECK else self._checks.get(check_id)
        return check.status if check else None

    @property
    def index(self) -> int:
        return self._index

    # state changes

    def _bump(self, *names: str) -> int:
        self._index += 1
        for name in names:
            self._service_index[name] = self._index
        self._wake()
        return self._index

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _set_status(self, check: _Check, status: str, output: str) -> None:
        check.output = output
        if status == "critical":
            check.critical_since = check.critical_since or time.monotonic()
        else:
            check.critical_since = None
        if check.status == status:
            return
        check.status = status
        if check is self._serf:
            self._bump(*{s.name for s in self._services.values()})
        else:
            self._bump(check.service_name)

    def _remove_service(self, service_id: str) -> None:
        service = self._services.pop(service_id)
        for check_id in service.check_ids:
            check = self._checks.pop(check_id, None)
            if check and check.task:
                check.task.cancel()
        self._bump(service.name)

    # checks

    def _parse_check(self, raw: Any, service: _Service, n: int) -> _Check:
        spec = _canonical(raw, _CHECK_KEYS, "check")
        secs: dict[str, float] = {}
        for key in _DURATIONS:
            value = spec.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise _BadRequest(
                    f"Request decode failed: {key} must be a duration string like '10s', "
                    f"got {value!r}"
                )
            try:
                secs[key] = parse_go_duration(value)
            except ValueError as exc:
                raise _BadRequest(f"Request decode failed: {key}: {exc}") from None
        counts: dict[str, int] = {}
        for key in _THRESHOLDS:
            value = spec.get(key) or 0
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _BadRequest(f"Request decode failed: {key} must be an integer >= 0")
            counts[key] = value
        kinds = [k for k in ("HTTP", "TCP", "TTL") if spec.get(k)]
        if len(kinds) != 1:
            raise _BadRequest("Invalid check: exactly one of HTTP, TCP or TTL is needed here")
        if kinds[0] != "TTL" and secs.get("Interval", 0) <= 0:
            raise _BadRequest(f"Invalid check: {kinds[0]} checks need an Interval")
        status = spec.get("Status") or "critical"
        if status not in STATUSES:
            raise _BadRequest(f"Invalid check: Status {status!r} is not one of {STATUSES}")
        check_id = spec.get("CheckID") or spec.get("ID") or f"service:{service.id}"
        if n and not (spec.get("CheckID") or spec.get("ID")):
            check_id = f"service:{service.id}:{n + 1}"
        return _Check(
            id=check_id,
            name=spec.get("Name") or f"Service '{service.name}' check",
            service_id=service.id,
            service_name=service.name,
            status=status,
            http=spec.get("HTTP") or "",
            method=spec.get("Method") or "GET",
            header=spec.get("Header") or {},
            tcp=spec.get("TCP") or "",
            interval=secs.get("Interval", 0.0),
            timeout=secs.get("Timeout", 10.0),
            ttl=secs.get("TTL", 0.0),
            # Consul's reaper never removes a service sooner than a minute.
            deregister_after=max(secs.get("DeregisterCriticalServiceAfter", 0.0), 60.0)
            if "DeregisterCriticalServiceAfter" in secs
            else 0.0,
            ttl_deadline=time.monotonic() + secs.get("TTL", 0.0),
            success_before_passing=counts["SuccessBeforePassing"],
            failures_before_warning=counts["FailuresBeforeWarning"]
            or counts["FailuresBeforeCritical"],
            failures_before_critical=counts["FailuresBeforeCritical"],
            successes=counts["SuccessBeforePassing"],
            failures=counts["FailuresBeforeCritical"],
        )

    async def _probe(self, check: _Check) -> tuple[str, str]:
        if check.tcp:
            host, _, port = check.tcp.rpartition(":")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port)), check.timeout
                )
            except (OSError, TimeoutError, ValueError) as exc:
                return "critical", f"dial tcp {check.tcp}: {exc}"
            writer.close()
            return "passing", f"TCP connect {check.tcp}: Success"
        assert self._session is not None
        headers = {k: ", ".join(v) for k, v in check.header.items()}
        try:
            async with self._session.request(
                check.method,
                check.http,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=check.timeout),
            ) as resp:
                body = (await resp.content.read(4096)).decode(errors="replace")
                code = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return "critical", f"Get {check.http!r}: {exc!r}"
        status = "passing" if 200 <= code < 300 else "warning" if code == 429 else "critical"
        return status, f"HTTP {check.method} {check.http}: {code} Output: {body}"

    async def _run_check(self, check: _Check) -> None:
        # Consul staggers a check's first run randomly within its interval.
        await asyncio.sleep(random.uniform(0, check.interval))
        while True:
            started = time.monotonic()
            status, output = await self._probe(check)
            if not check.pinned and check.id in self._checks:
                self._update_check(check, status, output)
            await asyncio.sleep(max(0.0, check.interval - (time.monotonic() - started)))

    def _update_check(self, check: _Check, status: str, output: str) -> None:
        """A probe's result through Consul's StatusHandler thresholds."""
        if status in ("passing", "warning"):
            check.successes += 1
            check.failures = 0
            if check.successes >= check.success_before_passing:
                self._set_status(check, status, output)
            return
        check.failures += 1
        check.successes = 0
        if check.failures >= check.failures_before_critical:
            self._set_status(check, status, output)
        elif check.failures >= check.failures_before_warning:
            self._set_status(check, "warning", output)

    async def _reap(self) -> None:
        """Expire TTL checks and remove services critical past DeregisterCriticalServiceAfter."""
        while True:
            now = time.monotonic()
            for check in list(self._checks.values()):
                if check.ttl and not check.pinned and now > check.ttl_deadline:
                    self._set_status(check, "critical", "TTL expired")
                since = check.critical_since
                expired = since is not None and now - since > check.deregister_after
                if check.deregister_after and expired and check.service_id in self._services:
                    self._remove_service(check.service_id)
            await asyncio.sleep(0.2)

    # HTTP

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        given = request.headers.get("X-Consul-Token", "")
        if not self.acl_enabled or (given and given == self.token):
            rules = RULES
        elif not given:
            rules = self.anonymous
        elif given in self.tokens:
            rules = self.tokens[given]
        else:
            return web.Response(status=403, text="ACL not found")
        request[_RULES_KEY], request[_TOKEN_KEY] = rules, given
        try:
            response: web.StreamResponse = await handler(request)
        except _BadRequest as exc:
            return web.Response(status=400, text=str(exc))
        return response

    @staticmethod
    def _may(request: web.Request, rule: str) -> bool:
        rules: frozenset[str] = request[_RULES_KEY]
        # A write policy grants read too (Consul's policy levels: deny < read < write).
        return rule in rules or (rule == "service:read" and "service:write" in rules)

    @staticmethod
    def _denied(rule: str, name: str) -> web.Response:
        return web.Response(
            status=403, text=f"Permission denied: token lacks permission '{rule}' on {name!r}"
        )

    @staticmethod
    def _filtered_headers(request: web.Request, filtered: bool) -> dict[str, str]:
        # Never for the anonymous token: Consul masks the flag for an empty token.
        return {FILTERED_HEADER: "true"} if filtered and request[_TOKEN_KEY] else {}

    async def _register(self, request: web.Request) -> web.Response:
        try:
            raw = await request.json()
        except ValueError as exc:
            raise _BadRequest(f"Request decode failed: {exc}") from None
        spec = _canonical(raw, _SERVICE_KEYS, "service")
        name = spec.get("Name")
        if not isinstance(name, str) or not name:
            raise _BadRequest("Missing service name")
        port = spec.get("Port", 0)
        if not isinstance(port, int) or isinstance(port, bool):
            raise _BadRequest(f"Request decode failed: Port must be an integer, got {port!r}")
        meta = spec.get("Meta") or {}
        if not all(isinstance(v, str) for v in meta.values()):
            raise _BadRequest("Request decode failed: Meta values must be strings")
        if not self._may(request, "service:write"):
            return self._denied("service:write", name)
        service_id = spec.get("ID") or name
        old = self._services.get(service_id)
        service = _Service(
            id=service_id,
            name=name,
            tags=list(spec.get("Tags") or []),
            address=spec.get("Address") or "",
            port=port,
            meta=dict(meta),
            create_index=old.create_index if old else self._index + 1,
            modify_index=self._index + 1,
        )
        raw_checks = list(spec.get("Checks") or [])
        if spec.get("Check"):
            raw_checks.insert(0, spec["Check"])
        checks = [self._parse_check(c, service, n) for n, c in enumerate(raw_checks)]
        if old:
            self._remove_service(service_id)
        service.check_ids = [c.id for c in checks]
        self._services[service_id] = service
        for check in checks:
            if check.critical_since is None and check.status == "critical":
                check.critical_since = time.monotonic()
            self._checks[check.id] = check
            if check.kind in ("http", "tcp"):
                check.task = asyncio.create_task(self._run_check(check))
        self._bump(name)
        return web.Response()

    async def _deregister(self, request: web.Request) -> web.Response:
        service_id = request.match_info["id"]
        if service_id not in self._services:
            return web.Response(status=404, text=f'Unknown service ID "{service_id}"')
        if not self._may(request, "service:write"):
            return self._denied("service:write", self._services[service_id].name)
        self._remove_service(service_id)
        return web.Response()

    async def _ttl_update(self, request: web.Request) -> web.Response:
        check = self._checks.get(request.match_info["id"])
        if check is None or not check.ttl:
            return web.Response(status=404, text=f'Unknown check ID "{request.match_info["id"]}"')
        if not self._may(request, "service:write"):
            return self._denied("service:write", check.service_name)
        status = {"pass": "passing", "warn": "warning", "fail": "critical"}
        check.ttl_deadline = time.monotonic() + check.ttl
        if not check.pinned:
            note = request.query.get("note", "")
            self._set_status(check, status[request.match_info["verb"]], note)
        return web.Response()

    async def _agent_services(self, request: web.Request) -> web.Response:
        readable = self._may(request, "service:read")
        return web.json_response(
            {
                s.id: {
                    "ID": s.id,
                    "Service": s.name,
                    "Tags": s.tags,
                    "Meta": s.meta,
                    "Port": s.port,
                    "Address": s.address,
                    "Weights": {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": False,
                    "Datacenter": self.datacenter,
                }
                for s in self._services.values()
                if readable
            },
            headers=self._filtered_headers(request, bool(self._services) and not readable),
        )

    async def _catalog_services(self, request: web.Request) -> web.Response:
        found: dict[str, list[str]] = {"consul": []}
        for s in self._services.values():
            tags = found.setdefault(s.name, [])
            tags.extend(t for t in s.tags if t not in tags)
        headers = {"X-Consul-Index": str(self._index)}
        if not self._may(request, "service:read"):
            headers |= self._filtered_headers(request, bool(found))
            found = {}
        return web.json_response(found, headers=headers)

    def _entry(self, s: _Service, checks: list[_Check]) -> dict[str, Any]:
        return {
            "Node": {
                "ID": "",
                "Node": self.node,
                "Address": self.node_address,
                "Datacenter": self.datacenter,
                "TaggedAddresses": {"lan": self.node_address, "wan": self.node_address},
                "Meta": {},
            },
            "Service": {
                "ID": s.id,
                "Service": s.name,
                "Tags": s.tags,
                "Address": s.address,
                "Meta": s.meta,
                "Port": s.port,
                "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": False,
                "CreateIndex": s.create_index,
                "ModifyIndex": s.modify_index,
            },
            "Checks": [
                {
                    "Node": self.node,
                    "CheckID": c.id,
                    "Name": c.name,
                    "Status": c.status,
                    "Notes": "",
                    "Output": c.output,
                    "ServiceID": c.service_id,
                    "ServiceName": c.service_name,
                    "ServiceTags": s.tags if c.service_id else [],
                    "Type": "serf" if c is self._serf else c.kind,
                }
                for c in checks
            ],
        }

    async def _health(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        # ``?dc=`` names the datacenter asked, the agent's own when absent (parseDC in
        # agent/http.go); the one datacenter here has no path to any other, which Consul
        # answers 500 "No path to datacenter" (errNoDCPath, agent/structs/errors.go).
        if request.query.get("dc", self.datacenter) != self.datacenter:
            return web.Response(status=500, text="No path to datacenter")
        wait, min_index = _blocking_params(request, DEFAULT_WAIT, MAX_WAIT)
        if min_index:
            deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
            while self._service_index.get(name, 1) <= min_index:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
        passing = "passing" in request.query and request.query["passing"] not in ("0", "false")
        tags = request.query.getall("tag", [])
        found = [e for e in self.entries(name) if all(t in e["Service"]["Tags"] for t in tags)]
        # ACL filtering first, then the agent drops what is not passing.
        filtered = False
        if not (self._may(request, "node:read") and self._may(request, "service:read")):
            filtered, found = bool(found), []
        if passing:
            found = [e for e in found if all(c["Status"] == "passing" for c in e["Checks"])]
        index = max(self._service_index.get(name, 1), 1)
        headers = {"X-Consul-Index": str(index)} | self._filtered_headers(request, filtered)
        return web.json_response(found, headers=headers)

    async def _leader(self, request: web.Request) -> web.Response:
        return web.json_response(f"{self.node_address}:8300")

    async def _self(self, request: web.Request) -> web.Response:
        if not self._may(request, "agent:read"):
            return self._denied("agent:read", self.node)
        return web.json_response(
            {
                "Config": {
                    "Datacenter": self.datacenter,
                    "NodeName": self.node,
                    "Version": VERSION,
                    "Server": True,
                },
                "Member": {"Name": self.node, "Addr": self.node_address, "Status": 1},
            }
        )


def _blocking_params(request: web.Request, default: float, cap: float) -> tuple[float, int]:
    """(wait seconds, index) of a blocking query, parsed as both servers' parseWait does."""
    wait = default
    if raw := request.query.get("wait"):
        try:
            wait = parse_go_duration(raw)
        except ValueError:
            raise _BadRequest("Invalid wait time") from None
    index = 0
    if raw := request.query.get("index"):
        if not raw.isdigit():
            raise _BadRequest("Invalid index")
        index = int(raw)
    return min(max(wait, 0.0), cap) or default, index
