"""Completed requests kept in memory for the status and result reads that follow completion.

Most results are fetched right after their request completes; serving those from memory spares
the store a read. Bounded by count and by bytes (result bodies and logs); oldest go first. Pure.
"""

from __future__ import annotations

import collections

from yurt.queue.store import Record

RECENT_MAX = 4096
RECENT_BYTES = 32 * 1024 * 1024


def record_size(record: Record) -> int:
    """Roughly what ``record`` holds in memory: its result body and its log messages."""
    size = len(record.result.body) if record.result is not None else 0
    if record.logs:
        size += sum(len(str(e.get("message", ""))) + 64 for e in record.logs)
    return size


class RecentRecords:
    """The most recently completed records, in completion order."""

    def __init__(self, max_records: int = RECENT_MAX, max_bytes: int = RECENT_BYTES) -> None:
        self.max_records, self.max_bytes = max_records, max_bytes
        self._records: collections.OrderedDict[str, Record] = collections.OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    def get(self, request_id: str) -> Record | None:
        """The record of ``request_id`` if it is still held."""
        return self._records.get(request_id)

    def add(self, record: Record) -> None:
        """Hold ``record``, letting the oldest go past either bound."""
        records = self._records
        records[record.id] = record
        self.bytes += record_size(record)
        while len(records) > self.max_records or self.bytes > self.max_bytes:
            _, old = records.popitem(last=False)
            self.bytes -= record_size(old)

    def forget_before(self, cutoff: float) -> None:
        """Let go of records completed before ``cutoff`` (purged from the store as well)."""
        records = self._records
        while records:
            oldest = next(iter(records.values()))
            if (oldest.completed_at or 0.0) >= cutoff:
                break
            self.bytes -= record_size(records.pop(oldest.id))
