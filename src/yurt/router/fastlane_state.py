"""A fast-lane connection's state: where its parser is, and what becomes of its bytes.

Two small machines, each one field of ``FrontProtocol``:

``Phase`` follows the parser through one request. ``IDLE`` (between requests) -> ``HEAD`` (the
request line and headers are being read) -> ``BODY`` -> ``DONE`` (it ended in the read now being
parsed) -> ``IDLE`` at the next read. A request that begins while the phase is ``DONE`` began
mid-read, so its exact bytes are unknown (they are needed only to hand it to the aiohttp face).

``Mode`` says where the connection's bytes go::

    OPEN ----> HAND_OVER   a request for the aiohttp face: parsed on, handed over once the
      |  \\                 replies before it are out
      |   --> UPGRADING    an upgrade taken by the core: later bytes kept for its session
      |          |
      |          v
      |        TUNNEL      the session is open: bytes are copied to the runner
      v
    CLOSING                no new request is taken; the connection closes after the reply
                           being made (from OPEN, HAND_OVER or UPGRADING)
    LINGER                 the last answer is out and the write side shut: what still arrives
                           is dropped until the connection closes (from any mode)

The per-request state (what the core made of it, its body, whether a hang-up cancels it) lives
in ``fastlane_exchange.Exchange``.
"""

from __future__ import annotations

from enum import Enum

from yurt.router.http import Reply, error_reply


class Phase(Enum):
    """Where the parser is in the current request."""

    IDLE = "idle"
    HEAD = "head"
    BODY = "body"
    DONE = "done"


class Mode(Enum):
    """What becomes of the bytes the connection reads."""

    OPEN = "open"
    HAND_OVER = "hand_over"
    UPGRADING = "upgrading"
    TUNNEL = "tunnel"
    CLOSING = "closing"
    LINGER = "linger"


# Module-level names: the hot path compares against these with ``is`` (no attribute lookup).
IDLE, HEAD, BODY, DONE = Phase.IDLE, Phase.HEAD, Phase.BODY, Phase.DONE
OPEN, HAND_OVER, UPGRADING = Mode.OPEN, Mode.HAND_OVER, Mode.UPGRADING
TUNNEL, CLOSING, LINGER = Mode.TUNNEL, Mode.CLOSING, Mode.LINGER

# The modes that CLOSING replaces; TUNNEL and LINGER end in a close of their own.
CLOSABLE = frozenset((OPEN, HAND_OVER, UPGRADING))


def read_timeout(
    phase: Phase,
    now: float,
    head_began: float,
    body_began: float,
    body_bytes: int,
    limits: tuple[float, float, float],
) -> Reply | None:
    """The 408 for a request whose head or body arrives too slowly by ``now``, or None.

    ``limits``: the header timeout, the body timeout and the minimum body rate (bytes/s).
    """
    header_timeout, body_timeout, min_rate = limits
    if phase is HEAD:
        if now - head_began <= header_timeout:
            return None
        detail = f"the request's headers took longer than {header_timeout:g}s"
    elif phase is BODY:
        if now - body_began <= body_timeout + body_bytes / min_rate:
            return None
        detail = (
            f"the request body arrived slower than {min_rate:g} bytes/s "
            f"(after the first {body_timeout:g}s)"
        )
    else:
        return None
    return error_reply(408, "request_read_timeout", detail)
