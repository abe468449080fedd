"""Per-key quotas: the token bucket's arithmetic and the unfinished cap, over a given clock."""

from __future__ import annotations

import pytest

from yurt.quota import Limits, Quotas, Refused, TokenBucket


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    """Burst 2 at 1/s: two at once, the third waits a second, one more after it."""
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0
    assert bucket.take(100.0) == 0.0  # never more than the burst banked
    assert bucket.take(100.0) == 0.0
    assert bucket.take(100.0) > 0


def test_keys_have_buckets_of_their_own() -> None:
    """One key over its rate leaves another key's requests alone."""
    quotas = Quotas(Limits(rate=1.0, burst=1))
    assert quotas.admit("a", 0.0) is None
    refused = quotas.admit("a", 0.1)
    assert isinstance(refused, Refused) and refused.retry_after == pytest.approx(0.9)
    assert refused.retry_after_header == "1"
    assert quotas.admit("b", 0.1) is None


def test_the_unfinished_cap_counts_until_release() -> None:
    """A key with its cap of unfinished requests is refused until one is released."""
    quotas = Quotas(Limits(unfinished=2))
    assert quotas.admit("a", 0.0) is None
    assert quotas.admit("a", 0.0) is None
    refused = quotas.admit("a", 0.0)
    assert refused is not None and "2 requests unfinished" in refused.reason
    quotas.release("a")
    assert quotas.unfinished("a") == 1
    assert quotas.admit("a", 0.0) is None
    quotas.hold("b")
    assert quotas.unfinished("b") == 1


def test_a_refusal_by_rate_is_not_counted_as_unfinished() -> None:
    """Only admitted requests hold a place: a refused one takes nothing."""
    quotas = Quotas(Limits(rate=1.0, burst=1, unfinished=5))
    assert quotas.admit("a", 0.0) is None
    assert quotas.admit("a", 0.0) is not None
    assert quotas.unfinished("a") == 1


def test_no_limits_is_inactive() -> None:
    """Limits all None: the quotas say they are off."""
    assert not Quotas(Limits()).active
    assert Quotas(Limits(rate=5)).active
    assert Refused("x", 0.01).retry_after_header == "1"
    assert Refused("x", 2.5).retry_after_header == "3"
