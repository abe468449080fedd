"""Tests for the router's request ids."""

from __future__ import annotations

import re
import time

from yurt.router.http import new_ordered_id, new_request_id


def test_ordered_ids_sort_by_creation_time_and_stay_random() -> None:
    """Queue ids are 32 hex digits, like sync ids, led by the creation time in milliseconds:
    ids made later sort later; ids made in the same millisecond still differ."""
    burst = [new_ordered_id() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in burst)
    assert re.fullmatch(r"[0-9a-f]{32}", new_request_id())
    assert len(set(burst)) == len(burst)
    stamp = int(burst[0][:12], 16) / 1000
    assert abs(stamp - time.time()) < 60
    before = new_ordered_id()
    deadline = time.monotonic() + 10
    while int(new_ordered_id()[:12], 16) == int(before[:12], 16):  # the next millisecond
        assert time.monotonic() < deadline
    assert new_ordered_id() > before
