"""What the request core hands a face: the kinds of admitted request, and the answers.

``RequestCore.admit`` (``core.py``) says what a request is (a ``SyncRun``, a ``QueueCall``, an
``Upgrade``); ``serve`` answers it with a reply, a ``Stream`` or a ``Tunnel``. Kept apart from
the core so that the faces and the queue name these without importing the core's decisions.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from yurt.access import ANONYMOUS, Caller
from yurt.router.dispatch import AppRoute
from yurt.router.http import Reply
from yurt.router.tunnel import Tunnel

Header = tuple[bytes, bytes]


class Unknown(enum.Enum):
    """A face that did not look for the caller's timeout header while parsing."""

    UNKNOWN = enum.auto()


UNKNOWN = Unknown.UNKNOWN


@dataclass(slots=True)
class QueueCall:
    """One request to the queue, whichever face read it."""

    method: bytes
    path: str  # decoded, starting with /queue/
    query: str  # raw, as sent
    headers: Sequence[Header]
    body: bytes
    base: str  # scheme://host the request came to, for the URLs handed back
    caller: Caller = ANONYMOUS  # whose key it carries (yurt.access)


@dataclass(slots=True)
class Stream:
    """A reply sent as it is made: ``chunks`` yields each chunk and whether it is the last.

    A face frames each chunk as it comes (chunked transfer-encoding) and, should the stream end
    without its last chunk, closes the connection so that the caller cannot take it as complete.
    """

    request_id: str
    chunks: AsyncGenerator[tuple[bytes, bool], None]
    status: int = 200
    headers: Sequence[Header] = ()
    # Whether its next chunk is in already: if not, a face sends the head at once rather than
    # with that chunk (None: the head goes with the first chunk, which comes at once).
    ready: Callable[[], bool] | None = None


@dataclass(slots=True)
class SyncRun:
    """A sync run admitted: the app's route, the runner's target, the caller's start timeout."""

    route: AppRoute
    target: bytes
    start_timeout: float | None = None
    caller: Caller = ANONYMOUS  # whose key it carries: its quota is counted while it runs


@dataclass(slots=True)
class Upgrade:
    """A websocket upgrade admitted, to an app's public path: spliced to a runner after its
    ``101``, holding one of the runner's slots for the session."""

    route: AppRoute
    target: bytes
    start_timeout: float | None = None


Admitted = SyncRun | QueueCall | Upgrade
# What a face sends: a reply and its request id, a stream (which carries its own), or a
# runner's connection after its 101, to splice.
Answer = tuple[Reply, str] | Stream | Tunnel
