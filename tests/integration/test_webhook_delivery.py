"""Tests for webhook delivery against a real HTTP receiver: retries, giving up, failures."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
import structlog
from aiohttp import web

from yurt.config import WebhookConfig
from yurt.queue.webhooks import Delivery, WebhookSender
from yurt.webhooks import WebhookVerificationError, verify

from support import wait_until

SECRET = b"test-secret"
# Receivers listen on loopback, which webhooks may reach only when allowed.
LOOPBACK = ("127.0.0.1",)
BODY = b'{"request_id":"r1","gateway_request_id":"r1","status":"OK","payload":{"y":1}}'


@dataclass
class Entry:
    """One delivery in the memory outbox, with what the sender reported about it."""

    delivery: Delivery
    next_at: float | None
    state: str = "pending"
    failures: list[tuple[int, float | None, str]] = field(default_factory=list)


class MemoryOutbox:
    """The WebhookOutbox protocol over a dict, counting how often it is asked."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.next_due_calls = 0

    def add(self, url: str, request_id: str = "r1", body: bytes = BODY) -> int:
        delivery_id = len(self.entries) + 1
        delivery = Delivery(delivery_id, request_id, url, body, attempts=0)
        self.entries[delivery_id] = Entry(delivery, next_at=time.time())
        return delivery_id

    def due(self, now: float, limit: int) -> list[Delivery]:
        pending = [
            e
            for e in self.entries.values()
            if e.state == "pending" and e.next_at is not None and e.next_at <= now
        ]
        pending.sort(key=lambda e: e.next_at or 0.0)
        return [e.delivery for e in pending[:limit]]

    def next_due(self) -> float | None:
        self.next_due_calls += 1
        times = [e.next_at for e in self.entries.values() if e.state == "pending" and e.next_at]
        return min(times, default=None)

    def delivered(self, delivery_id: int) -> None:
        entry = self.entries[delivery_id]
        entry.state, entry.next_at = "delivered", None

    def failed(self, delivery_id: int, attempts: int, next_at: float | None, error: str) -> None:
        entry = self.entries[delivery_id]
        entry.failures.append((attempts, next_at, error))
        entry.delivery = Delivery(
            delivery_id,
            entry.delivery.request_id,
            entry.delivery.url,
            entry.delivery.body,
            attempts,
        )
        entry.next_at = next_at
        if next_at is None:
            entry.state = "given_up"


