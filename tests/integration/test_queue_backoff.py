"""A queued request retried more times than a float's exponent holds still completes."""

from __future__ import annotations

from pathlib import Path

import pytest

from yurt.config import QueueConfig

from queue_apps import Retries
from support import served

pytestmark = pytest.mark.timeout(300)

# Past 1024 tries, 2.0 ** (tries - 1) overflows a float: the uncapped formula raised there.
TRIES = 1030


async def test_a_request_retried_past_the_float_exponent_completes(tmp_path: Path) -> None:
    """A request answered 504 on every one of 1030 tries completes with the 504 after its last
    try, instead of being stranded in the queue when the retry wait overflowed.

    max_attempts is set past its configured bound on purpose (model_copy does not validate):
    the queue's own arithmetic must hold whatever count reaches it.
    """
    queue = QueueConfig().model_copy(
        update={"max_attempts": TRIES, "retry_backoff": 0.0, "retry_backoff_max": 0.0}
    )
    journal = tmp_path / "journal"
    async with served(Retries, tmp_path, queue=queue) as app:
        sub = await app.submit(json={"journal": str(journal), "status": 504})
        await app.completed(sub)
        status, body, _ = await app.result(sub)
    assert (status, body) == (504, {"detail": "asked for 504"})
    assert len(journal.read_text().splitlines()) == TRIES
