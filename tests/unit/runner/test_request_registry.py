"""Tests for the runner's request registry: cancellation by id and logs kept by id."""

from __future__ import annotations

import asyncio

import pytest

from yurt.runner.requests import RequestRegistry


def headers(request_id: str) -> dict[str, str]:
    return {"x-fal-request-id": request_id} if request_id else {}


def test_cancel_marks_the_request_and_its_context() -> None:
    """cancel(id) marks every in-flight request with that id; the context sees it."""
    registry = RequestRegistry()
    active = registry.begin(headers("r1"))
    assert not active.context.cancelled
    assert registry.cancel("r1")
    assert active.cancelled and active.context.cancelled


def test_cancel_unknown_finished_or_anonymous_is_false() -> None:
    """Ids never seen, already finished, or empty cannot be cancelled."""
    registry = RequestRegistry()
    done = registry.begin(headers("r1"))
    registry.finish(done)
    anonymous = registry.begin(headers(""))
    assert not registry.cancel("r1")
    assert not registry.cancel("nope")
    assert not registry.cancel("")
    assert not anonymous.cancelled


async def test_cancel_cancels_the_task_of_an_async_endpoint() -> None:
    """A request with a task has that task cancelled."""
    registry = RequestRegistry()
    active = registry.begin(headers("r1"))
    active.task = asyncio.ensure_future(asyncio.sleep(60))
    registry.cancel("r1")
    await asyncio.gather(active.task, return_exceptions=True)
    assert active.task.cancelled()


def test_logs_of_live_and_completed_requests() -> None:
    """Logs are readable in flight and after; unknown ids are None."""
    registry = RequestRegistry()
    active = registry.begin(headers("r1"))
    assert registry.logs("r1") == []
    active.logs.add("INFO", "a")
    assert [e["message"] for e in registry.logs("r1") or []] == ["a"]
    registry.finish(active)
    assert [e["message"] for e in registry.logs("r1") or []] == ["a"]
    assert registry.logs("r2") is None


def test_forget_on_a_live_request_drains_and_keeps_capturing() -> None:
    """forget while in flight returns each entry once; after completion it forgets the id."""
    registry = RequestRegistry()
    active = registry.begin(headers("r1"))
    active.logs.add("INFO", "a")
    assert [e["message"] for e in registry.logs("r1", forget=True) or []] == ["a"]
    active.logs.add("INFO", "b")
    registry.finish(active)
    assert [e["message"] for e in registry.logs("r1", forget=True) or []] == ["b"]
    assert registry.logs("r1") is None


def test_completed_logs_are_bounded_by_count_oldest_first() -> None:
    """Past ``keep`` completed ids, the oldest are dropped."""
    registry = RequestRegistry(keep=2)
    for request_id in ("r1", "r2", "r3"):
        registry.finish(registry.begin(headers(request_id)))
    assert registry.logs("r1") is None
    assert registry.logs("r2") == registry.logs("r3") == []


def test_completed_logs_are_bounded_by_characters() -> None:
    """Past ``keep_chars`` characters held for completed requests, the oldest are dropped."""
    registry = RequestRegistry(keep_chars=10)
    for request_id in ("r1", "r2"):
        active = registry.begin(headers(request_id))
        active.logs.add("INFO", "x" * 6)
        registry.finish(active)
    assert registry.logs("r1") is None
    assert registry.logs("r2") is not None


def test_two_tries_with_one_id_share_cancel_and_logs() -> None:
    """Two in-flight requests with the same id are cancelled together; logs are both, in order."""
    registry = RequestRegistry()
    first, second = registry.begin(headers("r1")), registry.begin(headers("r1"))
    first.logs.add("INFO", "first")
    second.logs.add("INFO", "second")
    registry.finish(first)
    assert registry.in_flight("r1")
    assert [e["message"] for e in registry.logs("r1") or []] == ["first", "second"]
    assert registry.cancel("r1")
    assert second.cancelled and not first.cancelled
    registry.finish(second)
    assert not registry.in_flight("r1")


def test_the_app_sees_the_headers_without_the_runner_token() -> None:
    """The headers handed to the app hide the runner's token from every way of reading them,
    and keep each other value, repeated names included, case-insensitively."""
    from multidict import CIMultiDict, CIMultiDictProxy

    raw = CIMultiDict(
        [
            ("X-Fal-Request-Id", "r1"),
            ("X-Yurt-Runner-Token", "secret"),
            ("Accept", "a"),
            ("accept", "b"),
        ]
    )
    shown = RequestRegistry().begin(CIMultiDictProxy(raw), "/").context.headers
    assert shown["x-fal-request-id"] == "r1" and shown.get("ACCEPT") == "a"
    assert "x-yurt-runner-token" not in shown and shown.get("X-Yurt-Runner-Token") is None
    assert sorted(shown) == ["Accept", "X-Fal-Request-Id"] and len(shown) == 2
    assert list(shown.items()) == [("X-Fal-Request-Id", "r1"), ("Accept", "a"), ("accept", "b")]
    assert shown.getall("accept") == ["a", "b"]  # type: ignore[attr-defined]
    assert "secret" not in repr(shown) and dict(shown) == {"X-Fal-Request-Id": "r1", "Accept": "a"}
    with pytest.raises(KeyError):
        shown["x-yurt-runner-token"]


def test_a_wait_on_the_cancel_event_wakes_when_another_thread_cancels() -> None:
    """The request's cancel event, whose lock is made on first use, wakes a thread waiting on
    it when cancel comes from another thread, and reads as set afterwards."""
    import threading

    active = RequestRegistry().begin(headers("r1"))
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(active.cancel_event.wait(30)))
    waiter.start()
    active.cancel()
    waiter.join(30)
    assert woke == [True] and active.context.cancelled
