"""Tests for the one capped retry backoff and the bounds on retry counts."""

from __future__ import annotations

import pytest

from yurt.backoff import capped_backoff, tenacity_wait
from yurt.config import (
    MAX_ATTEMPTS,
    BackoffConfig,
    QueueConfig,
    WebhookConfig,
    build_server_config,
)
from yurt.errors import ConfigError


def test_doubles_from_first_up_to_the_cap() -> None:
    """The delay after n failures is first * 2**(n-1), until the cap holds it."""
    delays = [capped_backoff(n, first=0.5, cap=10.0) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize("attempt", [1025, 10**6, 10**30, 10**400])
def test_huge_attempt_numbers_give_the_cap(attempt: int) -> None:
    """However many tries failed, the delay is the cap: no OverflowError, no inf."""
    assert capped_backoff(attempt, first=0.5, cap=10.0) == 10.0
    # A cap near a float's limit with a slow factor: large powers, still finite and capped.
    slow = [capped_backoff(n, first=1e-9, cap=1e300, factor=1.0001) for n in (attempt, 10**7)]
    assert all(0 < d <= 1e300 for d in slow) and slow[1] > 1e100


@pytest.mark.parametrize(
    ("first", "cap", "factor"),
    [(0.5, 10.0, 2.0), (15.0, 3600.0, 2.0), (0.2, 5.0, 1.5), (1e-6, 1e6, 1.01), (3.0, 3.0, 2.0)],
)
def test_never_decreases_and_never_exceeds_the_cap(first: float, cap: float, factor: float) -> None:
    """Without jitter the delay is monotonic in the attempt number and bounded by the cap."""
    delays = [capped_backoff(n, first=first, cap=cap, factor=factor) for n in range(0, 3000)]
    assert delays == sorted(delays)
    assert max(delays) == cap and min(delays) == first


def test_first_above_the_cap_and_zero_first() -> None:
    """A first delay above the cap is the cap; a first delay of 0 retries at once."""
    assert capped_backoff(1, first=30.0, cap=10.0) == 10.0
    assert capped_backoff(10**9, first=0.0, cap=10.0) == 0.0
    assert capped_backoff(0, first=2.0, cap=10.0) == capped_backoff(-5, first=2.0, cap=10.0) == 2.0


def test_jitter_takes_at_most_its_fraction_off() -> None:
    """Jitter removes up to its fraction of the delay, as the random draw says."""
    assert capped_backoff(3, first=1.0, cap=10.0, jitter=0.5, rand=lambda: 0.0) == 4.0
    assert capped_backoff(3, first=1.0, cap=10.0, jitter=0.5, rand=lambda: 0.5) == 3.0
    assert capped_backoff(10**9, first=1.0, cap=10.0, jitter=1.0, rand=lambda: 0.999) >= 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"first": -1.0, "cap": 1.0},
        {"first": 1.0, "cap": -1.0},
        {"first": 1.0, "cap": 2.0, "factor": 0.5},
        {"first": 1.0, "cap": 2.0, "jitter": 1.5},
    ],
)
def test_rejects_nonsense_parameters(bad: dict[str, float]) -> None:
    """Negative delays, a shrinking factor or jitter beyond 1 are refused, named."""
    with pytest.raises(ValueError, match="capped_backoff"):
        capped_backoff(1, **bad)


def test_tenacity_wait_uses_the_attempt_number() -> None:
    """The tenacity adapter waits as capped_backoff does after attempt_number failures."""

    class State:
        attempt_number = 0

    wait = tenacity_wait(first=0.2, cap=5.0)
    state = State()
    got = []
    for n in (1, 2, 3, 10**9):
        state.attempt_number = n
        got.append(wait(state))
    assert got == [0.2, 0.4, 0.8, 5.0]


def test_crash_backoff_doubles_to_its_cap() -> None:
    """A local runner's crash backoff is step, doubling per failure, capped; any count works."""
    config = BackoffConfig(step=30.0, cap=600.0)
    assert [config.delay(n) for n in range(1, 7)] == [30.0, 60.0, 120.0, 240.0, 480.0, 600.0]
    assert config.delay(10**12) == 600.0


def test_queue_and_webhook_attempts_are_bounded() -> None:
    """max_attempts beyond the bound is refused at load time, naming the field and the bound."""
    assert QueueConfig(max_attempts=MAX_ATTEMPTS).max_attempts == MAX_ATTEMPTS
    assert WebhookConfig(max_attempts=MAX_ATTEMPTS).max_attempts == MAX_ATTEMPTS
    for section in (
        {"queue": {"max_attempts": 10**6}},
        {"queue": {"webhooks": {"max_attempts": 10**6}}},
    ):
        with pytest.raises(
            ConfigError, match=rf"max_attempts: .*less than or equal to {MAX_ATTEMPTS}"
        ):
            build_server_config(section, {}, {})


def test_nomad_retries_are_bounded() -> None:
    """nomad.retries has a bound too: each retry holds a caller for up to the 5 s cap."""
    with pytest.raises(ConfigError, match=r"nomad\.retries"):
        build_server_config({"nomad": {"retries": 1000}}, {}, {})
