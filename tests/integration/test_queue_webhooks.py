"""Completion webhooks of queued requests, delivered to a real receiver."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from yurt.config import QueueConfig, WebhookConfig
from yurt.webhooks import verify

from queue_apps import Retries
from support import served, wait_until

pytestmark = pytest.mark.timeout(120)

SECRET = "test-webhook-secret"


class Receiver:
    """Answers 500 to the first ``failures`` deliveries, then 200; keeps what it got."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.got: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=500 if len(self.got) <= self.failures else 200)


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


def config() -> QueueConfig:
    return QueueConfig(
        webhooks=WebhookConfig(secret=SECRET, first_delay=0.05, max_delay=0.2),
        webhook_allow=("127.0.0.1",),  # the receiver is on loopback
    )


async def test_webhook_delivered_once_after_two_failures(tmp_path: Path) -> None:
    """Two failed deliveries are retried; the third is accepted, signed, and the last."""
    receiver = Receiver(failures=2)
    async with receiving(receiver) as hook, served(Retries, tmp_path, queue=config()) as app:
        sub = await app.submit(
            json={"journal": str(tmp_path / "j"), "fail_times": 0}, query=f"fal_webhook={hook}"
        )
        await app.completed(sub)
        await wait_until(lambda: len(receiver.got) >= 3, what="three deliveries")
        store = app.platform.queue_store
        await wait_until(lambda: store.next_due() is None, what="the delivery to settle")
        headers, body = receiver.got[-1]
        verify(SECRET, headers, body, hook)
        event: dict[str, Any] = json.loads(body)
        assert event["request_id"] == sub["request_id"] and event["status"] == "OK"
        assert event["payload"]["attempt"] == 1
        # Settled: nothing is due any more, so no fourth delivery can come.
        assert len(receiver.got) == 3


async def test_webhook_reports_an_error(tmp_path: Path) -> None:
    """A request completed with an error is delivered as status ERROR with the error."""
    receiver = Receiver(failures=0)
    async with receiving(receiver) as hook, served(Retries, tmp_path, queue=config()) as app:
        sub = await app.submit(
            json={"journal": str(tmp_path / "j"), "status": 418}, query=f"fal_webhook={hook}"
        )
        await app.completed(sub)
        await wait_until(lambda: receiver.got, what="a delivery")
        headers, body = receiver.got[0]
        verify(SECRET, headers, body, hook)
        event = json.loads(body)
        assert event["status"] == "ERROR" and event["error"] == "asked for 418"
        assert event["payload"] == {"detail": "asked for 418"}


async def test_a_webhook_to_a_loopback_receiver_not_allowed_is_refused_at_submit(
    tmp_path: Path,
) -> None:
    """Without webhook_allow, a submission with a loopback webhook is a 422 naming the rule,
    nothing is queued, and the receiver hears nothing."""
    receiver = Receiver(failures=0)
    queue = QueueConfig(webhooks=WebhookConfig(secret=SECRET, first_delay=0.05))
    async with receiving(receiver) as hook, served(Retries, tmp_path, queue=queue) as app:
        for url in [f"{hook}?token=tok-123", hook.replace("127.0.0.1", "localhost")]:
            submit = f"{app.platform.url}/queue/{app.app_id}?fal_webhook={quote(url)}"
            journal = {"journal": str(tmp_path / "j"), "fail_times": 0}
            async with app.session.post(submit, json=journal) as resp:
                assert resp.status == 422
                assert resp.headers["x-yurt-error-type"] == "webhook_destination_refused"
                body = await resp.json()
            assert body["error_type"] == "webhook_destination_refused"
            assert "rule loopback" in body["detail"] and "webhook_allow" in body["detail"]
            assert "tok-123" not in body["detail"]
        store = app.platform.queue_store
        assert store.next_due() is None
    assert not (tmp_path / "j").exists()  # the endpoint never ran
    assert receiver.got == []
