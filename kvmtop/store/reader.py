"""Read a recording: header, seek by time, samples by index, damaged rows skipped.

Layer: store. Never textual.

The reader opens the file read-only, so it works on a file another process is still
writing (WAL readers never block the writer: https://www.sqlite.org/wal.html) and
every query sees the samples committed so far (follow mode). Indices are the
samples' row ids: contiguous, increasing in recording order, and stable while the
file grows; retention may delete the oldest, so the first index is not always 1.

A sample that cannot be read (a damaged page, a blob whose zstd checksum fails, JSON
that does not describe a sample, a row a damaged page garbled) is skipped: `read`
returns None and `notices` says so for the UI to show, one line per run of
consecutive samples lost. Reading goes on past it: `next_index` and `iter` walk the
same indices whatever the damage, so every reader of a file reads the same samples.
Only a file that is not a recording, whose header is unreadable or newer than this
kvmtop, or that must be rolled back by a writer first, raises `StoreError`. Decoding
a row (whole samples, delta chains) is `kvmtop.store.rows`'.
"""

from __future__ import annotations

import enum
import math
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kvmtop.model.sample import Sample
from kvmtop.store import blob, sqlitefile
from kvmtop.store.meta import RecordingMeta, StoreError, meta_from_rows
from kvmtop.store.notices import Notices
from kvmtop.store.rows import MAX_CHAIN, RowDecoder, column_blob
from kvmtop.store.schema import APPLICATION_ID, ROLLUP_TABLES, application_id, read_meta_rows

BATCH = 64
"""Rows fetched per query while iterating (each query is its own read transaction)."""


def _is_number(value: object) -> bool:
    """A column a damaged page may have garbled holds a number (REAL or INTEGER)."""
    return isinstance(value, float | int) and not isinstance(value, bool)


def _time(value: object) -> float | None:
    """A time column's value; None when absent or not a number (a damaged row)."""
    return float(value) if _is_number(value) else None  # type: ignore[arg-type]


