"""The queue's records: a queued request, its routing options and its result. No I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

Header = tuple[bytes, bytes]


class State(enum.StrEnum):
    """Where a queued request is; the names are the protocol's ``status`` values."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


class Priority(enum.IntEnum):
    """``X-Fal-Queue-Priority``: normal requests are started before low ones."""

    NORMAL = 0
    LOW = 1


@dataclass(frozen=True, slots=True)
class Routing:
    """What the caller asked of the queue through its headers (and ``?fal_webhook``)."""

    priority: Priority = Priority.NORMAL
    start_timeout: float | None = None  # seconds from submission to the first start
    hint: str | None = None
    no_retry: bool = False
    webhook: str | None = None


@dataclass(slots=True)
class Result:
    """How a request ended: the runner's response (or the router's error) as stored."""

    status: int
    headers: list[Header]
    body: bytes
    error: str | None = None
    error_type: str | None = None
    inference_time: float | None = None

    @property
    def ok(self) -> bool:
        """A 2xx response."""
        return 200 <= self.status < 300


@dataclass(slots=True, eq=False)
class Job:
    """One accepted request, queued or in progress, as the router holds it in memory."""

    id: str
    app_id: str
    endpoint: str  # the endpoint path on the runner, e.g. "/" or "/generate"
    query: str  # the raw query string, forwarded as sent
    headers: list[Header]  # forwarded to the runner
    body: bytes
    routing: Routing
    created_at: float  # wall clock
    state: State = State.IN_QUEUE
    attempts: int = 0
    started_at: float | None = None
    queued_since: float = 0.0  # monotonic; when it last entered the queue
    not_before: float = 0.0  # monotonic; a retry backing off waits until then
    runner_id: str | None = None
    cancel_requested: bool = False
    avoid: set[str] = field(default_factory=set)  # runners a retry should not go back to
    owner: str | None = None  # the key that submitted it (a private app's); None: the id is enough

    @property
    def start_by(self) -> float | None:
        """The wall-clock deadline to start, from ``X-Fal-Request-Timeout``."""
        timeout = self.routing.start_timeout
        return None if timeout is None else self.created_at + timeout

    @property
    def target(self) -> bytes:
        """The request target on the runner."""
        return (self.endpoint if not self.query else f"{self.endpoint}?{self.query}").encode()


class Step(enum.Enum):
    """A move of a request's ``State``: the only ways its state changes (see ``move``).

    ===========  ===========================  ============================================
    step         from -> to                   what else changes
    ===========  ===========================  ============================================
    BEGIN        IN_QUEUE -> IN_PROGRESS      one more attempt, on ``runner_id``, at ``now``
    UNSTART      IN_PROGRESS -> IN_QUEUE      that attempt was never sent: undone
    RETRY        IN_PROGRESS -> IN_QUEUE      its runner is avoided by the next attempt
    COMPLETE     either -> COMPLETED          nothing (the result is kept elsewhere)
    ===========  ===========================  ============================================
    """

    BEGIN = "begin"
    UNSTART = "unstart"
    RETRY = "retry"
    COMPLETE = "complete"


def move(job: Job, step: Step, *, runner_id: str | None = None, now: float = 0.0) -> None:
    """Move ``job``'s state by ``step`` (the table of ``Step``)."""
    if step is Step.BEGIN:
        job.state, job.attempts = State.IN_PROGRESS, job.attempts + 1
        job.started_at, job.runner_id = now, runner_id
    elif step is Step.UNSTART:
        job.state, job.attempts = State.IN_QUEUE, job.attempts - 1
        job.started_at, job.runner_id = None, None
    elif step is Step.RETRY:
        job.state = State.IN_QUEUE
        if job.runner_id is not None:
            job.avoid.add(job.runner_id)
    else:
        job.state = State.COMPLETED