@dataclass
class Received:
    """What the receiver saw, and the statuses it answers with in turn (then 200)."""

    url: str
    answers: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    raw_paths: list[str] = field(default_factory=list)  # each request's target, as sent
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Received]:
    """A webhook receiver on 127.0.0.1 that records each POST."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state = Received(url=f"http://127.0.0.1:{sock.getsockname()[1]}/hook")

    async def hook(request: web.Request) -> web.StreamResponse:
        state.requests.append((dict(request.headers), await request.read()))
        state.raw_paths.append(request.raw_path)
        if state.hang:
            await state.release.wait()
        status = state.answers.pop(0) if state.answers else 200
        if 300 <= status < 400:
            return web.Response(status=status, headers={"location": "/elsewhere"})
        return web.Response(status=status)

    async def elsewhere(request: web.Request) -> web.Response:
        state.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_route("*", "/elsewhere", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield state
    finally:
        state.release.set()
        await runner.cleanup()
        sock.close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL on a port that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


def config(**overrides: float) -> WebhookConfig:
    """Fast retries; the timeout stays generous for a loaded machine."""
    values: dict[str, float] = {"first_delay": 0.05, "timeout": 10.0}
    values.update(overrides)
    return WebhookConfig.model_validate(values)


async def test_retries_until_the_receiver_accepts(receiver: Received) -> None:
    """Two 500s are retried; the signed third POST is accepted and nothing follows it."""
    receiver.answers = [500, 500, 200]
    outbox = MemoryOutbox()
    delivery_id = outbox.add(receiver.url)
    sender = WebhookSender(outbox, config(), SECRET, allow=LOOPBACK)
    with structlog.testing.capture_logs() as logs:
        await sender.start()
        sender.poke()
        try:
            await wait_until(
                lambda: outbox.entries[delivery_id].state == "delivered", what="a delivery"
            )
        finally:
            await sender.stop()
    assert len(receiver.requests) == 3
    headers, body = receiver.requests[2]
    assert body == BODY
    verify(SECRET, headers, body, receiver.url)
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "yurt-webhooks"
    assert headers["x-yurt-webhook-request-id"] == "r1"
    assert [(a, e) for a, _, e in outbox.entries[delivery_id].failures] == [
        (1, "answered 500"),
        (2, "answered 500"),
    ]
    events = [(e["event"], e.get("attempt", e.get("attempts"))) for e in logs]
    assert events == [("webhook_failed", 1), ("webhook_failed", 2), ("webhook_delivered", 3)]


async def test_gives_up_after_max_attempts(receiver: Received) -> None:
    """A receiver that always fails gets max_attempts POSTs, then the delivery is given up."""
    receiver.answers = [500] * 10
    outbox = MemoryOutbox()
    delivery_id = outbox.add(receiver.url)
    with structlog.testing.capture_logs() as logs:
        async with WebhookSender(outbox, config(max_attempts=3), SECRET, allow=LOOPBACK) as sender:
            sender.poke()
            await wait_until(
                lambda: outbox.entries[delivery_id].state == "given_up", what="giving up"
            )
    assert len(receiver.requests) == 3
    failures = outbox.entries[delivery_id].failures
    assert [attempts for attempts, _, _ in failures] == [1, 2, 3]
    assert [next_at is None for _, next_at, _ in failures] == [False, False, True]
    given_up = [e for e in logs if e["event"] == "webhook_given_up"]
    assert given_up == [
        {
            "event": "webhook_given_up",
            "log_level": "error",
            "request_id": "r1",
            "url": receiver.url,
            "attempts": 3,
            "error": "answered 500",
        }
    ]


async def test_connection_refused_counts_as_a_failure(refused_url: str) -> None:
    """A refused connection is a failed attempt, retried after the first delay."""
    outbox = MemoryOutbox()
    delivery_id = outbox.add(refused_url)
    async with WebhookSender(outbox, config(first_delay=60.0), SECRET, allow=LOOPBACK) as sender:
        sender.poke()
        before = time.time()
        await wait_until(lambda: outbox.entries[delivery_id].failures, what="a failure")
    [(attempts, next_at, error)] = outbox.entries[delivery_id].failures
    assert attempts == 1
    assert next_at is not None
    assert next_at - before >= 59.0
    assert "ClientConnectorError" in error


async def test_a_slow_receiver_times_out(receiver: Received) -> None:
    """A receiver that does not answer within the timeout costs an attempt."""
    receiver.hang = True
    outbox = MemoryOutbox()
    delivery_id = outbox.add(receiver.url)
    async with WebhookSender(
        outbox, config(timeout=0.2, first_delay=60.0), SECRET, allow=LOOPBACK
    ) as sender:
        sender.poke()
        await wait_until(lambda: outbox.entries[delivery_id].failures, what="a failure")
    [(attempts, _, error)] = outbox.entries[delivery_id].failures
    assert (attempts, error) == (1, "no answer within 0.2 s")


async def test_redirects_are_not_followed(receiver: Received) -> None:
    """A 3xx answer is a failure; the Location it names is not posted to."""
    receiver.answers = [307]
    outbox = MemoryOutbox()
    delivery_id = outbox.add(receiver.url)
    async with WebhookSender(outbox, config(first_delay=60.0), SECRET, allow=LOOPBACK) as sender:
        sender.poke()
        await wait_until(lambda: outbox.entries[delivery_id].failures, what="a failure")
    [(_, _, error)] = outbox.entries[delivery_id].failures
    assert error == "answered 307 (redirects are not followed)"
    assert len(receiver.requests) == 1


async def test_poke_wakes_an_idle_sender(receiver: Received) -> None:
    """A delivery added to an empty outbox goes out on poke, not at the next minute's look."""
    outbox = MemoryOutbox()
    async with WebhookSender(outbox, config(), SECRET, allow=LOOPBACK) as sender:
        await wait_until(lambda: outbox.next_due_calls >= 1, what="the sender to go idle")
        delivery_id = outbox.add(receiver.url)
        sender.poke()
        # Well under the 60 s an idle sender would otherwise sleep.
        await wait_until(
            lambda: outbox.entries[delivery_id].state == "delivered", timeout=30.0, what="delivery"
        )
    assert len(receiver.requests) == 1