def _nonempty(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


class _Row(enum.Enum):
    """What a point lookup of one row id found."""

    FOUND = "found"
    ABSENT = "absent"
    DAMAGED = "damaged"
    """The pages on the way to it cannot be read."""


class StoreReader:
    """A recording opened for reading.

    Args:
        path: the recording file.

    Raises:
        StoreError: no such file, not a kvmtop recording, damaged header, a hot
            journal that must be rolled back first, or written by a newer kvmtop
            (the message says which and what to do).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._notes = Notices()
        self._header = self._check_file()
        # Before SQLite opens it (a connection may create an empty log).
        self._logged = _nonempty(f"{self.path}-wal")
        self._conn = self._connect("mode=ro")
        try:
            try:
                self.meta: RecordingMeta = self._read_meta()
            except sqlite3.OperationalError as exc:
                self._conn.close()
                self._conn = self._reopen(exc)
                self.meta = self._read_meta()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"{self.path}: damaged or truncated recording: {exc}") from None
        except BaseException:
            self._conn.close()
            raise
        self._decoder = RowDecoder(self._conn)
        self._check_extent()

    # ------------------------------------------------------------------ opening

    def _check_file(self) -> sqlitefile.Header | None:
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(sqlitefile.MAGIC))
            header = sqlitefile.read_header(self.path)
        except FileNotFoundError:
            raise StoreError(f"{self.path}: no such recording") from None
        except IsADirectoryError:
            raise StoreError(f"{self.path}: is a directory, not a recording") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc.strerror}") from None
        if not head:
            raise StoreError(f"{self.path}: empty file, not a kvmtop recording")
        if head != sqlitefile.MAGIC:
            raise StoreError(f"{self.path}: not a kvmtop recording (not an SQLite file)")
        return header

    def _connect(self, query: str) -> sqlite3.Connection:
        uri = f"{Path(self.path).absolute().as_uri()}?{query}"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            # A file shorter than its header says (a cut copy) is refused whole
            # unless writable_schema is on (btree.c lockBtree: nPage > nPageFile is
            # SQLITE_CORRUPT); with it, every page before the cut reads. The
            # connection is read-only, so the pragma cannot change the file.
            conn.execute("PRAGMA writable_schema = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from None
        return conn

    def _reopen(self, exc: sqlite3.OperationalError) -> sqlite3.Connection:
        """A connection that can read the file where a plain read-only one could not
        (`exc` says why), or StoreError saying what to do."""
        name = getattr(exc, "sqlite_errorname", "")
        journal = f"{self.path}-journal"
        if name == "SQLITE_READONLY_ROLLBACK":
            # A hot journal: a write was interrupted, and only a connection that may
            # write rolls it back (https://www.sqlite.org/fileformat2.html §4.1). A
            # journal is hot only once its header is filled in, which SQLite 3.40 does
            # when it syncs the journal before changing the file (measured: killed
            # earlier, the header is zeros and the file reads as usual), so the file
            # may hold half of the write: reading it as it is (immutable=1) is unsafe.
            raise StoreError(
                f"{self.path}: a write to it was interrupted and its journal ({journal}) "
                "must be rolled back before it can be read; as a user who may write the "
                f"file and its directory, run `sqlite3 {self.path} 'PRAGMA quick_check'` "
                f"(any SQLite program that opens it for writing rolls it back), and keep "
                f"{journal} until then"
            )
        shm = f"{self.path}-shm"
        if (
            name.startswith("SQLITE_CANTOPEN")
            and self._header is not None
            and self._header.wal
            and not os.path.exists(shm)
        ):
            # WAL mode needs the wal-index in FILE-shm, which a read-only connection
            # creates when it is missing; in a directory it may not write it cannot.
            # Without it, a connection in EXCLUSIVE locking mode keeps the wal-index
            # in its own memory and still reads FILE-wal (https://www.sqlite.org/
            # wal.html#noshm); the unix-none VFS takes no file locks, so nothing
            # needs the missing file. Safe because no writer is at work: a recorder
            # writing the file would have made FILE-shm.
            conn = self._connect("mode=ro&vfs=unix-none")
            try:
                conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            except sqlite3.Error as again:
                conn.close()
                raise StoreError(f"{self.path}: cannot open: {again}") from None
            log = f" and its log {self.path}-wal" if self._logged else ""
            self._notes.fact(
                f"cannot create {shm} (its directory is read-only to this user): "
                f"read the file{log} without it, as no recorder is writing it"
            )
            return conn
        raise exc

    def _read_meta(self) -> RecordingMeta:
        if application_id(self._conn) != APPLICATION_ID:
            if self._header is not None and self._header.wal and not self._logged:
                # A file in WAL mode keeps the transactions since its last checkpoint
                # in FILE-wal (https://www.sqlite.org/wal.html): a copy made without
                # it may hold nothing of its own.
                raise StoreError(
                    f"{self.path}: an SQLite file in WAL mode without its log: its "
                    f"content is in {self.path}-wal, which is missing; copy that file "
                    "next to it (a recorder folds the log into the file when it stops, "
                    "so copy a recording after that, or both files together)"
                )
            raise StoreError(
                f"{self.path}: not a kvmtop recording (an SQLite file of another application)"
            )
        return meta_from_rows(self.path, read_meta_rows(self._conn))

    def _check_extent(self) -> None:
        """A notice when the file is shorter than its header says (a cut copy), or
        when its schema (page 1) is damaged in a way SQLite still reads: the table
        of samples and its time index disagree on whether there are any (one points
        at another page; both are written in the same transactions), or the table
        has rows without ids (its `id` is no longer the row id)."""
        if self._header is not None and not self._logged:
            cut = sqlitefile.truncated(self.path, self._header)
            if cut is not None:
                self._notes.fact(
                    f"the file is cut short ({cut[0]} of {cut[1]} bytes): the "
                    "samples stored past the cut are lost"
                )
        try:
            in_table = self._value("SELECT 1 FROM samples NOT INDEXED LIMIT 1")
            in_index = self._value("SELECT 1 FROM samples INDEXED BY samples_t LIMIT 1")
            first = self._value("SELECT min(id) FROM samples")
        except sqlite3.DatabaseError:
            return  # damaged pages: found row by row
        if (in_table is None) != (in_index is None) or (in_table is not None and first is None):
            self._notes.fact("its schema is damaged: the samples it holds cannot be found")

    # ------------------------------------------------------------------ extent
    #
    # The rows are in two b-trees of their own (https://www.sqlite.org/
    # fileformat2.html §2): the table, by id, and the time index, (t, id). A damaged
    # page in one leaves the other whole, so each question below is answered by the
    # table first and by the index when the table cannot. Ids are contiguous from the
    # first to the last, so a row that cannot be read still has its place.

    def _value(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        """One value, None when absent (raises sqlite3.DatabaseError on damage)."""
        row = self._conn.execute(sql, args).fetchone()
        return row[0] if row else None

    def _answer(self, *queries: str, args: tuple[Any, ...] = ()) -> Any:
        """The value of the first of `queries` that can be answered; None when none
        can (every b-tree it could use is damaged)."""
        failed = False
        for sql in queries:
            try:
                value = self._value(sql, args)
            except sqlite3.DatabaseError:
                failed = True
                continue
            # "None" from a b-tree standing in for a damaged one proves nothing: a
            # damaged schema may point it at the wrong page.
            if value is not None or not failed:
                return value
        return None

    def _probe(self, index: int) -> _Row:
        """Whether the row `index` exists (its pages are not read)."""
        try:
            found = self._value("SELECT 1 FROM samples WHERE id = ?", (index,))
        except sqlite3.DatabaseError:
            return _Row.DAMAGED
        return _Row.FOUND if found else _Row.ABSENT

    def first_index(self) -> int | None:
        """Index of the oldest sample, None when the file holds none."""
        return self._edge(
            min,
            "SELECT min(id) FROM samples",
            "SELECT id FROM samples INDEXED BY samples_t ORDER BY t, id LIMIT 1",
            lost="the first sample cannot be found",
        )

    def last_index(self) -> int | None:
        """Index of the newest committed sample, None when the file holds none."""
        return self._edge(
            max,
            "SELECT max(id) FROM samples",
            "SELECT id FROM samples INDEXED BY samples_t ORDER BY t DESC, id DESC LIMIT 1",
            lost="the last sample cannot be found",
        )

    def _edge(
        self, pick: Callable[[list[int]], int], table: str, index: str, *, lost: str
    ) -> int | None:
        """The first (`pick` min) or last (max) index by the table and by the time
        index (its first or last in time), the outer one of the two. Both are asked:
        a damaged page may garble a key at the edge of either b-tree, and the table
        alone would then hide every sample on one side of it (a first key garbled
        to 53 in a file of 40). Each costs one walk down its b-tree."""
        found: list[int] = []
        why: sqlite3.DatabaseError | None = None
        for sql in (table, index):
            try:
                value = self._value(sql)
            except sqlite3.DatabaseError as exc:
                why = exc
                continue
            if isinstance(value, int):
                found.append(value)
        if found:
            return pick(found)
        if why is not None:
            self._notes.fact(f"{lost}: the table of samples and its time index are damaged ({why})")
        return None

    def count(self) -> int:
        """Number of samples (indices are contiguous from first to last)."""
        first, last = self.first_index(), self.last_index()
        return 0 if first is None or last is None else last - first + 1

    def first_time(self) -> float | None:
        """Wall time of the oldest sample (Unix s), None when empty."""
        try:
            return _time(self._value("SELECT min(t) FROM samples"))
        except sqlite3.DatabaseError:  # a damaged time index: the rows' own times
            return next(self._times(self.first_index(), self.next_index), None)

    def last_time(self) -> float | None:
        """Wall time of the newest sample (Unix s), None when empty."""
        try:
            return _time(self._value("SELECT max(t) FROM samples"))
        except sqlite3.DatabaseError:
            return next(self._times(self.last_index(), self.prev_index), None)

    def time_of(self, index: int) -> float | None:
        """Wall time of the sample at `index`, None when there is none (or neither
        its row nor the time index can be read)."""
        return _time(
            self._answer(
                "SELECT t FROM samples WHERE id = ?",
                "SELECT t FROM samples INDEXED BY samples_t WHERE id = ?",
                args=(index,),
            )
        )

    def _row_time(self, index: int) -> float | None:
        """Wall time of the row `index` from the table alone (None when unreadable)."""
        try:
            return _time(self._value("SELECT t FROM samples WHERE id = ?", (index,)))
        except sqlite3.DatabaseError:
            return None

    def _times(self, index: int | None, step: Callable[[int], int | None]) -> Iterator[float]:
        """The times of the rows from `index` on (by `step`) that can be read."""
        while index is not None:
            t = self._row_time(index)
            if t is not None:
                yield t
            index = step(index)

    def seek(self, time_s: float) -> int | None:
        """Index of the first sample at or after `time_s` (by the time index).

        A time before the first sample gives the first index; a time after the last
        gives None.
        """
        try:
            value = self._value(
                "SELECT id FROM samples WHERE t >= ? ORDER BY t, id LIMIT 1", (time_s,)
            )
            return value if isinstance(value, int) else None
        except sqlite3.DatabaseError:  # a damaged time index: row by row through the table
            index = self.first_index()
            while index is not None:
                t = self._row_time(index)
                if t is not None and t >= time_s:
                    return index
                index = self.next_index(index)
            return None

    def next_index(self, index: int) -> int | None:
        """The index after `index` (the first one when `index` was deleted), or None.

        A row that cannot be read is an index all the same (`read` says why it is
        skipped), so every reader of the file walks the same indices.
        """
        after = index + 1
        found = self._probe(after)
        if found is _Row.FOUND:
            return after
        if found is _Row.DAMAGED:
            return after if self._goes_on(after) else None
        try:
            following: int | None = self._value(
                "SELECT min(id) FROM samples WHERE id > ?", (index,)
            )
        except sqlite3.DatabaseError:
            return after if self._goes_on(after) else None
        if following is None or not isinstance(following, int):
            return None
        # Missing in the middle of the ids (a damaged key: `read` reports it), or a
        # gap only retention makes (rows deleted while this reader was behind).
        last = self.last_index()
        inside = last is not None and after <= last < following
        return after if inside or following - after <= MAX_CHAIN else following

    def prev_index(self, index: int) -> int | None:
        """The index before `index`, or None at the start."""
        before = index - 1
        found = self._probe(before)
        if found is _Row.FOUND:
            return before
        first = self.first_index()
        if found is _Row.DAMAGED:
            return before if first is not None and before >= first else None
        try:
            preceding: int | None = self._value(
                "SELECT max(id) FROM samples WHERE id < ?", (index,)
            )
        except sqlite3.DatabaseError:
            return before if first is not None and before >= first else None
        if preceding is None or not isinstance(preceding, int):
            return None
        inside = first is not None and preceding < first <= before
        return before if inside or before - preceding <= MAX_CHAIN else preceding

    def _goes_on(self, index: int) -> bool:
        """Whether the recording goes on at the unreadable row `index`: it is not
        past the last index, or (when the last index cannot be found either) a row
        after it can be read. A notice says so when it does not."""
        last = self.last_index()
        if last is not None:
            return index <= last
        # Seek past it at growing distances: a seek that reaches an intact page
        # answers, one that lands in the damage raises.
        distance = 1
        while index + distance < 2**63:
            try:
                if (
                    self._value("SELECT min(id) FROM samples WHERE id >= ?", (index + distance,))
                    is not None
                ):
                    return True
                break
            except sqlite3.DatabaseError:
                distance *= 2
        self._notes.fact(
            f"sample #{index} and any after it skipped: the end of the file cannot be read"
        )
        return False

    def count_between(self, first_s: float, last_s: float) -> int:
        """Number of samples from `first_s` to `last_s` (by the time index; 0 when
        it cannot be read)."""
        value = self._answer(
            "SELECT count(*) FROM samples WHERE t BETWEEN ? AND ?", args=(first_s, last_s)
        )
        return value if isinstance(value, int) else 0

    # ------------------------------------------------------------------ rollups

    def rollups(
        self, from_s: float | None = None, to_s: float | None = None, *, hours: bool = False
    ) -> list[tuple[float, float, int, bytes | None]]:
        """The minute rollups (with `hours`, the hour ones) that overlap the range, in
        time order: (first_s, last_s, samples, data); data is None when the row is
        damaged. They are a cache derived from the samples (format 2); a file without
        the table (format 1) has none.
        """
        try:
            rows: list[tuple[float, float, int, bytes]] = self._conn.execute(
                f"SELECT first_s, last_s, samples, data FROM {ROLLUP_TABLES[hours]} "
                "WHERE last_s >= ? AND first_s <= ? ORDER BY first_s",
                (-math.inf if from_s is None else from_s, math.inf if to_s is None else to_s),
            ).fetchall()
        except sqlite3.OperationalError:  # no such table: an older format
            return []
        except sqlite3.DatabaseError as exc:
            self._notes.fact(
                f"the report's index cannot be read ({exc}): reports are computed from the samples"
            )
            return []
        out: list[tuple[float, float, int, bytes | None]] = []
        for first_s, last_s, samples, data in rows:
            if not (_is_number(first_s) and _is_number(last_s) and isinstance(samples, int)):
                continue  # a damaged row: the range it covered is computed from the samples
            try:
                out.append((first_s, last_s, samples, blob.unpack(column_blob(data))))
            except ValueError:
                out.append((first_s, last_s, samples, None))
        return out

    # ------------------------------------------------------------------ samples

    def read(self, index: int) -> Sample | None:
        """The sample at `index`; None when there is none or it is damaged (see notices)."""
        try:
            row = self._conn.execute(
                "SELECT t, dict_id, data FROM samples WHERE id = ?", (index,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            self._notes.lost(index, self.time_of(index), f"unreadable: {exc}")
            return None
        if row is None:
            # Ids are contiguous: one missing inside the recording is damage (a
            # garbled key), one before the first was deleted by retention.
            first, last = self.first_index(), self.last_index()
            if first is not None and first <= index and (last is None or index <= last):
                self._notes.lost(index, None, "missing (its page is damaged)")
            return None
        return self._decode(index, *row)

    def iter(self, from_s: float | None = None, to_s: float | None = None) -> Iterator[Sample]:
        """Samples in recording order, from the first at or after `from_s` until the
        first after `to_s`; damaged ones are skipped (see notices).

        The same samples as `read` on every index from `next_index`, in batches of
        rows each read in its own transaction, so a long iteration does not hold
        the file and sees samples appended meanwhile.
        """
        index = self.first_index() if from_s is None else self.seek(from_s)
        singly = 0
        while index is not None:
            rows = self._batch(index) if singly == 0 else []
            if rows:
                for idx, t, dict_id, data in rows:
                    if to_s is not None and _is_number(t) and t > to_s:
                        return
                    sample = self._decode(idx, t, dict_id, data)
                    if sample is not None:
                        yield sample
                index = self.next_index(rows[-1][0])
                continue
            # A damaged page on the way, or a row missing: the next rows one by one.
            singly = BATCH if singly == 0 else singly - 1
            at = self.time_of(index)
            if to_s is not None and at is not None and at > to_s:
                return
            sample = self.read(index)
            if sample is not None:
                yield sample
            index = self.next_index(index)

    def _batch(self, start: int) -> list[tuple[int, float, int | None, bytes]]:
        """Up to `BATCH` rows from `start` on with consecutive ids; none when a page
        on the way is damaged or the row `start` is missing."""
        try:
            rows: list[tuple[int, float, int | None, bytes]] = self._conn.execute(
                "SELECT id, t, dict_id, data FROM samples WHERE id >= ? ORDER BY id LIMIT ?",
                (start, BATCH),
            ).fetchall()
        except sqlite3.DatabaseError:
            return []
        for n, row in enumerate(rows):
            if row[0] != start + n:
                return rows[:n]
        return rows

    def _decode(self, index: int, t: Any, dict_id: Any, data: Any) -> Sample | None:
        if not (
            _is_number(t)
            # A dictionary's id is its rowid, which SQLite numbers from 1 (writer.py
            # inserts without one): 0 or less is damage, not a missing dictionary.
            and (dict_id is None or (isinstance(dict_id, int) and dict_id > 0))
            and isinstance(data, bytes)
        ):
            self._notes.lost(index, None, "its row is damaged")
            return None
        try:
            return self._decoder.decode(index, dict_id, data)
        except (ValueError, sqlite3.DatabaseError) as exc:
            self._notes.lost(index, t, str(exc))
            return None

    @property
    def notices(self) -> list[str]:
        """What a user should know of the file, in the order found: one line per run
        of consecutive samples skipped as unreadable, and one per fact about the file
        (opened in another way, cut). Which samples were lost: `skipped`."""
        return self._notes.lines()

    @property
    def skipped(self) -> frozenset[int]:
        """Indices of the samples skipped as unreadable so far (count these, not the
        notices, for the samples lost)."""
        return self._notes.skipped

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
