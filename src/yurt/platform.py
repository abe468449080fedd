"""The platform: router, queue, scheduler, a backend and its discovery, in one process.

``yurt run`` and ``yurt.serve`` use it with the local backend and the Apps they were given;
``yurt server`` uses it with either backend, keeps what is deployed through the admin API in
the data dir, and serves it again after a restart.
"""

from __future__ import annotations

import asyncio
import fcntl
import hmac
import ipaddress
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from yurt.admin.api import check_exposure
from yurt.admin.store import Deployment, Removal, is_sha256
from yurt.app import App
from yurt.backends.base import Backend, Discovery
from yurt.backends.local import LocalBackend
from yurt.composition import build_platform
from yurt.config import ServerConfig
from yurt.errors import ConfigError
from yurt.files.location import cluster_env
from yurt.packaging import PayloadHeader, pack
from yurt.privatefs import open_private, private_dir, tighten
from yurt.spec import AppSpec, build_spec

if TYPE_CHECKING:
    from yurt.backends.nomad.naming import PayloadRef

log = structlog.get_logger("yurt.platform")


def instance_address(host: str, port: int, tls: bool, public_url: str) -> tuple[str, int, str]:
    """Where Consul finds and checks this router: ``(address, port, base URL)``. Pure.

    The address the router listens on, when that is one address (``--host ${NOMAD_IP_http}``
    in jobs/yurt-server.json): Consul's agent runs an HTTP check itself, and a check through
    the public URL (a load balancer) would pass while this instance is down. A router
    listening on every address (0.0.0.0, ::) names no one address, so the public URL's host
    and port stand in.
    """
    try:
        everywhere = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        everywhere = host == ""  # not an address: a host name, or "" (asyncio: every address)
    if not everywhere:
        netloc = f"[{host}]" if ":" in host else host
        return host, port, f"{'https' if tls else 'http'}://{netloc}:{port}"
    where = urlsplit(public_url)
    default_port = 443 if where.scheme == "https" else 80
    return where.hostname or host, where.port or default_port, public_url.rstrip("/")


# What yurt keeps in the data dir, up to a '-' (queue.sqlite3-wal, server-secret, ...).
DATA_DIR_ENTRIES = frozenset(
    ("apps", "files", "keys", "logs", "payloads", "queue.sqlite3", "server", "webhook", "yurt.lock")
)


