"""Tests for reading RFC 7240 ``Prefer: wait`` off a result request."""

from __future__ import annotations

import pytest

from yurt.queue.api import prefer_wait


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ([], None),
        ([(b"prefer", b"wait=5")], 5),
        ([(b"Prefer", b"handling=lenient, WAIT = 10")], 10),
        ([(b"prefer", b'respond-async, wait="7"; x=y')], 7),
        ([(b"prefer", b"return=minimal"), (b"prefer", b"wait=3")], 3),
        ([(b"prefer", b"wait=-1")], None),
        ([(b"prefer", b"wait=soon")], None),
        ([(b"prefer", b"waiting=5")], None),
        ([(b"x-prefer", b"wait=5")], None),
    ],
)
def test_prefer_wait(headers: list[tuple[bytes, bytes]], seconds: int | None) -> None:
    assert prefer_wait(headers) == seconds
