"""``KVStore``: fal's small key-value store, kept in the app's data directory.

One SQLite file (``<app data dir>/.yurt/kv.sqlite3``) holds every ``db_name`` of the app, so
its runners on one machine share it. Values are strings with a time to live (fal's bounds: 60 s
to 30 days, 30 days when not given).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from yurt.toolkit.download import persistent_dir
from yurt.toolkit.errors import KVStoreException

DEFAULT_TTL = 30 * 24 * 3600
MIN_TTL = 60


class KVStore:
    """A key-value namespace ``db_name``: ``get``, ``set`` (with ``ttl`` seconds), ``delete``."""

    def __init__(self, db_name: str, path: str | Path | None = None) -> None:
        self.db_name = db_name
        self.path = (
            Path(path) if path is not None else Path(persistent_dir()) / ".yurt" / "kv.sqlite3"
        )

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30)
            db.execute(
                "CREATE TABLE IF NOT EXISTS kv (db TEXT, key TEXT, value TEXT, expires REAL, "
                "PRIMARY KEY (db, key))"
            )
            return db
        except (OSError, sqlite3.Error) as exc:
            raise KVStoreException(f"cannot open the key-value store {self.path}: {exc}") from exc

    def get(self, key: str) -> str | None:
        """The value of ``key``, or None when it is not set or has expired."""
        with self._session() as db:
            row = db.execute(
                "SELECT value FROM kv WHERE db = ? AND key = ? AND expires > ?",
                (self.db_name, key, time.time()),
            ).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        """Set ``key`` to ``value`` for ``ttl`` seconds (60 to 2592000; 30 days if None)."""
        ttl = DEFAULT_TTL if ttl is None else ttl
        if not MIN_TTL <= ttl <= DEFAULT_TTL:
            raise KVStoreException(f"ttl={ttl}: must be between {MIN_TTL} and {DEFAULT_TTL}")
        with self._session() as db:
            db.execute(
                "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?)",
                (self.db_name, key, value, time.time() + ttl),
            )

    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is not set."""
        with self._session() as db:
            db.execute("DELETE FROM kv WHERE db = ? AND key = ?", (self.db_name, key))

    def _session(self) -> sqlite3.Connection:
        return _Session(self._connect())  # type: ignore[return-value]


class _Session:
    """A connection that commits and closes on leaving ``with``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.db.commit()
        finally:
            self.db.close()
