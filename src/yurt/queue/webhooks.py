"""Durable delivery of completion webhooks: an outbox in the store, bounded retries here.

The store keeps every delivery until it is delivered or given up, so a restarted router resumes
them: delivery is at least once (a receiver that answered but whose answer was lost sees the same
request again). The sender only acts; when to retry is the pure :func:`backoff`. A destination
the :class:`~yurt.queue.destinations.DestinationPolicy` refuses is given up at once, and never
connected to. Logs show webhook URLs redacted (:func:`~yurt.queue.destinations.redact_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import aiohttp
import structlog
import yarl

from yurt.backoff import capped_backoff
from yurt.config import WebhookConfig
from yurt.privatefs import load_secret
from yurt.queue.destinations import (
    CheckedResolver,
    DestinationPolicy,
    DestinationRefused,
    Refusal,
    redact_url,
)
from yurt.webhooks import WebhookVerificationError, canonical_url, signed_headers

log = structlog.get_logger("yurt.webhooks")

CONCURRENCY = 16
# Longest sleep without a look at the outbox, so a changed wall clock is noticed.
MAX_WAIT = 60.0
# While deliveries are in flight the outbox cannot say when the next *other* one is due (the
# ones in flight are still pending and due); look again this often, or when one finishes.
RECHECK = 1.0
# Seconds after which an outbox that no longer lists a settled delivery has surely committed it.
SETTLE_GRACE = 30.0
USER_AGENT = "yurt-webhooks"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One pending webhook POST; ``attempts`` counts the tries already made."""

    id: int
    request_id: str
    url: str
    body: bytes
    attempts: int


class WebhookOutbox(Protocol):
    """Where deliveries wait; synchronous (the queue's SQLite store, on the event loop)."""

    def due(self, now: float, limit: int) -> list[Delivery]:
        """Up to ``limit`` pending deliveries due at ``now`` (wall-clock s), earliest first."""
        ...

    def next_due(self) -> float | None:
        """The earliest due time of the pending deliveries; None when there are none."""
        ...

    def delivered(self, delivery_id: int) -> None:
        """The receiver accepted the delivery."""
        ...

    def failed(self, delivery_id: int, attempts: int, next_at: float | None, error: str) -> None:
        """A try failed; retry at ``next_at``, or never when it is None (given up)."""
        ...


def backoff(attempts_made: int, config: WebhookConfig) -> float:
    """Seconds before the next try: ``first_delay`` doubling per try, up to ``max_delay``."""
    return capped_backoff(attempts_made, first=config.first_delay, cap=config.max_delay)


def wire_url(url: str) -> yarl.URL:
    """The URL a delivery is POSTed to: exactly the one it is signed for.

    Left to itself, yarl re-encodes a URL on the way out (``%2F`` -> ``/``, a space -> ``+``,
    dot segments removed), and the receiver would verify other bytes than were signed. So the
    signed form, :func:`canonical_url`, is sent as it is (``encoded=True``), with the URL's
    user info, which the signature leaves out, put back for the receiver's own auth.
    """
    target = yarl.URL(canonical_url(url), encoded=True)
    given = yarl.URL(url)
    if given.raw_user is not None:
        target = target.with_user(given.user).with_password(given.password)
    return target