async def test_deliveries_are_independent(receiver: Received) -> None:
    """Several deliveries, for one request or several, are each delivered once."""
    outbox = MemoryOutbox()
    ids = [outbox.add(receiver.url, request_id=rid) for rid in ["r1", "r1", "r2"]]
    async with WebhookSender(outbox, config(), SECRET, allow=LOOPBACK) as sender:
        sender.poke()
        await wait_until(
            lambda: all(outbox.entries[i].state == "delivered" for i in ids), what="deliveries"
        )
    assert sorted(h["x-yurt-webhook-request-id"] for h, _ in receiver.requests) == [
        "r1",
        "r1",
        "r2",
    ]


async def test_stop_leaves_a_delivery_in_flight_pending(receiver: Received) -> None:
    """A delivery cut off by stop's grace is neither delivered nor failed: it is tried again."""
    receiver.hang = True
    outbox = MemoryOutbox()
    delivery_id = outbox.add(receiver.url)
    sender = WebhookSender(outbox, config(), SECRET, allow=LOOPBACK)
    await sender.start()
    try:
        sender.poke()
        await wait_until(lambda: receiver.requests, what="the POST to arrive")
    finally:
        await sender.stop(grace=0.1)
    entry = outbox.entries[delivery_id]
    assert (entry.state, entry.failures) == ("pending", [])


class ForgetfulOutbox(MemoryOutbox):
    """An outbox whose settlements are lost (as with a transaction on a full disk)."""

    def delivered(self, delivery_id: int) -> None:
        pass

    def failed(self, delivery_id: int, attempts: int, next_at: float | None, error: str) -> None:
        self.entries[delivery_id].failures.append((attempts, next_at, error))


async def test_a_settlement_the_outbox_lost_is_not_sent_again_at_once(
    receiver: Received,
) -> None:
    """A delivery whose 'delivered' write was lost stays due in the outbox; the sender does not
    post it again and again meanwhile."""
    outbox = ForgetfulOutbox()
    outbox.add(receiver.url)
    async with WebhookSender(outbox, config(), SECRET, allow=LOOPBACK):
        await wait_until(lambda: len(receiver.requests) == 1, what="the delivery")
        # The loop keeps looking at the outbox (every RECHECK) and sees it due each time.
        calls = outbox.next_due_calls
        await wait_until(lambda: outbox.next_due_calls >= calls + 3, what="a few more looks")
    assert len(receiver.requests) == 1


class RolledBackOutbox(MemoryOutbox):
    """Shows a settlement at once (as a connection sees its own uncommitted write), then loses
    it when the test rolls back."""

    def __init__(self) -> None:
        super().__init__()
        self.uncommitted: set[int] = set()

    def delivered(self, delivery_id: int) -> None:
        self.uncommitted.add(delivery_id)

    def due(self, now: float, limit: int) -> list[Delivery]:
        return [d for d in super().due(now, limit) if d.id not in self.uncommitted]

    def roll_back(self) -> None:
        self.uncommitted.clear()


async def test_a_settlement_rolled_back_after_it_was_seen_is_not_sent_again(
    receiver: Received,
) -> None:
    """The outbox hid the delivered row, then lost it: the sender still holds it."""
    outbox = RolledBackOutbox()
    outbox.add(receiver.url)
    async with WebhookSender(outbox, config(), SECRET, allow=LOOPBACK):
        await wait_until(lambda: len(receiver.requests) == 1, what="the delivery")
        calls = outbox.next_due_calls
        await wait_until(lambda: outbox.next_due_calls >= calls + 2, what="looks past the write")
        outbox.roll_back()
        calls = outbox.next_due_calls
        await wait_until(lambda: outbox.next_due_calls >= calls + 3, what="a few more looks")
    assert len(receiver.requests) == 1


async def test_a_loopback_receiver_not_allowed_receives_nothing(receiver: Received) -> None:
    """Without webhook_allow a loopback destination is refused: no POST, given up at once."""
    outbox = MemoryOutbox()
    delivery_id = outbox.add(receiver.url)
    with structlog.testing.capture_logs() as logs:
        async with WebhookSender(outbox, config(), SECRET) as sender:
            sender.poke()
            await wait_until(
                lambda: outbox.entries[delivery_id].state == "given_up", what="the refusal"
            )
    [(attempts, next_at, error)] = outbox.entries[delivery_id].failures
    assert (attempts, next_at) == (1, None)
    assert "rule loopback" in error and "webhook_allow" in error
    assert receiver.requests == []
    [refused] = [e for e in logs if e["event"] == "webhook_refused"]
    assert (refused["rule"], refused["address"]) == ("loopback", "127.0.0.1")


