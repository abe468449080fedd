"""How the platform's parts are made: each with every collaborator it needs, in one place.

``build_platform`` is the graph (``docs/architecture.md`` draws it). Its order follows the
dependencies: the stores, then the backend and its discovery, then the files and admin routes,
the queue's parts, the router, and last the scheduler, which reads the router's load. The
router and the scheduler meet through a ``Wakeup`` made before both (the router pokes it, the
scheduler waits on it); the router and the queue's engine, which need each other, meet as the
router makes the engine from the queue's parts it is given (``yurt.queue.parts``). So no part
is handed another after the fact. What the parts call back into (the payload a runner on a
cluster downloads, the file store's address, the deploys the admin API drives) is the platform
itself, the ``Host``.

Nothing is opened here: starting and stopping is the platform's, on an ``AsyncExitStack``
(``yurt.platform``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from yurt.admin.api import AdminApi, Deployer
from yurt.admin.secrets import LocalSecrets, SecretStore
from yurt.admin.store import AppStore
from yurt.backends.base import Backend, Discovery
from yurt.backends.local import LocalBackend
from yurt.config import ServerConfig
from yurt.discovery.local import LocalRegistry
from yurt.envs import Environments
from yurt.files.http import FilesApi, build_files_api
from yurt.keys import KeyStore
from yurt.packaging import PayloadHeader
from yurt.queue.parts import QueueParts
from yurt.queue.store import QueueStore
from yurt.queue.webhooks import WebhookSender
from yurt.router.gate import Gate
from yurt.router.server import Router
from yurt.scheduler.loop import Scheduler, Wakeup

if TYPE_CHECKING:
    from yurt.backends.nomad.backend import NomadBackend
    from yurt.backends.nomad.naming import PayloadRef
    from yurt.discovery.consul import ConsulDiscovery


class Host(Deployer, Protocol):
    """What the parts call back into: the platform that owns them."""

    def payload_token_ok(self, sha256: str, token: str) -> bool:
        """Whether ``token`` is the payload token of ``sha256`` (a runner's credential)."""
        ...

    def files_env(self) -> dict[str, str]:
        """What tells a local runner where the file store is."""
        ...

    def payload_ref(self, app_id: str, header: PayloadHeader) -> PayloadRef:
        """Where a runner on the cluster downloads this payload, and its token."""
        ...


@dataclass(frozen=True, slots=True)
class Parts:
    """Every part of one platform, wired."""

    store: AppStore
    secrets: SecretStore
    keys: KeyStore
    backend: Backend
    discovery: Discovery
    wake: Wakeup
    gate: Gate
    files: FilesApi
    admin: AdminApi
    queue_store: QueueStore
    webhooks: WebhookSender
    router: Router
    scheduler: Scheduler
    registry: LocalRegistry | None = None  # the local backend's discovery
    nomad: NomadBackend | None = None
    consul: ConsulDiscovery | None = None


@dataclass(frozen=True, slots=True)
class _Placement:
    backend: Backend
    discovery: Discovery
    registry: LocalRegistry | None = None
    nomad: NomadBackend | None = None
    consul: ConsulDiscovery | None = None


def build_platform(config: ServerConfig, host: Host, *, server: bool = False) -> Parts:
    """Every part of the platform ``config`` describes, each made with its collaborators.

    Nothing here does I/O: the data dir is made private, locked and read when the platform
    starts. ``server``: the admin API takes deploys (``yurt server``); otherwise it only hands
    runners their payloads (``yurt run``).
    """
    data_dir = config.data_dir
    store = AppStore(data_dir, data_dir / "server-secret")
    secrets = SecretStore(data_dir)
    keys = KeyStore(data_dir, refresh=config.keys.refresh)
    placed = _place(config, store, secrets, host)
    wake = Wakeup()
    gate = _gate(config, keys)
    files = build_files_api(data_dir, config.files, config.router, keys, host.payload_token_ok)
    admin = AdminApi(
        host,
        admin_token=config.admin_token,
        public_url=config.router.public_url,
        limit=config.max_payload_size,
        deploys=server,
        # On Nomad, Nomad Variables keep them (``yurt.backends.nomad.secrets``).
        secrets=placed.nomad.secrets if placed.nomad is not None else LocalSecrets(secrets),
        keys=keys,
    )
    queue_store, webhooks = _queue(config)
    queue = QueueParts(queue_store, config.queue, webhooks, quotas=gate.quotas)
    router = Router(
        config.router,
        placed.discovery,
        placed.backend,
        wake,
        gate,
        admin=admin,
        files=files,
        queue=queue,
    )
    scheduler = Scheduler(placed.backend, config.scheduler, source=router, wake=wake)
    return Parts(
        store=store,
        secrets=secrets,
        keys=keys,
        backend=placed.backend,
        discovery=placed.discovery,
        wake=wake,
        gate=gate,
        files=files,
        admin=admin,
        queue_store=queue_store,
        webhooks=webhooks,
        router=router,
        scheduler=scheduler,
        registry=placed.registry,
        nomad=placed.nomad,
        consul=placed.consul,
    )


def _webhook_key(config: ServerConfig) -> bytes | Path:
    """The key webhooks are signed with: configured, else the file in the data dir that keeps
    the one made at the first start."""
    if config.queue.webhooks.secret is not None:
        return config.queue.webhooks.secret.encode()
    return config.data_dir / "webhook-secret"


def _gate(config: ServerConfig, keys: KeyStore) -> Gate:
    """Who may call what: keys, the admin token, and whether the router is public."""
    router = config.router
    return Gate(
        keys, config.keys, host=router.host, public=router.public, admin_token=config.admin_token
    )


def _queue(config: ServerConfig) -> tuple[QueueStore, WebhookSender]:
    """The queue's store (opened on start) and its webhook sender."""
    store = QueueStore(config.data_dir / "queue.sqlite3", config.queue.durability)
    webhooks = WebhookSender(
        store, config.queue.webhooks, _webhook_key(config), allow=config.queue.webhook_allow
    )
    return store, webhooks


def _place(config: ServerConfig, store: AppStore, secrets: SecretStore, host: Host) -> _Placement:
    """The backend that runs runners and the discovery that finds them."""
    if config.backend == "nomad":
        return _place_on_nomad(config, store, host)
    registry = LocalRegistry()
    backend = LocalBackend(
        config.local,
        registry,
        config.data_dir / "logs",
        machines=config.machine_overrides(),
        app_data=config.data_dir / "appdata",
        secrets=secrets.values,
        envs=Environments(config.data_dir / "envs", config.envs, config.local.python),
        files=host.files_env,
    )
    return _Placement(backend, registry, registry=registry)


def _place_on_nomad(config: ServerConfig, store: AppStore, host: Host) -> _Placement:
    from yurt.backends.nomad.backend import NomadBackend
    from yurt.discovery.consul import ConsulDiscovery

    nomad = config.nomad
    consul = ConsulDiscovery(
        config.consul,
        nomad.job_prefix,
        datacenter=nomad.datacenter(),
        runner_token=store.runner_token,
    )
    backend = NomadBackend(
        nomad,
        host.payload_ref,
        history=consul,
        machines=config.machine_overrides(),
        datacenter=consul.agent_datacenter,
        envs=config.envs,
        runner_token=store.runner_token,
    )
    return _Placement(backend, consul, nomad=backend, consul=consul)
