"""What becomes of a queued request after an attempt, and of an attempt before its send. Pure.

The queue column of the platform's rules table (``yurt.router.rules``: ``queue_status``,
``queue_error``, ``should_retry``) judges one runner outcome; ``decide`` adds what the request
itself says (its attempts so far, ``x-fal-no-retry``, a cancel, whether its app is still
served) and returns what the engine then does: ``Retry`` (with its backoff) or ``Complete``.
``recovered`` applies it to what a restart finds in progress, ``restartable`` says whether a
request may be recorded as started before its runner hears of it, and ``unsent`` is the check
made between an attempt's start (recorded) and its send.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from yurt.backoff import capped_backoff
from yurt.config import QueueConfig
from yurt.queue.backlog import AppBacklog
from yurt.queue.model import Job, Result
from yurt.queue.results import cancelled, cut_short, undeployed
from yurt.router.dispatch import Slot
from yurt.router.rules import QueueVerdict, queue_error, should_retry
from yurt.spec import RetryCondition

# The app's skip_retry_conditions (AppSpec.skip_retry_conditions).
Skip = list[RetryCondition] | tuple[RetryCondition, ...]
# An attempt cut short by the router's end is judged as a broken connection would be.
CUT_SHORT = queue_error("disconnected")


# The decisions are named tuples: immutable, and made at a fraction of a frozen dataclass's
# cost (one of each per attempt).
class Outcome(NamedTuple):
    """An attempt's end: the rules table's verdict on it and the result it would complete with.

    ``cancelled_first``: the caller's cancel was asked for before the runner's answer came.
    """

    verdict: QueueVerdict
    result: Result
    cancelled_first: bool = False


class Retry(NamedTuple):
    """Back to the head of the queue for another attempt: after ``backoff`` seconds when the
    runner was kept (a 504, a 429, the app asked), since trying again at once would burn every
    attempt in milliseconds on what is likely a passing condition; at once (None) when the
    runner is being stopped."""

    backoff: float | None
    reason: str | None


class Complete(NamedTuple):
    """The request completes with ``result``."""

    result: Result


def decide(
    job: Job, outcome: Outcome, config: QueueConfig, skip: Skip, *, served: bool = True
) -> Retry | Complete:
    """What becomes of ``job`` after the attempt that ended in ``outcome``.

    ``config``: the attempt limit and the retry backoff; ``skip``: the app's
    ``skip_retry_conditions``; ``served``: its app is still deployed (an undeployed app's
    request that would be retried completes 410 instead).
    """
    retryable = should_retry(
        outcome.verdict,
        attempts=job.attempts,
        max_attempts=config.max_attempts,
        no_retry=job.routing.no_retry,
        skip=skip,
    )
    if retryable and not job.cancel_requested:
        if not served:  # its runner stopped as its app was undeployed
            return Complete(undeployed(job.app_id))
        reason = outcome.verdict.reason or outcome.result.error_type
        if outcome.verdict.terminate:
            return Retry(backoff=None, reason=reason)
        first, cap = config.retry_backoff, config.retry_backoff_max
        return Retry(backoff=capped_backoff(job.attempts, first=first, cap=cap), reason=reason)
    # The cancel decides the outcome if the runner had it before answering (its error may be
    # the endpoint giving up), or if it is what stops a retry; an error the endpoint answered
    # before any cancel stands.
    result = outcome.result
    decided = outcome.cancelled_first or retryable
    if job.cancel_requested and decided and not result.ok and result.status != 499:
        result = cancelled(job.id)
    return Complete(result)


def recovered(job: Job, config: QueueConfig, skip: Skip) -> Complete | None:
    """What becomes of ``job``, which a previous router left unfinished: None, queued again.

    One cancelled while in progress then completes cancelled; one in progress then was cut
    short by the router's end, and runs again as a broken connection would be, within the
    attempt limit, ``x-fal-no-retry`` and the app's conditions.
    """
    if job.cancel_requested:
        return Complete(cancelled(job.id))
    if not job.attempts:
        return None
    then = decide(job, Outcome(CUT_SHORT, cut_short(job.attempts)), config, skip)
    return then if isinstance(then, Complete) else None


def restartable(job: Job, config: QueueConfig, skip: Skip) -> bool:
    """Whether ``job``'s first attempt, were it cut short by the router's end, would run again
    after a restart (so it may be recorded as started before its runner hears of it)."""
    return should_retry(
        CUT_SHORT,
        attempts=1,
        max_attempts=config.max_attempts,
        no_retry=job.routing.no_retry,
        skip=skip,
    )


class Unsent(enum.Enum):
    """Why an attempt recorded as started is not sent after all, and what the request becomes."""

    UNDEPLOYED = "undeployed"  # its app went: completes 410
    STOPPING = "stopping"  # the router stops: left IN_PROGRESS, to run after a restart
    CANCELLED = "cancelled"  # the caller cancelled it: completes 499
    RETIRED = "retired"  # its runner is being stopped: back to the head, attempt uncounted


def unsent(job: Job, slot: Slot, backlog: AppBacklog | None) -> Unsent | None:
    """Why the attempt of ``job`` on ``slot`` must not be sent now; None: send it.

    ``backlog``: the app's queue, None if the app is no longer served.
    """
    if backlog is None:
        return Unsent.UNDEPLOYED
    if backlog.closed:
        return Unsent.STOPPING
    if job.cancel_requested:
        return Unsent.CANCELLED
    if slot.retired:
        return Unsent.RETIRED
    return None
