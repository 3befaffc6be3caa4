"""Append raw samples to a recording, one SQLite transaction per sample.

Layer: store. Never textual.

Crash safety comes from SQLite's write-ahead log (https://www.sqlite.org/wal.html):
each `append` is one committed transaction, so a killed recorder loses at most the
sample it was writing, and a reader (follow mode) sees every committed sample while
the writer runs. With `synchronous=NORMAL` in WAL mode a commit survives a process
crash but not a power loss until the next checkpoint (https://www.sqlite.org/
pragma.html#pragma_synchronous); the writer checkpoints every `CHECKPOINT_EVERY`
samples, which bounds that window without an fsync per sample. On `close()` the log
is folded back and the file returns to rollback-journal mode: one self-contained
file to copy or attach to a ticket.

Samples are written in blocks (format 3, `kvmtop.store.delta`): a block starts with
a reference sample (its JSON in `dictionaries`), and each row of the block stores
its integers as differences, so a row is ~a tenth of the sample's compressed JSON.
A sample whose shape differs from the block's (a guest started, a device added)
starts a new block.
"""

from __future__ import annotations

import errno
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import zstandard

from kvmtop.model.sample import Sample
from kvmtop.store import blob, delta
from kvmtop.store.codec import encode
from kvmtop.store.meta import (
    FORMAT_VERSION,
    UPGRADABLE_FORMATS,
    RecordingMeta,
    StoreError,
    StoreWriteError,
    describe_host,
    meta_from_rows,
    meta_rows,
    new_meta,
    write_error,
)
from kvmtop.store.outfile import open_output
from kvmtop.store.schema import (
    APPLICATION_ID,
    DDL,
    ROLLUP_TABLES,
    ROLLUPS_DDL,
    application_id,
    read_meta_rows,
)

DICTIONARY_EVERY = 200
"""Samples per block (reference sample). A reference costs about one sample's JSON
compressed alone, and a checkpoint row's differences from the reference grow with
the distance; bench/bench_store.py measures the choice (`--alternatives`)."""

CHAIN = 10
"""Rows from one checkpoint (a row readable from the reference alone) to the next:
reading a sample decodes at most this many rows, and damage to a row loses at most
the rest of its chain (bench/bench_store.py measures 5/10/20)."""

ROW_LEVEL = 3
"""zstd level of a delta row (its text is a few KB of digits; higher levels gained
little for their CPU: bench/bench_store.py)."""

CHECKPOINT_EVERY = 30
"""Samples between WAL checkpoints: the most a power loss can take (see module doc)."""

PAGE_SIZE = 1024
"""Small pages waste less of the last overflow page of each row
(https://www.sqlite.org/fileformat2.html §1.6 "overflow"): with whole-sample rows
(format 2) 1 KiB pages halved the file's overhead over its blobs; with delta rows it
matters little between 512 B and 4 KiB pages
(bench/bench_store.py --alternatives: bench/results/measurements.md#sqlite-page-size)."""

_STARTS = (
    f"(substr(data, 1, 1) != X'{delta.TAG.hex()}' "
    f"OR substr(data, 1, 2) = X'{delta.CHECKPOINT_PREFIX.hex()}')"
)
"""SQL: the row starts a chain (a whole sample, or a delta row's checkpoint)."""

RETENTION_LOW_WATER = 0.9
"""Size retention trims to this fraction of the limit, so it does not run every tick."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history a recording keeps; the newest sample is always kept.

    Attributes:
        max_bytes: database size above which the oldest samples are deleted (the
            write-ahead log adds up to `CHECKPOINT_EVERY` samples on top).
        max_age_s: samples older than this, relative to the newest one, are deleted.

    Samples go in whole chains (`CHAIN` rows from one checkpoint): by age the first
    kept sample keeps the older rows of its chain, by size the cut is at a checkpoint.
    """

    max_bytes: int | None = None
    max_age_s: float | None = None


