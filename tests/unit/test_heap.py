"""heap.settle: run in a child interpreter, since it changes the whole process's collector."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import cast

import pytest


def settled(before: str = "") -> dict[str, object]:
    """What the collector looks like after ``settle()`` in a fresh interpreter."""
    code = textwrap.dedent(
        f"""
        import gc, json
        from yurt import heap
        {before}
        before = gc.get_threshold()
        class Node:
            pass
        loop = Node()
        loop.me = loop  # a cycle made before: frozen, never collected
        heap.settle()
        frozen = gc.get_freeze_count()
        later = Node()
        later.me = later  # a cycle made after: still collected
        del later
        found = gc.collect()
        print(json.dumps({{
            "threshold": gc.get_threshold(), "before": before, "frozen": frozen, "found": found
        }}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_settle_freezes_startup_and_collects_the_young_less_often() -> None:
    state = settled()
    young, *older = cast(list[int], state["before"])
    assert young < 10_000
    assert state["threshold"] == [10_000, *older]  # the older generations as they were
    assert isinstance(state["frozen"], int) and state["frozen"] > 1000  # modules, classes...
    assert isinstance(state["found"], int) and state["found"] >= 1  # the later cycle


@pytest.mark.parametrize(
    ("before", "threshold"),
    [
        ("gc.set_threshold(50_000, 5, 5)", [50_000, 5, 5]),  # a higher one is kept
        ("gc.set_threshold(0, 5, 5)", [0, 5, 5]),  # collection turned off stays off
    ],
)
def test_settle_keeps_a_threshold_set_on_purpose(before: str, threshold: list[int]) -> None:
    assert settled(before)["threshold"] == threshold
