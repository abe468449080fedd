"""Which bytes of a file a GET asks for (RFC 9110 §14: ``Range``, ``If-Range``). Pure.

The store on disk leaves this to aiohttp's ``FileResponse``; files in a bucket are streamed by
the router, which asks the bucket for the same span (a ranged GetObject).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


@dataclass(frozen=True)
class Span:
    """The answer to a GET: ``status`` 200 (all), 206 (``first`` to ``last``, inclusive) or
    416 (nothing: the range lies past the end)."""

    status: int
    first: int
    last: int

    @property
    def length(self) -> int:
        """How many bytes the answer carries."""
        return 0 if self.status == 416 else self.last - self.first + 1


def whole(size: int) -> Span:
    """All ``size`` bytes."""
    return Span(200, 0, size - 1)


def plan(range_header: str | None, if_range: str | None, size: int, validators: set[str]) -> Span:
    """The span to send of a file of ``size`` bytes. A ``Range`` of another unit, of several
    ranges or malformed is ignored (all is sent, as RFC 9110 §14.2 allows), as it is when
    ``If-Range`` names none of ``validators`` (the file's strong ETag and its Last-Modified
    date). A range past the end is 416."""
    if not range_header:
        return whole(size)
    if if_range is not None and if_range.strip() not in validators:
        return whole(size)
    match = _SPEC.fullmatch(range_header)
    if match is None:
        return whole(size)
    start, end = match.groups()
    if not start and not end:
        return whole(size)
    if not start:  # the last ``end`` bytes
        suffix = int(end)
        if suffix == 0 or size == 0:
            return Span(416, 0, -1)
        return Span(206, max(0, size - suffix), size - 1)
    first = int(start)
    if end and int(end) < first:  # invalid: ignored
        return whole(size)
    if first >= size:
        return Span(416, 0, -1)
    return Span(206, first, min(int(end) if end else size - 1, size - 1))