class _Block:
    """The block being written: its reference and what its next row is stored
    against (the integers of the reference and of the last two rows)."""

    def __init__(self, shape: delta.Shape) -> None:
        self.shape = shape
        """The reference: the block's first sample (the `dictionaries` row)."""
        self.dict_id: int | None = None
        self.rows = 0
        self._chain = 0
        self._prev: list[int] = []
        self._prev2: list[int] = []

    def _order(self) -> int:
        if self.rows == 0 or self._chain >= CHAIN:
            return 0
        return 1 if self._chain == 1 else 2

    def row(self, shape: delta.Shape, compressor: zstandard.ZstdCompressor) -> bytes:
        """The next row's bytes for a sample of this block's shape."""
        order = self._order()
        bases = ((self.shape.ints,), (self._prev,), (self._prev, self._prev2))[order]
        return delta.pack_row(
            order, delta.differences(order, shape.ints, bases), shape.floats, compressor
        )

    def advance(self, shape: delta.Shape) -> None:
        """The row for `shape` was committed."""
        self._chain = 1 if self._order() == 0 else self._chain + 1
        self._prev2, self._prev = self._prev, shape.ints
        self.rows += 1


class StoreWriter:
    """Writes raw samples to a recording file (implements `kvmtop.feed.protocols.SampleSink`).

    An existing recording written by the same format and schema is appended to (a
    restarted recorder continues its file); anything else at `path` is refused. The
    file is opened by `kvmtop.store.outfile.open_output`: created with mode 0600, never
    through a symbolic link; an empty file is taken (and set to 0600) only from its
    own user. SQLite gives the -wal and -shm files the database file's permissions
    (os_unix.c, findCreateFileMode).

    Args:
        path: the recording file; created with mode 0600 when absent.
        retention: size/age limits applied after each append.
        clock: wall clock for the header's creation time.
        new: `path` must not exist (a slice).

    Raises:
        StoreWriteError: the file cannot be created or written (read-only, no space),
            or kvmtop refuses to write it: a symbolic link, an empty file of another
            user, a path replaced while it was opened.
        StoreError: `path` holds something other than a compatible recording.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
        new: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.retention = retention or Retention()
        self._rows = zstandard.ZstdCompressor(level=ROW_LEVEL, write_checksum=True)
        self._block: _Block | None = None
        self._appended = 0
        fd = self._create(new)
        try:
            self._conn = self._open()
            try:
                self._check_same_file(fd)
                self._meta = self._prepare(clock)
            except BaseException:
                self._conn.close()
                raise
        finally:
            os.close(fd)
        self._described = bool(self._meta.collectors)

    @property
    def meta(self) -> RecordingMeta:
        """The header as written so far (host facts appear after the first sample)."""
        return self._meta

    def _create(self, new: bool) -> int:
        """The file, created or opened by kvmtop itself (see the class doc)."""
        try:
            return open_output(self.path, new=new)
        except OSError as exc:  # OutputFileError included: a link, another user's file
            raise write_error(self.path, exc) from exc

    def _open(self) -> sqlite3.Connection:
        try:
            # mode=rw: SQLite opens the file `_create` made and never creates one
            # itself (it would follow a symbolic link put there meanwhile and create
            # its target with the umask's mode: https://www.sqlite.org/uri.html).
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
            conn = sqlite3.connect(
                f"{Path(self.path).absolute().as_uri()}?mode=rw",
                uri=True,
                isolation_level=None,
                timeout=1.0,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise write_error(self.path, exc) from exc
        return conn

    def _check_same_file(self, fd: int) -> None:
        """Refuse to write when SQLite opened another file than `_create` checked (the
        path was replaced in between, by a symbolic link for instance): SQLite has
        read the file (its header) but written nothing yet."""
        try:
            self._conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.Error:
            return  # not a database, cannot be read: `_prepare` says which
        try:
            same = os.path.samestat(os.lstat(self.path), os.fstat(fd))
        except OSError:
            same = False
        if not same:
            raise write_error(
                self.path,
                OSError(errno.EAGAIN, "was replaced while kvmtop opened it; nothing written"),
            )

    def _prepare(self, clock: Callable[[], float]) -> RecordingMeta:
        """Create the schema in an empty file, or check and resume an existing one."""
        conn = self._conn
        try:
            # Both take effect only in a database nothing has read from yet (an
            # existing recording keeps its own): page size as above; INCREMENTAL lets
            # retention give freed pages back to the filesystem.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        except sqlite3.OperationalError as exc:  # read-only, cannot open, I/O error
            raise write_error(self.path, exc) from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            raise StoreError(f"{self.path}: exists and is not a kvmtop recording ({exc})") from None
        try:
            if tables == 0:
                conn.execute("PRAGMA journal_mode = WAL")
                meta = new_meta(clock())
                with self._transaction():
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
                    for statement in DDL.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    for statement in ROLLUPS_DDL:
                        conn.execute(statement)
                    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta_rows(meta))
            else:
                meta = self._resume()
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise write_error(self.path, exc) from exc
        return meta

    def _resume(self) -> RecordingMeta:
        """Check an existing file is a recording this kvmtop may append to (its
        next sample starts a new block)."""
        if application_id(self._conn) != APPLICATION_ID:
            raise StoreError(f"{self.path}: exists and is not a kvmtop recording")
        meta = meta_from_rows(self.path, read_meta_rows(self._conn))
        current = new_meta(meta.created_s)
        upgrade = meta.format_version in UPGRADABLE_FORMATS
        if upgrade:
            meta = replace(meta, format_version=FORMAT_VERSION)
        with self._transaction():
            for statement in ROLLUPS_DDL:  # IF NOT EXISTS: tables a file may lack
                self._conn.execute(statement)
            if upgrade:
                self._conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
                self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta_rows(meta))
        if (meta.format_version, meta.schema_version) != (
            current.format_version,
            current.schema_version,
        ):
            raise StoreError(
                f"{self.path}: written by kvmtop {meta.kvmtop_version} (file format "
                f"{meta.format_version}, sample schema {meta.schema_version}); "
                "record to a new file"
            )
        return meta

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.rollback()
            raise
        self._conn.execute("COMMIT")

    def append(self, sample: Sample) -> None:
        """Commit one sample, then apply retention.

        Raises:
            StoreWriteError: the write failed; samples committed before are intact
                (and this one too when its `committed` is set).
        """
        doc = encode(sample)
        shape = delta.hollow(doc)
        block = self._block
        if block is None or block.rows >= DICTIONARY_EVERY or not block.shape.same_as(shape):
            # A new block; a sample whose holes cannot be found again is stored whole.
            block = _Block(shape) if shape.parts() is not None else None
        meta = describe_host(self._meta, sample) if not self._described else None
        try:
            with self._transaction():
                if meta is not None:
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO meta VALUES (?, ?)", meta_rows(meta)
                    )
                if block is None:  # stored whole, outside any block
                    row: tuple[int | None, bytes] = (None, blob.pack(blob.dumps_doc(doc)))
                else:
                    if block.dict_id is None:
                        block.dict_id = self._conn.execute(
                            "INSERT INTO dictionaries (data) VALUES (?)",
                            (blob.pack(delta.pack_reference(block.shape)),),
                        ).lastrowid
                    row = (block.dict_id, block.row(shape, self._rows))
                self._conn.execute(
                    "INSERT INTO samples (t, dict_id, data) VALUES (?, ?, ?)",
                    (sample.wall_s, *row),
                )
        except sqlite3.Error as exc:
            raise write_error(self.path, exc) from exc
        # Committed: only now does the in-memory state move on.
        if meta is not None:
            self._meta, self._described = meta, True
        if block is not None:
            block.advance(shape)
        self._block = block  # None after a whole sample: the next starts a block
        self._appended += 1
        try:
            if self._appended % CHECKPOINT_EVERY == 0:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._apply_retention(sample.wall_s)
        except (sqlite3.Error, StoreWriteError) as exc:
            raise write_error(self.path, exc, committed=True) from exc

    def append_rollup(
        self, first_s: float, last_s: float, samples: int, data: bytes, hour: bool = False
    ) -> None:
        """Commit one rollup (of a minute, or with `hour` of an hour): `data` derived
        from the `samples` samples written from `first_s` to `last_s` (`kvmtop.report.index`
        makes and reads it; compressed here).

        Raises:
            StoreWriteError: the write failed; what was committed before is intact.
        """
        try:
            with self._transaction():
                self._conn.execute(
                    f"INSERT OR REPLACE INTO {ROLLUP_TABLES[hour]} VALUES (?, ?, ?, ?)",
                    (first_s, last_s, samples, blob.pack(data)),
                )
        except sqlite3.Error as exc:
            raise write_error(self.path, exc) from exc

    def clear_rollups(self) -> None:
        """Delete every rollup (before the index is rebuilt).

        Raises:
            StoreWriteError: the write failed.
        """
        try:
            with self._transaction():
                for table in ROLLUP_TABLES.values():
                    self._conn.execute(f"DELETE FROM {table}")
        except sqlite3.Error as exc:
            raise write_error(self.path, exc) from exc

    def _apply_retention(self, newest_s: float) -> None:
        """Delete the oldest samples beyond the age and size limits (never the newest),
        in whole chains: a row is deleted only with the rows it is stored against."""
        r = self.retention
        if r.max_age_s is None and r.max_bytes is None:
            return
        deleted = 0
        with self._transaction():
            if r.max_age_s is not None:
                first = self._scalar(
                    "SELECT min(id) FROM samples WHERE t >= ?", newest_s - r.max_age_s
                )
                # Keep the older rows of the first kept sample's chain (fewer than CHAIN).
                deleted += self._delete_before(
                    self._scalar(f"SELECT max(id) FROM samples WHERE id <= ? AND {_STARTS}", first)
                    or first
                )
            if r.max_bytes is not None:
                deleted += self._trim_to_size(r.max_bytes)
            if deleted:
                self._conn.execute(
                    "DELETE FROM dictionaries WHERE id < "
                    "(SELECT coalesce(min(dict_id), 0) FROM samples)"
                )
                for table in ROLLUP_TABLES.values():
                    self._conn.execute(
                        f"DELETE FROM {table} WHERE first_s < (SELECT min(t) FROM samples)"
                    )
        if deleted:
            self.release_free_pages()

    def _scalar(self, sql: str, *args: object) -> int | None:
        value: int | None = self._conn.execute(sql, args).fetchone()[0]
        return value

    def _delete_before(self, index: int | None) -> int:
        if index is None:
            return 0
        return self._conn.execute("DELETE FROM samples WHERE id < ?", (index,)).rowcount

    def release_free_pages(self) -> None:
        """Give the pages deleted rows left free back to the filesystem, then fold the
        log into the file so its size on disk drops now (https://www.sqlite.org/
        pragma.html#pragma_incremental_vacuum, #pragma_wal_checkpoint).

        Raises:
            StoreWriteError: the file cannot be written.
        """
        try:
            self._conn.execute("PRAGMA incremental_vacuum")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise write_error(self.path, exc) from exc

    def _trim_to_size(self, max_bytes: int) -> int:
        used = self._used_bytes()
        if used <= max_bytes:
            return 0
        rows = self._conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        if rows <= 1:
            return 0
        excess = used - RETENTION_LOW_WATER * max_bytes
        victims = min(rows - 1, max(1, math.ceil(excess / (used / rows))))
        first = self._scalar("SELECT min(id) FROM samples") or 0
        # Cut at the chain start after the victims, but never past the newest's.
        after = self._scalar(
            f"SELECT min(id) FROM samples WHERE id >= ? AND {_STARTS}", first + victims
        )
        newest = self._scalar(f"SELECT max(id) FROM samples WHERE {_STARTS}")
        return self._delete_before(
            min((i for i in (after, newest) if i is not None), default=first + victims)
        )

    def _used_bytes(self) -> int:
        """Bytes of the database file, free pages included: pages freed by the
        rows deleted since the last trim stay in the file until a later trim's
        incremental vacuum, so they count against the limit too."""
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        return int(pages * page_size)

    def close(self) -> None:
        """Fold the log into the file and close it. Safe to call twice.

        When a reader still has the file open (follow mode) the file stays in WAL
        mode; nothing is lost either way.
        """
        conn = self._conn
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error:
            pass  # busy (a follower reads), full disk or already closed: WAL keeps the data
        conn.close()
