"""The one retry backoff of yurt: exponential, capped, safe for any attempt number. Pure.

Every loop that waits before trying again (queued requests, webhook deliveries, the Consul and
Nomad watches, calls to Nomad and Consul, Nomad scaling, crash restarts of local runners, the
WebSocket upgrades a busy runner refuses) takes its delay from
:func:`capped_backoff`, so that a count as large as a configuration allows (or larger) cannot
overflow a float and the wait never exceeds its cap.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Protocol

# ln of the largest power computed directly (e**700 is about 1e304, short of a float's limit).
_EXACT_POWER = 700.0


def capped_backoff(
    attempt: int,
    *,
    first: float,
    cap: float,
    factor: float = 2.0,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before try ``attempt + 1``, after ``attempt`` tries failed.

    ``first`` after the first failure (``attempt`` 1, or less), multiplied by ``factor`` after
    each further one, and never more than ``cap``. ``jitter`` (0 to 1) takes up to that
    fraction off at random (``rand`` returns a float in [0, 1)), so that many waiters started
    together do not retry together; without it the delay never decreases as ``attempt`` grows.
    Any ``attempt``, however large, gives at most ``cap``: the power is never computed past it.
    """
    if first < 0 or cap < 0 or factor < 1 or not 0 <= jitter <= 1:
        raise ValueError(
            f"capped_backoff(first={first}, cap={cap}, factor={factor}, jitter={jitter}): "
            "first and cap must be >= 0, factor >= 1 and jitter within [0, 1]"
        )
    steps = max(attempt - 1, 0)
    if first >= cap or first == 0 or factor == 1:
        delay = min(first, cap)
    elif steps >= (math.log(cap) - math.log(first)) / math.log(factor):
        delay = cap  # reached: no power is computed, so no count overflows
    elif steps * math.log(factor) < _EXACT_POWER:
        delay = min(first * factor**steps, cap)
    else:  # below the cap, yet factor**steps alone would overflow a float
        delay = min(math.exp(math.log(first) + steps * math.log(factor)), cap)
    if jitter:
        delay -= delay * jitter * rand()
    return delay


class _Attempted(Protocol):
    attempt_number: int


def tenacity_wait(*, first: float, cap: float) -> Callable[[_Attempted], float]:
    """A tenacity ``wait=``: :func:`capped_backoff` after each failed ``attempt_number``."""

    def wait(state: _Attempted) -> float:
        return capped_backoff(state.attempt_number, first=first, cap=cap)

    return wait
