"""What ``GET /_yurt/apps`` (and ``yurt`` tools reading it) shows of each routed app: its
target, its load, its queue and its runners, as the backend lists them and the router routes
them. Read from what the router and the backend hold; nothing here waits or changes anything.
"""

from __future__ import annotations

from collections.abc import Mapping

from yurt.backends.base import Backend, RunnerView
from yurt.router.dispatch import AppRoute, Slot
from yurt.router.queueing import QueueEngine


def describe_apps(
    routes: Mapping[str, AppRoute], backend: Backend, queue: QueueEngine | None, now: float
) -> list[dict[str, object]]:
    """Each app's entry; ``now`` is ``time.monotonic()``, which runners' ages count from."""
    out: list[dict[str, object]] = []
    for app_id, route in routes.items():
        depth = queue.depth(app_id) if queue is not None else None
        runners = [
            _runner(view, route.slots.get(view.runner_id), now) for view in backend.runners(app_id)
        ]
        load = route.load()
        unplaced = backend.unplaced(app_id)
        out.append(
            {
                "app_id": app_id,
                "target": backend.target(app_id),
                "unplaced": unplaced.detail if unplaced is not None else None,
                "waiting": load.waiting,
                "queued": depth[0] if depth is not None else 0,
                "in_flight": load.in_flight,
                "paths": sorted(route.paths),
                "runners": runners,
            }
        )
    return out


def _runner(view: RunnerView, slot: Slot | None, now: float) -> dict[str, object]:
    """One runner: the backend's view, with what its routed slot adds (``slot``: None when
    the router does not route to it)."""
    state = view.state.value
    if slot is not None and state == "IDLE" and slot.in_flight:
        state = "RUNNING"
    return {
        "runner_id": view.runner_id,
        "state": state,
        "pid": view.pid,
        "port": view.port,
        "in_flight": slot.in_flight if slot else 0,
        "routable": slot is not None and not slot.retired,
        "gpus": [f"{n} {u}" for n, u in slot.gpus] if slot is not None else [],
        "age_s": round(now - view.started_at, 3),
        "detail": view.detail,
    }
