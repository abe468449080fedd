"""The embedded platform: router, scheduler and local backend wired together in one process."""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import TextIO

import structlog

from yurt.app import App
from yurt.backends.local import LocalBackend
from yurt.config import ServerConfig
from yurt.discovery.local import LocalRegistry
from yurt.errors import ConfigError
from yurt.packaging import write_payload
from yurt.queue.api import QueueApi
from yurt.queue.engine import QueueEngine
from yurt.queue.store import QueueStore
from yurt.queue.webhooks import WebhookSender
from yurt.router.server import Router
from yurt.scheduler.loop import Scheduler
from yurt.spec import build_spec

log = structlog.get_logger("yurt.platform")


class Platform:
    """Serves Apps on local runners behind one router. ``async with Platform(cfg) as p:``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.registry = LocalRegistry()
        self.backend = LocalBackend(config.local, self.registry, config.data_dir / "logs")
        self.scheduler = Scheduler(self.backend, config.scheduler)
        self.router = Router(config.router, self.registry, self.backend, self.scheduler)
        self.store: QueueStore | None = None
        self._lock: TextIO | None = None
        self.webhooks: WebhookSender | None = None

    @property
    def url(self) -> str:
        """The router's base URL."""
        return self.router.url

    async def add_app(self, cls: type[App]) -> str:
        """Package ``cls`` and serve it; returns its app id ``owner/app_name``."""
        spec = build_spec(cls)
        header, payload = write_payload(cls, self.config.data_dir / "payloads")
        app_id = f"{self.config.router.owner}/{spec.app_name}"
        if app_id in self.router.routes:
            raise ValueError(f"app {app_id!r} is already served; give one of them another app_name")
        await self.backend.ensure_app(app_id, spec, Path(payload))
        self.router.add_app(app_id, spec)
        self.scheduler.add_app(app_id, spec)
        log.info("app_added", app=app_id, revision=header.revision, payload=str(payload))
        return app_id

    async def start(self, *apps: type[App]) -> list[str]:
        """Start the backend, the scheduler and the router, in that order; returns app ids.

        ``apps`` are served before the router listens, so that the queue has taken back what
        a previous router left unfinished before anyone asks about it.
        """
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.router.load_tls()
            self._lock_data_dir()
            self._open_queue()
            await self.backend.start()
            await self.scheduler.start()
            app_ids = [await self.add_app(cls) for cls in apps]
            await self.router.start()
            if self.router.queue is not None:
                self.router.queue.start()
            if self.webhooks is not None:
                await self.webhooks.start()
        except BaseException:
            await self.stop()  # whatever did start
            raise
        return app_ids

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, finish in-flight ones, stop every runner and wait for it."""
        await self.router.stop(grace)
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.scheduler.stop()
        await self.backend.stop()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def _lock_data_dir(self) -> None:
        # Two routers on one queue would run the same requests and send the same webhooks.
        path = self.config.data_dir / "yurt.lock"
        lock = path.open("a+")
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
        self._lock = lock

    def _open_queue(self) -> None:
        cfg = self.config.queue
        self.store = QueueStore(self.config.data_dir / "queue.sqlite3", cfg.durability)
        self.webhooks = WebhookSender(self.store, cfg.webhooks, self.webhook_secret())
        engine = QueueEngine(self.store, cfg, self.router, self.webhooks)
        self.router.attach_queue(engine, QueueApi(self.router, engine))

    def webhook_secret(self) -> bytes:
        """The key webhooks are signed with: configured, else made once and kept in the data dir."""
        if self.config.queue.webhooks.secret is not None:
            return self.config.queue.webhooks.secret.encode()
        path = self.config.data_dir / "webhook-secret"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

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
