"""A sync run sent from the fast lane's callbacks, with no task or coroutine of its own.

The common request, a POST to an app's endpoint with a runner's slot free and an idle connection
to that runner at hand, needs nothing awaited: the client connection's ``on_message_complete``
writes it to the runner (``forward``), and the runner's connection, once its response is
complete and the connection is back among the idle ones, hands it to a ``Flight``, which applies
the same rules as ``RequestCore._sync`` (``answered``, ``failed``: termination, the slot, the
counts) and gives the face its answer. One task, three coroutines and a future fewer per
request.

Whatever is not that common case goes the task's way, with nothing lost: no free slot (the
wait), no idle connection (the connect: the slot taken here goes with it), a key under quotas;
a runner that streams its reply hands the rest to a coroutine at the reply's head
(``stream_of``). A runner that fails or runs past the app's ``request_timeout`` is answered here,
by the direct-request rules (a sync run is never retried). A caller that hangs up leaves the
run to finish, as the task's way does once a run is on a runner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from yurt.router.http import Reply, end_to_end_lines, new_request_id
from yurt.router.pool import UpstreamError, UpstreamResponse

if TYPE_CHECKING:
    from yurt.router.admitted import Answer, SyncRun
    from yurt.router.core import RequestCore
    from yurt.router.dispatch import AppRoute, Slot

    # What a flight hands its face: the answer, or, for what must still be awaited (a stream,
    # the task's way), its awaitable.
    Landing = Callable[[tuple[Reply, str] | Awaitable[Answer]], None]


# The longest a streamed reply's head waits for its first chunk before it goes alone: a
# caller (a browser's EventSource, say) sees the stream open at once, whatever the runner's
# first event costs.
HEAD_HOLD_S = 0.005


class Flight:
    """A sync run on a runner, waiting for its reply without a task: what the runner's
    connection hands the response (or its error) to (``upstream.Receiver``)."""

    __slots__ = (
        "core",
        "held",
        "hold_timer",
        "land",
        "request_id",
        "route",
        "settled",
        "slot",
        "t0",
    )

    def __init__(
        self,
        core: RequestCore,
        route: AppRoute,
        slot: Slot,
        t0: float,
        request_id: str,
        land: Landing,
    ) -> None:
        self.core = core
        self.route = route
        self.slot = slot
        self.t0 = t0
        self.request_id = request_id
        self.land = land
        self.settled = False
        # A streamed reply's head, held until the first of its body (or its end, or its error)
        # arrives, for HEAD_HOLD_S at most: the face then starts the stream and sends the head
        # with that first chunk in one wake-up, instead of one for the head and one for the
        # chunk.
        self.held: UpstreamResponse | None = None
        self.hold_timer: asyncio.TimerHandle | None = None

    def done(self) -> bool:
        """Whether the reply (or its error) came."""
        return self.settled

    def set_result(self, result: UpstreamResponse, /) -> None:
        """The runner's reply (a streamed one at its head)."""
        self.settled = True
        answer: tuple[Reply, str] | Awaitable[Answer]
        core, route, slot, t0 = self.core, self.route, self.slot, self.t0
        try:
            reply = core.answered(route, slot, result, t0)
            if reply is None:
                assert result.stream is not None
                self.held = result
                result.stream.on_first(self._first_chunk)
                if self.held is not None:  # nothing of the body yet
                    loop = asyncio.get_running_loop()
                    self.hold_timer = loop.call_later(HEAD_HOLD_S, self._first_chunk)
                return
            answer = (reply, self.request_id)
        except Exception as exc:  # a bug of ours: the face answers 500, as for the task's way
            answer = _raise(exc)
        self.land(answer)

    def _first_chunk(self) -> None:
        """The held stream's first chunk (or end, or error) came, or the head waited long
        enough: the face relays the stream now."""
        self._stop_holding()
        held, self.held = self.held, None
        if held is not None:
            self.land(self.core.stream_of(self.route, self.slot, held, self.t0, self.request_id))

    def cancel(self) -> bool:
        """The caller hung up. A stream whose head is held ends as a relayed one would (the
        runner's connection closed, the slot back, the run counted); a run waiting for its
        reply is served to the end, as the task's way serves a run already on its runner."""
        self._stop_holding()
        held, self.held = self.held, None
        if held is None:
            return False
        self.core.stream_dropped(self.route, self.slot, held, self.t0)
        return True

    def _stop_holding(self) -> None:
        timer, self.hold_timer = self.hold_timer, None
        if timer is not None:
            timer.cancel()

    def set_exception(self, exception: BaseException, /) -> None:
        """What cut the request before a reply (``UpstreamError``)."""
        self.settled = True
        answer: tuple[Reply, str] | Awaitable[Answer]
        try:
            if not isinstance(exception, UpstreamError):
                raise exception
            answer = (self.core.failed(self.route, self.slot, exception, self.t0), self.request_id)
        except Exception as exc:
            answer = _raise(exc)
        self.land(answer)


def forward(
    core: RequestCore,
    run: SyncRun,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    on_sent: Callable[[], None],
    land: Landing,
) -> Flight | Awaitable[Answer]:
    """Send ``run`` to a runner now if it needs no wait: its ``Flight`` when sent (``land``
    gets the answer, from the runner's connection's callbacks); else what to await for it
    instead (the task's way, ``RequestCore.serve``), having sent nothing."""
    if run.caller.key is not None and core.router.gate.quotas_on:
        return core.serve(run, headers, body, on_sent)
    route = run.route
    t0 = time.monotonic()
    slot = route.try_acquire()
    if slot is None:
        return core.serve(run, headers, body, on_sent)
    request_id = new_request_id()
    flight = Flight(core, route, slot, t0, request_id, land)
    # ``forward_head``, its lines reused while callers send the same headers, as one client
    # does request after request on its connection.
    last = core.last_headers
    if headers != last[0]:
        core.last_headers = last = (headers, end_to_end_lines(headers))
    head = b"%sx-fal-request-id: %s\r\n" % (last[1], request_id.encode())
    on_sent()
    if not slot.pool.forward(flight, run.target, head, body, route.spec.request_timeout):
        # No idle connection: the task's way opens one, for the slot taken here.
        return core.sync_on(run, headers, body, request_id, slot)
    return flight


async def _raise(exc: Exception) -> Answer:
    """Raises ``exc`` where the face awaits its answer: it answers 500 for a bug of ours."""
    raise exc
