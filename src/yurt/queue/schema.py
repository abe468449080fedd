"""The queue store's tables, and what an older store gains as it is opened.

One SQLite file: the requests (a row per accepted request, kept after it completes until it is
purged) and the webhook outbox. Columns added since the first release are added to an older
file when it is opened, so a data dir carries over.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    query TEXT NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    priority INTEGER NOT NULL,
    start_timeout REAL,
    hint TEXT,
    no_retry INTEGER NOT NULL,
    webhook TEXT,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    completed_at REAL,
    result_status INTEGER,
    result_headers BLOB,
    result_body BLOB,
    error TEXT,
    error_type TEXT,
    inference_time REAL,
    logs BLOB,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
-- A partial index: a completed request leaves it, so it holds only what may run again. Rows
-- are appended as requests are created; the purge finds old ones by rowid, with no index.
DROP INDEX IF EXISTS requests_open;
DROP INDEX IF EXISTS requests_completed;
DROP INDEX IF EXISTS requests_done;
CREATE INDEX IF NOT EXISTS requests_unfinished ON requests (app_id, state)
    WHERE state != 'COMPLETED';
CREATE TABLE IF NOT EXISTS webhooks (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL,
    state TEXT NOT NULL,
    last_error TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (state, next_at);
"""


def prepare(db: sqlite3.Connection, durability: str) -> None:
    """The store's settings and tables, and the columns an older store lacks."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={durability.upper()}")
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    if "cancel_requested" not in columns:  # a store made before cancellations were kept
        db.execute("ALTER TABLE requests ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")
    if "owner" not in columns:  # a store made before requests had owners: none has one
        db.execute("ALTER TABLE requests ADD COLUMN owner TEXT")
