"""One request on a fast-lane connection, from its head to its answer.

An ``Exchange`` is made when a request's head has been read (or refused), collects its body,
waits in the connection's queue, and is served in turn. Its ``Stage`` says what a hang-up of
the caller does to it::

    HELD ---mark_sent---> SENT          HELD: waiting for a runner, or a queue read that only
      \\                    |             watches: a hang-up cancels it (and a waiting run
       \\                   v             no longer counts as demand)
        ------------> RELAYING -> ENDED  SENT: on a runner, or a queue write: served to the end
                                         RELAYING: a stream or a tunnel: a hang-up ends it
"""

from __future__ import annotations

from enum import Enum

from yurt.router.admitted import Admitted, QueueCall, SyncRun, Upgrade
from yurt.router.http import Reply


class Stage(Enum):
    """What a hang-up of the caller does to the exchange being served."""

    HELD = "held"
    SENT = "sent"
    RELAYING = "relaying"
    ENDED = "ended"


HELD, SENT, RELAYING, ENDED = Stage.HELD, Stage.SENT, Stage.RELAYING, Stage.ENDED
# What goes to a runner (a tuple: ``A | B`` would build a union on every request).
_TO_RUNNER = (SyncRun, Upgrade)


class Exchange:
    """One app or queue request being read, waiting to be served, or served."""

    __slots__ = (
        "admitted",
        "body",
        "early",
        "error",
        "headers",
        "http10",
        "keep_alive",
        "size",
        "stage",
    )

    def __init__(self, admitted: Admitted | None, headers: list[tuple[bytes, bytes]]) -> None:
        self.admitted = admitted  # what the core made of its head; None: refused
        self.headers = headers
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        self.http10 = False
        self.error: Reply | None = None
        self.early = False  # answered before its body was read (then the connection closes)
        # A run still waiting for a runner, and a GET to the queue (it only reads, or waits
        # for a result), leave nobody to answer once the caller hangs up: both are cancelled.
        if isinstance(admitted, _TO_RUNNER) or (
            isinstance(admitted, QueueCall) and admitted.method == b"GET"
        ):
            self.stage = HELD
        else:
            self.stage = SENT

    def mark_sent(self) -> None:
        """The request is on its way to a runner: past the point where a hang-up cancels it."""
        self.stage = SENT

    @classmethod
    def refused(cls, reply: Reply, headers: list[tuple[bytes, bytes]]) -> Exchange:
        """A request answered with ``reply`` without reaching a runner."""
        exchange = cls(None, headers)
        exchange.error = reply
        return exchange

    def method(self) -> str:
        """What the access log names as its method (the parser may be on a later request)."""
        admitted = self.admitted
        if isinstance(admitted, QueueCall):
            return admitted.method.decode("latin-1")
        return "GET" if isinstance(admitted, Upgrade) else "POST"

    def target(self) -> str:
        """What the access log names as its target."""
        admitted = self.admitted
        if isinstance(admitted, QueueCall):
            return admitted.path
        return admitted.target.decode("latin-1") if admitted is not None else ""
