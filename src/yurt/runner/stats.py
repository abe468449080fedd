"""What the runner's endpoint handlers count, for ``/_yurt/metrics``. No I/O, no imports of note."""

from __future__ import annotations

from yurt.metrics import Histograms


class RunnerStats:
    """What the endpoint handlers count; the event loop is the only writer."""

    __slots__ = ("durations", "requests")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (endpoint path, status code)
        self.durations = Histograms()  # (endpoint path,): seconds in the handler

    def served(self, path: str, status: int, seconds: float) -> None:
        """One endpoint request answered."""
        key = (path, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.durations.observe((path,), seconds)
