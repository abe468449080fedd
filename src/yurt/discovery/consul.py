"""Healthy runners from Consul: one blocking health query loop per app (a ``Discovery``).

Nomad registers each runner allocation's group service in Consul under the job's id, with an
HTTP check on ``/_yurt/health``; ``passing`` answers only runners whose checks all pass. The
server announces its own router here too. Every py-consul and aiohttp error is mapped to a
``ClusterError`` in this module.

A token short of ``service:read`` (or ``node:read``) is not refused: Consul filters the entries
it may not see and answers ``[]`` with ``X-Consul-Results-Filtered-By-ACLs: true``
(``setResultsFilteredByACLs`` in hashicorp/consul agent/http.go), which would look exactly like
an app without runners. The watch reads that header and warns once per app while it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import consul
import consul.aio
import structlog
from consul.callback import CB
from consul.exceptions import (
    ACLDisabled,
    ACLPermissionDenied,
    BadRequest,
    ConsulException,
    NotFound,
    Timeout,
)

from yurt.backends.agentcall import status_error, transport_error, with_retries
from yurt.backends.base import RunnerEndpoint
from yurt.backends.nomad.naming import job_id, runner_id_from_service_id
from yurt.backoff import capped_backoff
from yurt.config import ConsulConfig
from yurt.config.base import CONSUL_PORT, parse_addr
from yurt.discovery.consul_http import ConsulClient
from yurt.errors import (
    ClusterError,
    ClusterUnauthorized,
    ClusterUnavailable,
)

log = structlog.get_logger("yurt.consul")

T = TypeVar("T")

RETRIES = 4  # bounded retries of a one-off call (registering the router)
WATCH_RETRY_FIRST_S, WATCH_RETRY_MAX_S = 0.25, 10.0  # backoff of a failing health watch
_STATUS = re.compile(r"^(\d{3}) ")
_HISTORY = 10_000  # runner ids remembered as once healthy, per app
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"


def map_error(exc: BaseException, call: str, addr: str = "") -> ClusterError:
    """The yurt error for a py-consul, aiohttp or socket exception raised by ``call`` to
    ``addr`` (``yurt.backends.agentcall`` names the kinds)."""
    text = str(exc).strip()
    if isinstance(exc, ACLPermissionDenied | ACLDisabled):
        return status_error("consul", 403, f"consul {call}: permission denied: {text}", text)
    if isinstance(exc, NotFound):
        return status_error("consul", 404, f"consul {call}: not found: {text}")
    if isinstance(exc, BadRequest):
        return status_error("consul", 400, f"consul {call}: {text}", text)
    if isinstance(exc, Timeout | aiohttp.ClientError | OSError | TimeoutError):
        why = text or type(exc).__name__
        return transport_error("consul", call, exc, ConsulConfig, addr, why)
    if isinstance(exc, ConsulException):
        found = _STATUS.match(text)
        status = int(found.group(1)) if found else None
        if status is not None and (status >= 500 or status == 429):
            return status_error("consul", status, f"consul {call}: {text}", text)
        return ClusterError(f"consul {call}: {text}", service="consul", status=status, message=text)
    return ClusterError(f"consul {call}: {exc!r}", service="consul")


def endpoints_from(entries: list[dict[str, Any]], token: str = "") -> dict[str, RunnerEndpoint]:
    """Runner endpoints from ``/v1/health/service`` entries (empty address -> the node's), each
    with ``token``, what the router shows the app's runners."""
    out: dict[str, RunnerEndpoint] = {}
    for entry in entries or []:
        service = entry.get("Service") or {}
        node = entry.get("Node") or {}
        address = service.get("Address") or node.get("Address") or ""
        port = service.get("Port") or 0
        if not service.get("ID") or not address or not port:
            continue
        runner_id = runner_id_from_service_id(str(service["ID"]))
        out[runner_id] = RunnerEndpoint(runner_id, str(address), int(port), token)
    return out


def duration(seconds: float) -> str:
    """A Consul agent-API duration (a Go duration string: ``10s``, ``1.5s``)."""
    return f"{seconds:g}s"


@dataclass(eq=False)
class _Watch:
    service: str
    endpoints: dict[str, RunnerEndpoint] = field(default_factory=dict)
    ever: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    filtered: bool = False  # the last answer said ACLs hid entries (warned once)


class ConsulDiscovery:
    """Healthy runners per app from Consul's blocking health queries (a ``Discovery``)."""

    def __init__(
        self,
        config: ConsulConfig,
        job_prefix: str,
        *,
        datacenter: str | None = None,
        runner_token: Callable[[str], str] | None = None,
    ) -> None:
        self.config = config
        self.job_prefix = job_prefix
        # An app's runners' token, from its job id (the Nomad backend gives them the same).
        self.runner_token = runner_token
        # The datacenter the health queries ask (``?dc=``; None: the agent's own, as Consul's
        # parseDC defaults it in agent/http.go): where the runners are placed.
        self.datacenter = datacenter
        self._host, self._port, self._scheme = parse_addr(
            config.addr, service="consul", default_port=CONSUL_PORT
        )
        self._consul: Any = None
        self._watches: dict[str, _Watch] = {}
        self._router_id: str | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the Consul client (py-consul's aio client needs a running loop)."""
        self._client()

    async def close(self) -> None:
        """End every watch and close the HTTP session (the router registration stays)."""
        self._closed = True
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for w in self._watches.values():
            w.changed.set()  # wake watchers so their generators can end
        if self._consul is not None:
            client, self._consul = self._consul, None
            await client.close()

    async def __aenter__(self) -> ConsulDiscovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _client(self) -> Any:
        if self._consul is None:
            if self._closed:
                raise ClusterUnavailable("consul: the discovery is closed", service="consul")
            # aiohttp's default total timeout is 300 s: a blocking query must fit well inside.
            timeout = self.config.blocking_wait * (1 + 1 / 16) + 30
            self._consul = ConsulClient(
                self.config,
                host=self._host,
                port=self._port,
                scheme=self._scheme,
                token=self.config.token,
                dc=self.datacenter,
                # Ours, not py-consul's: it reads CONSUL_HTTP_SSL_VERIFY when this is None.
                verify=self.config.verify_tls,
                connections_timeout=timeout,
            )
        return self._consul

    async def agent_datacenter(self) -> str:
        """The datacenter of the Consul agent we talk to (``GET /v1/agent/self``, needs
        ``agent:read``): ``Config.Datacenter``, as ``AgentSelf`` in hashicorp/consul
        agent/agent_endpoint.go fills it. py-consul's ``agent.self()`` sends no token."""
        client = self._client()

        async def call() -> Any:
            return await client.http.get(
                CB.json(), "/v1/agent/self", headers=client.prepare_headers(self.config.token)
            )

        try:
            reply = await self._retry("agent.self", call)
        except ClusterUnauthorized as exc:
            raise ClusterUnauthorized(
                f"{exc}; or set [nomad] datacenters, so that the agent's need not be read",
                service="consul",
                status=exc.status,
                message=exc.message,
            ) from exc
        dc = (reply.get("Config") or {}).get("Datacenter") if isinstance(reply, dict) else None
        if not isinstance(dc, str) or not dc:
            raise ClusterError(
                "consul agent.self: no Config.Datacenter in the agent's answer; set "
                "[nomad] datacenters to the datacenter runners run in",
                service="consul",
            )
        return dc

    # -- Discovery protocol ----------------------------------------------------------------

    def healthy(self, app_id: str) -> list[RunnerEndpoint]:
        """The healthy runners of an app, as last seen (starts following the app)."""
        return list(self._watch(app_id).endpoints.values())

    async def watch(self, app_id: str) -> AsyncIterator[list[RunnerEndpoint]]:
        """Yield the healthy set at once and then each time it really changes."""
        w = self._watch(app_id)
        while not self._closed:
            event = w.changed
            yield list(w.endpoints.values())
            await event.wait()

    def was_healthy(self, app_id: str, runner_id: str) -> bool:
        """Whether this runner has ever passed its checks while we watched."""
        return runner_id in self._watch(app_id).ever

    async def forget(self, app_id: str) -> None:
        """Stop following an app (it was undeployed): its blocking query ends."""
        w = self._watches.pop(app_id, None)
        if w is not None and w.task is not None:
            w.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w.task

    # -- the loops -------------------------------------------------------------------------

    def _watch(self, app_id: str) -> _Watch:
        w = self._watches.get(app_id)
        if w is None:
            w = _Watch(job_id(self.job_prefix, app_id))
            self._watches[app_id] = w
        if w.task is None and not self._closed:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to follow with
                w.task = asyncio.get_running_loop().create_task(self._follow(app_id, w))
        return w

    async def _follow(self, app_id: str, w: _Watch) -> None:
        index: str | None = None
        failures = 0
        wait = f"{int(self.config.blocking_wait)}s"
        while True:
            try:
                new_index, entries, filtered = await self._health_service(w.service, index, wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = map_error(exc, "health.service", self.config.addr)
                failures += 1
                retry_s = capped_backoff(failures, first=WATCH_RETRY_FIRST_S, cap=WATCH_RETRY_MAX_S)
                log.warning(
                    "consul_watch_failed",
                    app=app_id,
                    service=w.service,
                    error=str(error),
                    retry_s=retry_s,
                )
                await asyncio.sleep(retry_s)
                continue
            failures = 0
            index = self._next_index(app_id, index, new_index)
            self._note_filtered(app_id, w, filtered)
            token = self.runner_token(w.service) if self.runner_token is not None else ""
            self._update(app_id, w, endpoints_from(entries, token))

    async def _health_service(
        self, service: str, index: str | None, wait: str
    ) -> tuple[str, list[dict[str, Any]], bool]:
        """``health.service(passing=True)`` that also reads the filtered-by-ACLs header.

        py-consul's own method drops the response headers, so this sends the same request
        (``/v1/health/service/<name>?passing=1[&index&wait]``) with py-consul's HTTP client.
        """
        client = self._client()
        params: list[tuple[str, str]] = []
        if index:
            params += [("index", index), ("wait", wait)]
        params.append(("passing", "1"))
        if client.dc:
            params.append(("dc", client.dc))
        parse = CB.json(index=True)

        def callback(response: Any) -> tuple[str, list[dict[str, Any]], bool]:
            new_index, entries = parse(response)
            filtered = response.headers.get(FILTERED_HEADER, "").lower() == "true"
            return new_index, entries or [], filtered

        result: tuple[str, list[dict[str, Any]], bool] = await client.http.get(
            callback,
            f"/v1/health/service/{service}",
            params=params,
            headers=client.prepare_headers(self.config.token),
        )
        return result

    @staticmethod
    def _note_filtered(app_id: str, w: _Watch, filtered: bool) -> None:
        # Once per app while it lasts, not at every poll; again if it comes back later.
        if filtered and not w.filtered:
            log.warning(
                "consul_results_filtered_by_acls",
                app=app_id,
                service=w.service,
                detail=(
                    f"Consul hid instances of {w.service!r} from this token, and the router "
                    "never routes to the runners it hides; give the token (ConsulConfig.token "
                    "or CONSUL_HTTP_TOKEN) service:read on the service and node:read on the "
                    "nodes"
                ),
            )
        w.filtered = filtered

    @staticmethod
    def _next_index(app_id: str, old: str | None, new: str) -> str | None:
        # Consul: reset to 0 when the index goes backwards, and never block on an index < 1.
        try:
            value = int(new)
        except (TypeError, ValueError):
            return None
        if old is not None and value < int(old):
            log.info("consul_index_reset", app=app_id, old=old, new=value)
            return None
        return str(value) if value >= 1 else None

    def _update(self, app_id: str, w: _Watch, endpoints: dict[str, RunnerEndpoint]) -> None:
        for runner_id in endpoints:
            w.ever[runner_id] = None
        while len(w.ever) > _HISTORY:
            del w.ever[next(iter(w.ever))]
        if endpoints == w.endpoints:
            return  # a wake-up without a change (the index is table-wide)
        added = endpoints.keys() - w.endpoints.keys()
        gone = w.endpoints.keys() - endpoints.keys()
        w.endpoints = endpoints
        log.info(
            "consul_healthy_changed",
            app=app_id,
            healthy=len(endpoints),
            added=sorted(added),
            gone=sorted(gone),
        )
        # Each change wakes the current watchers once; a fresh event catches the next one.
        event, w.changed = w.changed, asyncio.Event()
        event.set()

    # -- the router's own registration -----------------------------------------------------

    async def _retry(self, call: str, fn: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            try:
                return await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise map_error(exc, call, self.config.addr) from exc

        return await with_retries("consul", call, attempt, retries=RETRIES)

    async def register_router(
        self, name: str, address: str, port: int, check_url: str, interval: float
    ) -> str:
        """Register this server's router in Consul with an HTTP check; returns the service id.

        The id never starts with ``_nomad-task-``: Nomad's sync removes such services.
        """
        service_id = f"{name}-{address}-{port}".replace(":", "-")
        check = consul.Check.http(
            check_url,
            duration(interval),
            timeout=duration(min(interval, 5.0)),
            deregister="1m",  # Consul's minimum
        )
        client = self._client()
        await self._retry(
            "agent.service.register",
            lambda: client.agent.service.register(
                name,
                service_id=service_id,
                address=address,
                port=port,
                tags=["yurt"],
                check=check,
                token=self.config.token,
            ),
        )
        self._router_id = service_id
        log.info("consul_router_registered", service=name, id=service_id, check=check_url)
        return service_id

    async def deregister_router(self) -> None:
        """Remove the router's registration, if this discovery made one."""
        if self._router_id is None:
            return
        service_id, self._router_id = self._router_id, None
        client = self._client()
        await self._retry(
            "agent.service.deregister",
            lambda: client.agent.service.deregister(service_id, token=self.config.token),
        )
        log.info("consul_router_deregistered", id=service_id)
