"""The requests a runner is serving and has served: cancellation and captured logs by id.

Requests are known by their ``x-fal-request-id``. One without an id can be neither cancelled
nor have its logs fetched. Should two requests with the same id be in flight at once (a retry
landing on the runner still serving the first try), cancelling cancels both and the logs of
both are returned, oldest try first.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import ItemsView, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy

from yurt.app import RequestContext
from yurt.runner.logcapture import LogBuffer, LogEntry
from yurt.runner.token import RUNNER_TOKEN_HEADER

REQUEST_ID = "x-fal-request-id"
# What the runner's HTTP parser accepts (aiohttp's defaults, written out). The router refuses
# requests past them with its own JSON 431 or 414 rather than forward what would get a text
# 400 here.
MAX_HEADERS = 128
MAX_FIELD_SIZE = 8190  # a header's name and value together
MAX_LINE_SIZE = 8190  # the request target
KEEP_COMPLETED = 1000
KEEP_COMPLETED_CHARS = 64 * 1024 * 1024


class CancelEvent(threading.Event):
    """A ``threading.Event`` whose condition (a lock and its bookkeeping) is made on first
    ``set`` or ``wait``: most requests are never cancelled nor waited on, and making it cost
    every request several microseconds. ``is_set`` reads the flag alone, as Event's does."""

    _flag: bool

    def __init__(self) -> None:  # no super().__init__(): that is what is put off
        self._flag = False

    def __getattr__(self, name: str) -> Any:
        if name == "_cond":
            # setdefault is atomic: two threads asking at once get the same condition.
            return self.__dict__.setdefault("_cond", threading.Condition(threading.Lock()))
        raise AttributeError(name)


class AppHeaders(Mapping[str, str]):
    """A request's headers as the app sees them: the runner's token left out (runner/token.py).

    A view of aiohttp's headers, not a copy: every request carries the token, and copying its
    headers cost each request more than the app's reading them ever does. Case-insensitive, as
    aiohttp's; a name sent twice is one key, ``getall`` and ``items`` give each value.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: CIMultiDictProxy[str]) -> None:
        self._raw = raw

    def __getitem__(self, key: str) -> str:
        if key.lower() == RUNNER_TOKEN_HEADER:
            raise KeyError(key)
        return self._raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key.lower() == RUNNER_TOKEN_HEADER:
            return default
        return self._raw.get(key, default)

    def getall(self, key: str, default: Any = None) -> Any:
        """Every value sent under ``key`` (``default``, or KeyError, if none)."""
        if key.lower() == RUNNER_TOKEN_HEADER:
            if default is None:
                raise KeyError(key)
            return default
        if default is None:
            return self._raw.getall(key)
        return self._raw.getall(key, default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() != RUNNER_TOKEN_HEADER and key in self._raw

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name in self._raw:
            lower = name.lower()
            if lower != RUNNER_TOKEN_HEADER and lower not in seen:
                seen.add(lower)
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def items(self) -> ItemsView[str, str]:
        return _Items(self)

    def __repr__(self) -> str:
        return f"<AppHeaders({list(self.items())!r})>"


class _Items(ItemsView[str, str]):
    """Each (name, value) sent, the token's left out."""

    _mapping: AppHeaders

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for name, value in self._mapping._raw.items():
            if name.lower() != RUNNER_TOKEN_HEADER:
                yield name, value

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ActiveRequest:
    """One request in flight: its context, its captured output, and how to cancel it."""

    __slots__ = ("cancel_event", "context", "endpoint", "logs", "request_id", "task")

    def __init__(
        self, request_id: str, headers: Mapping[str, str], cancel: CancelEvent, endpoint: str
    ) -> None:
        self.request_id = request_id  # read on every request: a plain attribute
        self.endpoint = endpoint
        self.context = RequestContext(request_id, headers, cancel, endpoint)
        self.cancel_event = cancel
        self.logs = LogBuffer(request_id, endpoint)
        # Set for async endpoints only: a worker thread cannot be interrupted, and freeing its
        # slot while it still computes would overcommit the runner.
        self.task: asyncio.Task[Any] | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel_event._flag

    def cancel(self) -> None:
        """Mark the request cancelled and, for an async endpoint, cancel its task."""
        self.cancel_event.set()
        if self.task is not None:
            self.task.cancel()


