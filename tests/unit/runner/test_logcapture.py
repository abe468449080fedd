"""Tests for per-request log capture: line splitting, limits, the tee and the record factory."""

from __future__ import annotations

import io
import logging

from yurt.runner import logcapture
from yurt.runner.logcapture import MAX_ENTRIES, MAX_MESSAGE, LogBuffer, Tee, capturing


def messages(buffer: LogBuffer) -> list[tuple[str, str]]:
    return [(e["level"], e["message"]) for e in buffer.snapshot()]


def test_writes_become_one_entry_per_line() -> None:
    """Text split across writes is joined into lines; each stream keeps its own partial line."""
    buffer = LogBuffer()
    buffer.write("STDOUT", "hel")
    buffer.write("STDERR", "err\n")
    buffer.write("STDOUT", "lo\nwor")
    buffer.write("STDOUT", "ld\n\n")
    assert messages(buffer) == [
        ("STDERR", "err"),
        ("STDOUT", "hello"),
        ("STDOUT", "world"),
        ("STDOUT", ""),
    ]


def test_close_records_partial_lines() -> None:
    """A line without its newline is recorded when the request ends."""
    buffer = LogBuffer()
    buffer.write("STDOUT", "no newline")
    assert messages(buffer) == []
    buffer.close()
    assert messages(buffer) == [("STDOUT", "no newline")]


def test_long_messages_are_cut_with_a_note() -> None:
    """A message past MAX_MESSAGE characters keeps its start and says how much was cut."""
    buffer = LogBuffer()
    buffer.add("INFO", "x" * (MAX_MESSAGE + 10))
    buffer.write("STDOUT", "y" * (MAX_MESSAGE + 5))
    buffer.write("STDOUT", "y" * 100 + "\n")
    logged, printed = (e["message"] for e in buffer.snapshot())
    assert logged == "x" * MAX_MESSAGE + " [... 10 characters cut]"
    assert printed.startswith("y" * MAX_MESSAGE + " [... ")


def test_past_the_entry_limit_one_note_then_nothing() -> None:
    """After MAX_ENTRIES entries one note from yurt says so, and later output is dropped."""
    buffer = LogBuffer()
    for i in range(MAX_ENTRIES + 5):
        buffer.add("INFO", str(i))
    entries = buffer.snapshot()
    assert len(entries) == MAX_ENTRIES + 1 == buffer.count
    assert entries[-1]["source"] == "yurt"
    assert "capture limit" in entries[-1]["message"]


def test_past_the_character_limit_one_note_then_nothing() -> None:
    """The per-request character limit ends capture the same way."""
    buffer = LogBuffer()
    for _ in range(logcapture.MAX_CHARS // MAX_MESSAGE + 3):
        buffer.add("INFO", "z" * MAX_MESSAGE)
    entries = buffer.snapshot()
    assert sum(len(e["message"]) for e in entries[:-1]) <= logcapture.MAX_CHARS
    assert entries[-1]["source"] == "yurt"


def test_drain_hands_entries_over_once_and_keeps_counting() -> None:
    """drain() returns and forgets what is held; count still counts every entry."""
    buffer = LogBuffer()
    buffer.add("INFO", "a")
    assert [e["message"] for e in buffer.drain()] == ["a"]
    buffer.add("INFO", "b")
    assert [e["message"] for e in buffer.drain()] == ["b"]
    assert buffer.count == 2
    assert buffer.held_chars == 0


def test_tee_writes_through_and_records_only_while_capturing() -> None:
    """The tee always writes to its stream, and records only inside capturing()."""
    out = io.StringIO()
    tee = Tee(out, "STDOUT")
    buffer = LogBuffer()
    tee.write("before\n")
    with capturing(buffer):
        tee.write("during\n")
        tee.write("unfinished")
    tee.write("after\n")
    assert out.getvalue() == "before\nduring\nunfinishedafter\n"
    assert messages(buffer) == [("STDOUT", "during"), ("STDOUT", "unfinished")]
    assert tee.getvalue() == out.getvalue()  # other attributes are the stream's


def test_tee_skips_what_logging_handlers_write() -> None:
    """A StreamHandler writing a record to the tee is not recorded a second time as a print."""
    tee = Tee(io.StringIO(), "STDERR")
    logger = logging.getLogger("yurt.tests.tee")
    handler = logging.StreamHandler(tee)  # type: ignore[arg-type]
    logger.addHandler(handler)
    logger.propagate = False
    buffer = LogBuffer()
    try:
        with capturing(buffer):
            logger.warning("once")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert messages(buffer) == []
    assert tee.stream.getvalue() == "once\n"  # type: ignore[attr-defined]


def test_record_factory_captures_info_and_up_while_capturing() -> None:
    """The record factory records INFO and up, with tracebacks, only inside capturing()."""
    factory = logcapture._capturing_factory(logging.LogRecord, logging.INFO)

    def record(level: int, msg: str, *args: object, exc: bool = False) -> None:
        exc_info = None
        if exc:
            try:
                raise ValueError("bad")
            except ValueError as e:
                exc_info = (type(e), e, e.__traceback__)
        factory("n", level, __file__, 1, msg, args, exc_info)

    buffer = LogBuffer()
    record(logging.WARNING, "outside")
    with capturing(buffer):
        record(logging.DEBUG, "debug")
        record(logging.INFO, "info %s", "arg")
        record(logging.ERROR, "failed", exc=True)
    entries = buffer.snapshot()
    assert [(e["level"], e["message"].splitlines()[0]) for e in entries] == [
        ("INFO", "info arg"),
        ("ERROR", "failed"),
    ]
    assert "ValueError: bad" in entries[1]["message"]


def test_each_line_carries_fals_labels_of_its_request() -> None:
    """Entries carry labels as fal's do: fal_request_id and fal_endpoint of the request."""
    buffer = LogBuffer("0123abcd", "/generate")
    buffer.add("INFO", "hello")
    (entry,) = buffer.drain()
    assert entry["labels"] == {"fal_request_id": "0123abcd", "fal_endpoint": "/generate"}
    bare = LogBuffer()
    bare.add("INFO", "x")
    assert bare.drain()[0]["labels"] == {}
