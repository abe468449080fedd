"""What the queue asks of a runner besides the request itself: logs, cancellation, hints."""

from __future__ import annotations

import json
from typing import Any

import structlog

from yurt.router.dispatch import Slot
from yurt.router.pool import UpstreamError

log = structlog.get_logger("yurt.queue")


def note_hints(slot: Slot, header: bytes | None) -> None:
    """Keep what the runner's ``x-yurt-runner-hints`` says."""
    if header is None:  # no hints (most apps have none)
        if slot.hints:
            slot.hints = frozenset()
        return
    hints = frozenset(h for h in (header or b"").decode("latin-1").split(",") if h)
    if hints != slot.hints:
        slot.hints = hints


async def fetch_logs(slot: Slot, request_id: str, *, forget: bool) -> list[dict[str, Any]]:
    """What the request printed and logged on the runner; ``forget`` once it has completed."""
    target = f"/_yurt/requests/{request_id}/logs" + ("?forget=1" if forget else "")
    try:
        reply = await slot.pool.request(b"GET", target.encode(), [], b"", timeout=10)
        entries = json.loads(reply.body) if reply.status == 200 else []
    except (UpstreamError, ValueError, RecursionError) as exc:
        if forget:
            log.warning("queue_logs_lost", request_id=request_id, error=str(exc))
        return []
    return entries if isinstance(entries, list) else []


async def signal_cancel(slot: Slot, endpoint: str, request_id: str) -> None:
    """Tell the runner serving ``request_id`` to cancel it (``POST {endpoint}/cancel``)."""
    path = endpoint.rstrip("/") + "/cancel"
    try:
        reply = await slot.pool.request(
            b"POST", path.encode(), [(b"x-fal-request-id", request_id.encode())], b"", timeout=10
        )
    except UpstreamError as exc:
        log.warning("queue_cancel_not_delivered", request_id=request_id, error=str(exc))
        return
    log.info(
        "queue_cancel_signalled", request_id=request_id, runner=slot.runner_id, status=reply.status
    )