@dataclass
class _Completed:
    buffers: list[LogBuffer]
    chars: int = 0


class RequestRegistry:
    """In-flight requests by id, and the logs of completed ones until fetched or evicted.

    Completed requests' logs are kept until fetched with ``forget``, for the most recent
    ``keep`` request ids and ``keep_chars`` characters in all; the oldest go first.
    """

    def __init__(
        self, *, keep: int = KEEP_COMPLETED, keep_chars: int = KEEP_COMPLETED_CHARS
    ) -> None:
        self._keep, self._keep_chars = keep, keep_chars
        self._live: dict[str, list[ActiveRequest]] = {}
        self._completed: OrderedDict[str, _Completed] = OrderedDict()
        self._completed_chars = 0

    def begin(self, headers: Mapping[str, str], endpoint: str = "") -> ActiveRequest:
        """Register a request arriving with ``headers`` for the endpoint at ``endpoint``."""
        cancel = CancelEvent()
        if RUNNER_TOKEN_HEADER in headers:
            # The app sees the caller's headers, never the runner's token (runner/token.py).
            if isinstance(headers, CIMultiDictProxy):
                headers = AppHeaders(headers)
            else:
                headers = {k: v for k, v in headers.items() if k.lower() != RUNNER_TOKEN_HEADER}
        request_id = headers.get(REQUEST_ID, "")
        active = ActiveRequest(request_id, headers, cancel, endpoint)
        if request_id:
            live = self._live.get(request_id)
            if live is None:
                self._live[request_id] = [active]
            else:
                live.append(active)
        return active

    def finish(self, active: ActiveRequest) -> None:
        """The request is done: it can no longer be cancelled, and its logs are kept."""
        request_id = active.request_id
        live = self._live.get(request_id)
        if live is None or active not in live:
            return
        if len(live) == 1:
            del self._live[request_id]
        else:
            live.remove(active)
        logs = active.logs
        chars = logs.held_chars if logs.count else 0  # most requests print nothing
        completed = self._completed.pop(request_id, None)
        if completed is None:
            completed = _Completed([logs], chars)
        else:
            completed.buffers.append(logs)
            completed.chars += chars
        self._completed[request_id] = completed
        self._completed_chars += chars
        while self._completed and (
            len(self._completed) > self._keep or self._completed_chars > self._keep_chars
        ):
            _, evicted = self._completed.popitem(last=False)
            self._completed_chars -= evicted.chars

    def cancel(self, request_id: str) -> bool:
        """Cancel every in-flight request with this id; False if there is none."""
        live = self._live.get(request_id, []) if request_id else []
        for active in live:
            active.cancel()
        return bool(live)

    def in_flight(self, request_id: str) -> bool:
        """Whether a request with this id is being served."""
        return request_id in self._live

    def logs(self, request_id: str, *, forget: bool = False) -> list[LogEntry] | None:
        """The entries captured for ``request_id`` so far; None if it is unknown.

        ``forget`` discards what it returns: a completed request is then unknown, one still in
        flight goes on capturing, so that polling with ``forget`` reads each entry once.
        """
        completed = self._completed.get(request_id)
        live = self._live.get(request_id, [])
        if completed is None and not live:
            return None
        buffers = (completed.buffers if completed is not None else []) + [a.logs for a in live]
        entries = [e for b in buffers for e in (b.drain() if forget else b.snapshot())]
        if forget and completed is not None:
            del self._completed[request_id]
            self._completed_chars -= completed.chars
        return entries
