"""The SQLite layout of a recording, shared by the writer and the reader.

Layer: store. Never textual.

A recording is one SQLite file (https://www.sqlite.org/fileformat2.html) a user can
open with the `sqlite3` shell: `SELECT id, datetime(t, 'unixepoch') FROM samples`.

    meta(key, value)                 one row per `RecordingMeta` field, value in JSON
    dictionaries(id, data)           zstd frame of a reference sample's JSON
    samples(id, t, dict_id, data)    t = wall time (Unix s), indexed for seeking;
                                     data = zstd frame against dictionaries[dict_id]
    rollups(first_s, last_s, samples, data)
    hour_rollups(...)                (format 2) a cache derived from the samples
                                     from first_s to last_s, per minute and per
                                     hour: zstd frame of a JSON document only
                                     `kvmtop.report.index` reads

Row ids are contiguous: rows are only appended, and retention deletes the oldest.
"""

from __future__ import annotations

import sqlite3

APPLICATION_ID = 0x6B766D74
"""`PRAGMA application_id` of a kvmtop recording ("kvmt"), so file(1) and readers can
tell it from another SQLite file (https://www.sqlite.org/pragma.html#pragma_application_id)."""

DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE dictionaries (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    dict_id INTEGER REFERENCES dictionaries (id),
    data BLOB NOT NULL
);
CREATE INDEX samples_t ON samples (t);
"""

ROLLUP_TABLES = {False: "rollups", True: "hour_rollups"}
"""The index's tables (format 2): per minute, and per hour (minutes merged)."""

ROLLUPS_DDL = [
    f"""
CREATE TABLE IF NOT EXISTS {table} (
    first_s REAL PRIMARY KEY,
    last_s REAL NOT NULL,
    samples INTEGER NOT NULL,
    data BLOB NOT NULL
)
"""
    for table in ROLLUP_TABLES.values()
]
"""Format 2 adds these tables; a writer resuming an older file adds them."""


def read_meta_rows(conn: sqlite3.Connection) -> dict[str, str]:
    """The `meta` table as a dict (raises sqlite3.Error when it is absent)."""
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def application_id(conn: sqlite3.Connection) -> int:
    """The file's `PRAGMA application_id`."""
    row = conn.execute("PRAGMA application_id").fetchone()
    return int(row[0]) if row else 0