def _once(step: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``step``, run at its first call only: a stop pushed on an exit stack twice."""
    done = False

    async def run() -> None:
        nonlocal done
        if not done:
            done = True
            await step()

    return run


class Platform:
    """Serves Apps behind one router. ``async with Platform(cfg) as p:``.

    ``server=True`` is ``yurt server``: the admin API deploys apps, which are kept in the data
    dir and served again on the next start. Otherwise (``yurt run``) apps are given to
    ``start`` and the admin API only hands runners their payloads. ``ephemeral=True`` removes
    what the backend made on a cluster when the platform stops (``yurt run --backend nomad``).

    Its parts are made by ``yurt.composition.build_platform``, with the platform as the host
    they call back into; ``start`` starts them on an ``AsyncExitStack`` that ``stop`` unwinds.
    """

    def __init__(
        self, config: ServerConfig, *, server: bool = False, ephemeral: bool = False
    ) -> None:
        self.config = config
        self.server = server
        self.ephemeral = ephemeral
        self.default_owner = config.router.owner
        self._locks: dict[str, asyncio.Lock] = {}
        self._served: dict[str, tuple[str, AppSpec]] = {}  # app id -> (payload sha256, spec)
        self._stack: AsyncExitStack | None = None  # what start() started, stopped by stop()
        self._grace = 5.0
        parts = build_platform(config, self, server=server)
        self.parts = parts
        self.store, self.secrets, self.keys = parts.store, parts.secrets, parts.keys
        self.backend: Backend = parts.backend
        self.discovery: Discovery = parts.discovery
        self.registry, self.nomad, self.consul = parts.registry, parts.nomad, parts.consul
        self.scheduler, self.gate, self.router = parts.scheduler, parts.gate, parts.router
        self.files = parts.files
        self.queue_store, self.webhooks = parts.queue_store, parts.webhooks

    @property
    def url(self) -> str:
        """The router's base URL."""
        return self.router.url

    @property
    def public_url(self) -> str:
        """The base URL runners and clients reach the router at."""
        return self.config.router.public_url or self.router.url

    def payload_token_ok(self, sha256: str, token: str) -> bool:
        """Whether ``token`` is the payload token of ``sha256`` (a runner's credential)."""
        return is_sha256(sha256) and hmac.compare_digest(token, self.store.token(sha256))

    def files_env(self) -> dict[str, str]:
        """What tells a local runner where the file store is (``yurt.files.location``)."""
        return self.files.runner_env(self.public_url)

    def payload_ref(self, app_id: str, header: PayloadHeader) -> PayloadRef:
        """Where a runner on the cluster downloads this payload, and its token."""
        from yurt.backends.nomad.naming import PayloadRef

        return PayloadRef(
            url=f"{self.public_url}/_yurt/api/v1/payloads/{header.sha256}",
            sha256=header.sha256,
            token=self.store.token(header.sha256),
            revision=header.revision,
            env=cluster_env(self.public_url, self.config.files.ttl, header.sha256),
        )

    async def add_app(self, cls: type[App]) -> str:
        """Package ``cls`` and serve it; returns its app id ``owner/app_name``."""
        spec = build_spec(cls)
        header = self.store.put_payload(pack(cls))
        payload = self.store.payloads / f"{header.sha256}.yurt"
        app_id = f"{self.default_owner}/{spec.app_name}"
        if app_id in self.router.routes:
            raise ValueError(f"app {app_id!r} is already served; give one of them another app_name")
        await self._serve(app_id, spec, payload)
        log.info("app_added", app=app_id, revision=header.revision, payload=str(payload))
        return app_id

    async def deploy(self, app_id: str, spec: AppSpec, sha256: str) -> tuple[Deployment, str]:
        """Serve an uploaded payload as the app's current revision (the admin API's deploy).

        Returns the deployment and what happened: ``created``, ``updated`` or ``unchanged``.
        Deploys of one app run one at a time, and the store records a revision only once the
        backend took it, so a deploy that failed half-way is tried again in full, not found
        "unchanged".
        """
        async with self._locks.setdefault(app_id, asyncio.Lock()):
            previous = self.store.get(app_id)
            payload = self.store.payloads / f"{sha256}.yurt"
            if app_id not in self.router.routes:
                await self._serve(app_id, spec, payload)
                outcome = "created" if previous is None else "updated"
            elif self._served.get(app_id) != (sha256, spec):
                await self._roll(app_id, spec, payload)
                outcome = "updated"
            else:
                outcome = "unchanged"
            deployment = self.store.save(app_id, spec, sha256, time.time())
            if isinstance(self.backend, LocalBackend):  # its first runner finds it built
                self.backend.envs.prepare(spec.requirements)
        log.info("app_deployed", app=app_id, revision=deployment.current.revision, outcome=outcome)
        return deployment, outcome

    async def undeploy(self, app_id: str) -> Removal | None:
        """Stop serving a deployed app and forget it (the admin API's undeploy); None when
        this server has no such app.

        In this order: the scheduler stops scaling it; the backend stops its runners (the
        local backend within their grace period; on Nomad the job is stopped and purged);
        the router stops routing it (new requests get 404 ``app_not_found``, requests still
        waiting for a runner, direct or queued, 410 ``app_undeployed``); the store forgets
        it, with the payloads no other app uses. Should the backend fail (Nomad refused or
        did not answer), nothing else has changed: the app is served as before and the
        error (a ``ClusterError``) is raised; the call may be made again.
        """
        async with self._locks.setdefault(app_id, asyncio.Lock()):
            deployment = self.store.get(app_id)
            if deployment is None:
                return None
            spec = self.scheduler.remove_app(app_id)
            try:
                await self.backend.remove_app(app_id)
            except BaseException:
                if spec is not None:
                    self.scheduler.add_app(app_id, spec)
                raise
            failed = self.router.remove_app(app_id)
            if self.consul is not None:
                await self.consul.forget(app_id)
            self._served.pop(app_id, None)
            self.store.forget(app_id)
        log.info("app_undeployed", app=app_id, revision=deployment.current.revision, failed=failed)
        return Removal(deployment, failed)

    async def _serve(self, app_id: str, spec: AppSpec, payload: Path) -> None:
        await self.backend.ensure_app(app_id, spec, payload)
        self.router.add_app(app_id, spec)
        self.scheduler.add_app(app_id, spec)
        self._served[app_id] = (payload.stem, spec)

    async def _roll(self, app_id: str, spec: AppSpec, payload: Path) -> None:
        # Both backends surge: runners of the new revision start beside the old ones, which
        # stop as the new become ready (on Nomad through a surge job: backends/nomad/surge.py).
        await self.backend.ensure_app(app_id, spec, payload)
        self.router.update_app(app_id, spec)
        self.scheduler.add_app(app_id, spec)
        self._served[app_id] = (payload.stem, spec)
        await self.backend.roll(app_id)

    def environment(self, app_id: str, after: int = 0) -> dict[str, Any] | None:
        """The deployed app's environment and its build's events past the first ``after`` (the
        admin API's, which ``yurt deploy`` polls); None when there is no such app."""
        deployment = self.store.get(app_id)
        if deployment is None:
            return None
        if not isinstance(self.backend, LocalBackend):  # built on each node a runner starts on
            return {"digest": None, "state": "on_nodes", "events": [], "seen": 0}
        return self.backend.envs.status(deployment.spec.requirements, after).as_dict()

    def describe_app(self, app_id: str) -> dict[str, Any] | None:
        """The app's load and runners, as ``GET /_yurt/apps`` shows them."""
        return next((a for a in self.router.describe() if a["app_id"] == app_id), None)

    async def start(self, *apps: type[App]) -> list[str]:
        """Start the backend, the scheduler and the router, in that order; returns app ids.

        ``apps`` (and, for a server, what was deployed before) are served before the router
        serves, so that the queue has taken back what a previous router left unfinished before
        anyone asks about it. The router's socket is bound first: runners on a cluster fetch
        their payloads from its URL.
        """
        self._private_data_dir()
        self._stack = AsyncExitStack()
        try:
            return await self._start_parts(self._stack, apps)
        except BaseException:
            await self.stop()  # whatever did start
            raise

    async def _start_parts(self, stack: AsyncExitStack, apps: tuple[type[App], ...]) -> list[str]:
        # Each part's stop is pushed before its start is tried, so that a start that fails
        # half-way is stopped too; the stack unwinds in the reverse order: the router first,
        # then the scheduler, the backend, discovery, and the data dir's lock last.
        router, consul = self.router, self.consul
        router.load_tls()
        if self.server:
            check_exposure(self.config.router.host, self.config.admin_token)
        stack.callback(self._lock_data_dir().close)  # closing the file releases the lock
        self.store.open()
        stack.callback(self.queue_store.close)
        self.queue_store.open()
        self.webhooks.open()  # its key: one that is no key fails the start here
        stack.callback(self._quietly_flush_keys)
        stop_router = _once(lambda: router.stop(self._grace))
        stack.push_async_callback(stop_router)  # should a step below fail: the bound socket
        await router.bind()
        if consul is not None:
            stack.push_async_callback(consul.close)
            await consul.start()
        stack.push_async_callback(self.backend.stop)
        if self.nomad is not None and self.ephemeral:
            stack.push_async_callback(self._quietly, self.nomad.deregister_all)
        await self.backend.start()
        stack.push_async_callback(self.scheduler.stop)
        await self.scheduler.start()
        if self.server:
            for d in self.store.all():
                await self._serve(
                    d.app_id, d.spec, self.store.payloads / f"{d.current.sha256}.yurt"
                )
        app_ids = [await self.add_app(cls) for cls in apps]
        stack.push_async_callback(self.webhooks.stop)
        stack.push_async_callback(self.files.stop)
        stack.push_async_callback(stop_router)
        await router.start()  # with its queue
        await self.files.start()
        await self.webhooks.start()
        if self.server and consul is not None:
            stack.push_async_callback(self._quietly, consul.deregister_router)
            await self._announce()
        return app_ids

    async def _announce(self) -> None:
        # Services find the router through Consul, as they find runners.
        assert self.consul is not None
        name = self.config.consul.router_service
        if name is None:
            return
        router = self.config.router
        tls = router.tls_cert is not None
        host, port, base = instance_address(router.host, self.router.port, tls, self.public_url)
        await self.consul.register_router(
            name,
            host,
            port,
            check_url=f"{base}/_yurt/health",
            interval=self.config.consul.router_check_interval,
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, finish in-flight ones, stop every runner and wait for it.

        On a cluster the runners stay (a restarted server finds them), unless ``ephemeral``.
        """
        stack, self._stack = self._stack, None
        if stack is not None:
            self._grace = grace
            await stack.aclose()

    def _quietly_flush_keys(self) -> None:
        try:
            self.keys.flush_usage()
        except OSError as exc:  # when keys were last used is a convenience: never fail a stop
            log.warning("key_usage_not_kept", error=str(exc))

    @staticmethod
    async def _quietly(step: Callable[[], Awaitable[Any]]) -> None:
        try:
            await step()
        except Exception as exc:  # shutting down: say so, and go on stopping the rest
            log.warning("stop_step_failed", error=str(exc))

    def _lock_data_dir(self) -> IO[str]:
        """The data dir's lock, held until the file is closed.

        Two routers on one queue would run the same requests and send the same webhooks.
        """
        path = self.config.data_dir / "yurt.lock"
        lock = open_private(path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise ConfigError(
                f"the data dir {self.config.data_dir} is in use by {holder}; stop it, or give "
                "this one a data dir of its own (--data-dir or $YURT_DATA_DIR)"
            ) from None
        lock.truncate(0)
        lock.write(f"yurt pid {os.getpid()}\n")
        lock.flush()
        return lock

    def _private_data_dir(self) -> None:
        # Request bodies, results, logs, user code and keys live here: the owner's only. What
        # an older yurt made readable is narrowed; what is made from now on is made private.
        # Only yurt's own entries: the data dir may be a directory that holds other things.
        data_dir = self.config.data_dir
        try:
            private_dir(data_dir)
            for entry in data_dir.iterdir():
                if entry.name.partition("-")[0] in DATA_DIR_ENTRIES:
                    tighten(entry)
            if isinstance(self.backend, LocalBackend):
                private_dir(self.backend.log_dir)  # before the backend makes it with its umask
        except OSError as exc:
            raise ConfigError(
                f"cannot make the data dir {data_dir} private to its owner: "
                f"{exc.strerror or exc}; give a data dir this user owns (--data-dir or "
                "$YURT_DATA_DIR)"
            ) from exc

    async def __aenter__(self) -> Platform:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