async def test_a_name_that_resolves_to_loopback_is_refused_at_connect(receiver: Received) -> None:
    """A host name is checked on the addresses it resolves to: localhost is loopback."""
    outbox = MemoryOutbox()
    delivery_id = outbox.add(receiver.url.replace("127.0.0.1", "localhost"))
    async with WebhookSender(outbox, config(), SECRET, allow=["127.0.0.2/32"]) as sender:
        sender.poke()
        await wait_until(
            lambda: outbox.entries[delivery_id].state == "given_up", what="the refusal"
        )
    [(_, next_at, error)] = outbox.entries[delivery_id].failures
    assert next_at is None and "localhost" in error and "rule loopback" in error
    assert receiver.requests == []


async def test_an_allowed_name_is_reached_at_its_checked_address(receiver: Received) -> None:
    """A host name in webhook_allow is delivered to, with the URL's host in the Host header."""
    outbox = MemoryOutbox()
    url = receiver.url.replace("127.0.0.1", "localhost")
    delivery_id = outbox.add(url)
    async with WebhookSender(outbox, config(), SECRET, allow=["localhost"]) as sender:
        sender.poke()
        await wait_until(
            lambda: outbox.entries[delivery_id].state == "delivered", what="the delivery"
        )
    [(headers, body)] = receiver.requests
    assert headers["Host"] == url.split("/")[2]
    verify(SECRET, headers, body, url)


async def test_a_delivery_does_not_verify_at_another_receiver(receiver: Received) -> None:
    """A delivery captured at one receiver fails verification at any other URL."""
    outbox = MemoryOutbox()
    delivery_id = outbox.add(receiver.url)
    async with WebhookSender(outbox, config(), SECRET, allow=LOOPBACK) as sender:
        sender.poke()
        await wait_until(lambda: outbox.entries[delivery_id].state == "delivered", what="it")
    [(headers, body)] = receiver.requests
    verify(SECRET, headers, body, receiver.url)
    with pytest.raises(WebhookVerificationError, match="another URL"):
        verify(SECRET, headers, body, "https://other-receiver.example/hook")


async def test_credentials_in_a_webhook_url_are_logged_redacted(receiver: Received) -> None:
    """User info and token-like query values never reach a log line; the URL still works."""
    receiver.answers = [500, 200]
    port = receiver.url.split(":")[2].split("/")[0]
    url = f"http://alice:hunter2@127.0.0.1:{port}/hook?token=tok-123&sig=sig-456&job=7"
    outbox = MemoryOutbox()
    delivery_id = outbox.add(url)
    with structlog.testing.capture_logs() as logs:
        async with WebhookSender(outbox, config(), SECRET, allow=LOOPBACK) as sender:
            sender.poke()
            await wait_until(lambda: outbox.entries[delivery_id].state == "delivered", what="it")
    assert [e["event"] for e in logs] == ["webhook_failed", "webhook_delivered"]
    for secret in ["hunter2", "alice", "tok-123", "sig-456"]:
        assert secret not in repr(logs)
    assert logs[1]["url"] == f"http://***@127.0.0.1:{port}/hook?token=***&sig=***&job=7"
    headers, body = receiver.requests[1]
    verify(SECRET, headers, body, url)


@pytest.mark.parametrize(
    "target",
    ["/hook?q=a%2Fb", "/hook?q=a b", "/hook?q=%7e&r=%7E", "/hook?q=caf%C3%A9"],
)
async def test_a_delivery_verifies_at_the_target_it_was_sent_to(
    receiver: Received, target: str
) -> None:
    """What reaches the receiver is the URL that was signed, whatever encoding it was given in."""
    base = receiver.url.removesuffix("/hook")
    outbox = MemoryOutbox()
    delivery_id = outbox.add(base + target)
    async with WebhookSender(outbox, config(), SECRET, allow=LOOPBACK) as sender:
        sender.poke()
        await wait_until(lambda: outbox.entries[delivery_id].state == "delivered", what="it")
    [(headers, body)] = receiver.requests
    verify(SECRET, headers, body, base + receiver.raw_paths[0])
    verify(SECRET, headers, body, base + target)