class WebhookSender:
    """Posts due deliveries from ``outbox``, signed with ``secret``, until each is settled.

    ``async with WebhookSender(outbox, config, secret, allow=...):`` or ``start()`` /
    ``stop()``; call :meth:`poke` after adding a delivery to the outbox. ``allow`` is
    ``[queue] webhook_allow``: the destinations allowed although not public. ``secret`` is the
    key, or the file that keeps it, read (and made, ``load_secret``) by ``open``, once the
    server has made its data dir private and locked it.
    """

    def __init__(
        self,
        outbox: WebhookOutbox,
        config: WebhookConfig,
        secret: bytes | Path,
        clock: Callable[[], float] = time.time,
        *,
        allow: Iterable[str] = (),
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.destinations = DestinationPolicy(allow)
        self._key = secret
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        # What this sender settled, until the outbox shows it (a write can be lost with its
        # transaction on a full disk): delivered ones are not sent again, failed ones not
        # before their retry time. Id -> (not before, settled at).
        self._held: dict[int, tuple[float, float]] = {}

    def open(self) -> None:
        """Read (or make) the key now, so that a key file that is no key fails the start."""
        if isinstance(self._key, Path):
            self._key = load_secret(self._key)

    async def start(self) -> None:
        """Open the HTTP session and start delivering (the key read first, if not yet)."""
        self.open()
        # No DNS cache: each new connection resolves once, and connects to what was checked.
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(self.destinations), use_dns_cache=False
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.config.timeout)
        )
        self._task = asyncio.create_task(self._run(), name="yurt-webhooks")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking deliveries, let those in flight finish for ``grace`` s, close the session.

        A delivery cut off by the grace stays pending in the outbox and is tried again after a
        restart.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        in_flight = list(self._in_flight.values())
        if in_flight:
            _, pending = await asyncio.wait(in_flight, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def poke(self) -> None:
        """A delivery was added: look at the outbox now instead of at the next due time."""
        self._wake.set()

    async def __aenter__(self) -> WebhookSender:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            # Cleared before reading the outbox: a poke from here on wakes the next wait.
            self._wake.clear()
            try:
                self._dispatch_due()
                timeout = self._wait_time()
            except Exception:
                log.exception("webhook_outbox_error")
                timeout = RECHECK
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as
            # the event is set, and stop() would then wait out a whole sleep.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _dispatch_due(self) -> None:
        room = CONCURRENCY - len(self._in_flight)
        if room <= 0:
            return
        # Those in flight or held are still pending and due: ask for enough rows to see past them.
        now = self._clock()
        due = self.outbox.due(now, len(self._in_flight) + len(self._held) + room)
        # A settlement the outbox no longer lists as due is stored, once its write had time to
        # be committed (the outbox may show an uncommitted write that is then lost).
        listed = {d.id for d in due}
        settled_before = now - SETTLE_GRACE
        self._held = {k: v for k, v in self._held.items() if k in listed or v[1] > settled_before}
        for delivery in due:
            if room == 0:
                break
            held = self._held.get(delivery.id)
            if delivery.id in self._in_flight or (held is not None and held[0] > now):
                continue
            task = asyncio.create_task(self._deliver(delivery), name=f"yurt-webhook-{delivery.id}")
            self._in_flight[delivery.id] = task
            task.add_done_callback(functools.partial(self._settled, delivery.id))
            room -= 1

    def _wait_time(self) -> float:
        if len(self._in_flight) >= CONCURRENCY:
            return MAX_WAIT  # a finishing delivery wakes the loop
        next_at = self.outbox.next_due()
        if next_at is None:
            return MAX_WAIT
        delay = next_at - self._clock()
        if delay <= 0 and (self._in_flight or self._held):
            return RECHECK  # what is due is in flight or held: look again soon, do not spin
        return min(max(delay, 0.0), MAX_WAIT)

    def _settled(self, delivery_id: int, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("webhook_outbox_error", delivery=delivery_id, exc_info=exc)

    async def _deliver(self, delivery: Delivery) -> None:
        assert self._session is not None, "WebhookSender.start() first"
        assert isinstance(self._key, bytes)  # start() read it
        attempt = delivery.attempts + 1
        url = redact_url(delivery.url)
        refusal = self.destinations.check_literal(delivery.url)
        if refusal is not None:
            self._refused(delivery, attempt, refusal)
            return
        try:
            signed = signed_headers(
                self._key, delivery.request_id, delivery.url, delivery.body, self._clock()
            )
        except WebhookVerificationError as exc:  # a URL no receiver could verify against
            self._give_up(delivery, attempt, str(exc).replace(delivery.url, url))
            return
        headers = {"content-type": "application/json", "user-agent": USER_AGENT, **signed}
        try:
            async with self._session.post(
                wire_url(delivery.url), data=delivery.body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
        except DestinationRefused as exc:
            self._refused(delivery, attempt, exc.refusal)
            return
        except TimeoutError:
            error = f"no answer within {self.config.timeout:g} s"
        # Whatever else stops a POST (a refused connection, a malformed URL) costs one of the
        # bounded attempts, so that no delivery is retried without end.
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}".replace(delivery.url, url)
        else:
            if 200 <= status < 300:
                self._held[delivery.id] = (float("inf"), self._clock())
                self.outbox.delivered(delivery.id)
                log.info(
                    "webhook_delivered",
                    request_id=delivery.request_id,
                    url=url,
                    attempts=attempt,
                    status=status,
                )
                return
            error = f"answered {status}" + (
                " (redirects are not followed)" if 300 <= status < 400 else ""
            )
        self._failed(delivery, attempt, error)

    def _refused(self, delivery: Delivery, attempt: int, refusal: Refusal) -> None:
        """The destination is refused: given up now, since trying again would be refused too."""
        self._settle_failed(delivery, attempt, None, refusal.message())
        log.error(
            "webhook_refused",
            request_id=delivery.request_id,
            url=redact_url(delivery.url),
            rule=refusal.rule,
            address=refusal.address,
        )

    def _give_up(self, delivery: Delivery, attempt: int, error: str) -> None:
        self._settle_failed(delivery, attempt, None, error)
        log.error(
            "webhook_given_up",
            request_id=delivery.request_id,
            url=redact_url(delivery.url),
            attempts=attempt,
            error=error,
        )

    def _settle_failed(
        self, delivery: Delivery, attempt: int, next_at: float | None, error: str
    ) -> None:
        self._held[delivery.id] = (float("inf") if next_at is None else next_at, self._clock())
        self.outbox.failed(delivery.id, attempt, next_at, error)

    def _failed(self, delivery: Delivery, attempt: int, error: str) -> None:
        if attempt >= self.config.max_attempts:
            self._give_up(delivery, attempt, error)
            return
        retry_in = backoff(attempt, self.config)
        self._settle_failed(delivery, attempt, self._clock() + retry_in, error)
        log.warning(
            "webhook_failed",
            request_id=delivery.request_id,
            url=redact_url(delivery.url),
            attempt=attempt,
            error=error,
            retry_in=retry_in,
        )
