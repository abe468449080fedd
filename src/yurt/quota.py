"""Per-key quotas: a rate (a token bucket) and a cap on requests a key has unfinished.

Pure bookkeeping over a clock the caller passes in; the router asks ``admit`` before it takes a
request and ``release`` when the request is finished (answered, or, through the queue, done).
A refusal carries how long to wait, for ``Retry-After``. A refused request is not taken, so it
loses nothing the key had submitted before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """One key's limits; None switches that limit off."""

    rate: float | None = None  # requests per second, sustained
    burst: int | None = None  # requests at once above the rate (default: max(1, rate))
    unfinished: int | None = None  # requests in flight or queued at once


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a request was refused and when to try again (seconds, for ``Retry-After``)."""

    reason: str
    retry_after: float

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds, at least 1 (RFC 9110 section 10.2.3)."""
        return str(max(1, math.ceil(self.retry_after)))


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; a request takes one."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = burst, now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Quotas:
    """Every key's buckets and unfinished counts, under one set of limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buckets: dict[str, TokenBucket] = {}
        self._unfinished: dict[str, int] = {}

    @property
    def active(self) -> bool:
        """Whether any limit is on (off: ``admit`` is never worth calling)."""
        return self.limits.rate is not None or self.limits.unfinished is not None

    def admit(self, key_id: str, now: float) -> Refused | None:
        """Take one request for ``key_id``, or say why not. Admitted: call ``release`` later."""
        cap = self.limits.unfinished
        held = self._unfinished.get(key_id, 0)
        if cap is not None and held >= cap:
            return Refused(
                f"this key has {held} requests unfinished, its limit; wait for one to finish",
                1.0,
            )
        if self.limits.rate is not None:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                burst = self.limits.burst or max(1, math.ceil(self.limits.rate))
                bucket = self._buckets[key_id] = TokenBucket(self.limits.rate, burst, now)
            wait = bucket.take(now)
            if wait > 0:
                return Refused(
                    f"this key is over its rate of {self.limits.rate:g} requests a second",
                    wait,
                )
        self._unfinished[key_id] = held + 1
        return None

    def hold(self, key_id: str) -> None:
        """Count a request as unfinished without admitting it (one taken back at a restart)."""
        self._unfinished[key_id] = self._unfinished.get(key_id, 0) + 1

    def release(self, key_id: str) -> None:
        """A request ``admit`` took is finished."""
        held = self._unfinished.get(key_id, 0) - 1
        if held > 0:
            self._unfinished[key_id] = held
        else:
            self._unfinished.pop(key_id, None)

    def unfinished(self, key_id: str) -> int:
        """How many requests of ``key_id`` are unfinished."""
        return self._unfinished.get(key_id, 0)
