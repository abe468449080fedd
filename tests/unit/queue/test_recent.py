"""Tests for the completed records the queue keeps in memory."""

from __future__ import annotations

from yurt.queue.model import Result, State
from yurt.queue.recent import RecentRecords, record_size
from yurt.queue.store import Record


def record(request_id: str, completed_at: float, body: bytes = b"", logs: int = 0) -> Record:
    entries = [{"message": "m" * 10} for _ in range(logs)]
    return Record(
        request_id, "o/a", State.COMPLETED, 0.0, 0.0, completed_at, Result(200, [], body), entries
    )


def test_the_oldest_go_past_the_count() -> None:
    recent = RecentRecords(max_records=2)
    for n in range(3):
        recent.add(record(f"r{n}", float(n)))
    assert recent.get("r0") is None and recent.get("r1") and recent.get("r2")
    assert len(recent) == 2


def test_the_oldest_go_past_the_bytes_which_count_bodies_and_logs() -> None:
    big = record("big", 1.0, body=b"x" * 100, logs=2)
    assert record_size(big) == 100 + 2 * (10 + 64)
    recent = RecentRecords(max_bytes=300)
    recent.add(big)
    recent.add(record("small", 2.0, body=b"y" * 50))
    assert recent.get("big") is not None and recent.bytes == 298
    recent.add(record("next", 3.0, body=b"z" * 10))
    assert recent.get("big") is None and recent.bytes == 60


def test_forget_before_lets_go_of_those_completed_before_the_cutoff() -> None:
    recent = RecentRecords()
    for n in range(4):
        recent.add(record(f"r{n}", float(n), body=b"b"))
    recent.forget_before(2.0)
    assert [recent.get(f"r{n}") is not None for n in range(4)] == [False, False, True, True]
    assert recent.bytes == 2
    recent.forget_before(10.0)
    assert len(recent) == 0 and recent.bytes == 0
