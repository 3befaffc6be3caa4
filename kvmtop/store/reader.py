"""Read a recording: header, seek by time, samples by index, damaged rows skipped.

Layer: store. Never textual.

The reader opens the file read-only, so it works on a file another process is still
writing (WAL readers never block the writer: https://www.sqlite.org/wal.html) and
every query sees the samples committed so far (follow mode). Indices are the
samples' row ids: contiguous, increasing in recording order, and stable while the
file grows; retention may delete the oldest, so the first index is not always 1.

A sample that cannot be read (a damaged page, a blob whose zstd checksum fails, JSON
that does not describe a sample) is skipped: `read` returns None and a line is added
to `notices` for the UI to show. Only a file that is not a recording, or whose
header is unreadable or newer than this kvmtop, raises `StoreError`.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kvmtop.model.sample import Sample
from kvmtop.store import blob, delta
from kvmtop.store.meta import RecordingMeta, StoreError, meta_from_rows
from kvmtop.store.schema import APPLICATION_ID, ROLLUP_TABLES, application_id, read_meta_rows

SQLITE_MAGIC = b"SQLite format 3\x00"
"""First 16 bytes of every SQLite database (https://www.sqlite.org/fileformat2.html §1.3)."""

BATCH = 64
"""Rows fetched per query while iterating (each query is its own read transaction)."""

_REFERENCES_KEPT = 4
_ROWS_KEPT = 4
"""Decoded rows kept: the two a delta row is stored against, and a little slack."""

MAX_CHAIN = 64
"""Rows a reader walks back to find a checkpoint (the writer makes chains of
`writer.CHAIN`); a longer walk means a damaged file."""


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class _Reference:
    """A `dictionaries` row, and what is made of it on demand: a block's reference
    (format 3), or the zstd dictionary of whole-sample rows (formats 1 and 2)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._block: delta.Reference | None = None
        self._decompressor: Any = None

    def block(self) -> delta.Reference:
        """What the block's delta rows are stored against.

        Raises:
            ValueError: not a block reference.
        """
        if self._block is None:
            try:
                self._block = delta.unpack_reference(self.raw)
            except ValueError as exc:
                raise ValueError(f"its reference is damaged ({exc})") from None
        return self._block

    def decompressor(self) -> Any:
        """A decompressor of whole-sample rows compressed against it (format 1, 2)."""
        if self._decompressor is None:
            self._decompressor = blob.decompressor(blob.dictionary(self.raw))
        return self._decompressor


class StoreReader:
    """A recording opened for reading.

    Args:
        path: the recording file.

    Raises:
        StoreError: no such file, not a kvmtop recording, damaged header, or written
            by a newer kvmtop (the message says which and what to do).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.notices: list[str] = []
        """One line per sample skipped as unreadable, in the order found."""
        self._damaged: set[int] = set()
        self._references: OrderedDict[int, _Reference] = OrderedDict()
        self._rows: OrderedDict[int, list[int]] = OrderedDict()
        self._zstd = blob.decompressor(None)
        self._check_file()
        uri = Path(self.path).absolute().as_uri() + "?mode=ro"
        try:
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                         check_same_thread=False)
            # A file shorter than its header says (a cut copy) is refused whole
            # unless writable_schema is on (btree.c lockBtree: nPage > nPageFile is
            # SQLITE_CORRUPT); with it, every page before the cut reads. The
            # connection is read-only, so the pragma cannot change the file.
            self._conn.execute("PRAGMA writable_schema = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from None
        try:
            self.meta: RecordingMeta = self._read_meta()
        except BaseException:
            self._conn.close()
            raise

    def _check_file(self) -> None:
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except FileNotFoundError:
            raise StoreError(f"{self.path}: no such recording") from None
        except IsADirectoryError:
            raise StoreError(f"{self.path}: is a directory, not a recording") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc.strerror}") from None
        if not head:
            raise StoreError(f"{self.path}: empty file, not a kvmtop recording")
        if head != SQLITE_MAGIC:
            raise StoreError(f"{self.path}: not a kvmtop recording (not an SQLite file)")

    def _read_meta(self) -> RecordingMeta:
        try:
            if application_id(self._conn) != APPLICATION_ID:
                raise StoreError(f"{self.path}: not a kvmtop recording (an SQLite file "
                                 "of another application)")
            rows = read_meta_rows(self._conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: damaged or truncated recording: {exc}") from None
        return meta_from_rows(self.path, rows)

    # ------------------------------------------------------------------ extent

    def _scalar(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        """One value, or None when absent or when the pages holding it are damaged."""
        try:
            row = self._conn.execute(sql, args).fetchone()
        except sqlite3.DatabaseError as exc:
            self._notice(f"{self.path}: index damaged: {exc}")
            return None
        return row[0] if row else None

    def first_index(self) -> int | None:
        """Index of the oldest sample, None when the file holds none."""
        value: int | None = self._scalar("SELECT min(id) FROM samples")
        return value

    def last_index(self) -> int | None:
        """Index of the newest committed sample, None when the file holds none."""
        value: int | None = self._scalar("SELECT max(id) FROM samples")
        return value

    def count(self) -> int:
        """Number of samples (indices are contiguous from first to last)."""
        first, last = self.first_index(), self.last_index()
        return 0 if first is None or last is None else last - first + 1

    def first_time(self) -> float | None:
        """Wall time of the oldest sample (Unix s), None when empty."""
        value: float | None = self._scalar("SELECT min(t) FROM samples")
        return value

    def last_time(self) -> float | None:
        """Wall time of the newest sample (Unix s), None when empty."""
        value: float | None = self._scalar("SELECT max(t) FROM samples")
        return value

    def time_of(self, index: int) -> float | None:
        """Wall time of the sample at `index`, None when there is none."""
        value: float | None = self._scalar("SELECT t FROM samples WHERE id = ?", (index,))
        return value

    def seek(self, time_s: float) -> int | None:
        """Index of the first sample at or after `time_s` (by the time index).

        A time before the first sample gives the first index; a time after the last
        gives None.
        """
        value: int | None = self._scalar(
            "SELECT id FROM samples WHERE t >= ? ORDER BY t, id LIMIT 1", (time_s,)
        )
        return value

    def next_index(self, index: int) -> int | None:
        """The index after `index` (the first one when `index` was deleted), or None."""
        value: int | None = self._scalar("SELECT min(id) FROM samples WHERE id > ?", (index,))
        return value

    def prev_index(self, index: int) -> int | None:
        """The index before `index`, or None at the start."""
        value: int | None = self._scalar("SELECT max(id) FROM samples WHERE id < ?", (index,))
        return value

    def count_between(self, first_s: float, last_s: float) -> int:
        """Number of samples from `first_s` to `last_s` (by the time index)."""
        value: int | None = self._scalar(
            "SELECT count(*) FROM samples WHERE t BETWEEN ? AND ?", (first_s, last_s))
        return value or 0

    # ------------------------------------------------------------------ rollups

    def rollups(self, from_s: float | None = None, to_s: float | None = None, *,
                hours: bool = False) -> list[tuple[float, float, int, bytes | None]]:
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
            self._notice(f"{self.path}: index damaged: {exc}")
            return []
        out: list[tuple[float, float, int, bytes | None]] = []
        for first_s, last_s, samples, data in rows:
            try:
                out.append((first_s, last_s, samples, blob.unpack(data)))
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
            self._skip(index, None, f"unreadable: {exc}")
            return None
        if row is None:
            return None
        return self._decode(index, *row)

    def iter(self, from_s: float | None = None, to_s: float | None = None) -> Iterator[Sample]:
        """Samples in recording order, from the first at or after `from_s` until the
        first after `to_s`; damaged ones are skipped (see notices).

        Each batch of rows is read in its own transaction, so a long iteration does
        not hold the file and sees samples appended meanwhile.
        """
        index = self.first_index() if from_s is None else self.seek(from_s)
        while index is not None:
            rows = self._batch(index)
            for idx, t, dict_id, data in rows:
                if to_s is not None and t > to_s:
                    return
                sample = self._decode(idx, t, dict_id, data)
                if sample is not None:
                    yield sample
            # Past a damaged stretch that gave no row at all, go on after it.
            index = rows[-1][0] + 1 if rows else index + BATCH
            last = self.last_index()
            if last is None or index > last:
                return

    def _batch(self, start: int) -> list[tuple[int, float, int | None, bytes]]:
        """Up to `BATCH` rows from `start`; row by row when a page on the way is damaged."""
        try:
            rows: list[tuple[int, float, int | None, bytes]] = self._conn.execute(
                "SELECT id, t, dict_id, data FROM samples WHERE id >= ? ORDER BY id LIMIT ?",
                (start, BATCH),
            ).fetchall()
        except sqlite3.DatabaseError:
            rows = []
            for idx in range(start, start + BATCH):
                try:
                    row = self._conn.execute(
                        "SELECT id, t, dict_id, data FROM samples WHERE id = ?", (idx,)
                    ).fetchone()
                except sqlite3.DatabaseError as exc:
                    self._skip(idx, None, f"unreadable: {exc}")
                    continue
                if row is not None:
                    rows.append(row)
        return rows

    def _decode(self, index: int, t: float, dict_id: int | None, data: bytes) -> Sample | None:
        try:
            if not delta.is_delta_row(data):  # a whole sample (format 1 and 2 rows)
                return blob.loads(blob.unpack(data, self._decompressor(dict_id)))
            if dict_id is None:
                raise ValueError("a delta row without its reference")
            ints, floats = self._delta_ints(index, dict_id, data)
            ref = self._reference(dict_id).block()
            return blob.loads(delta.fill(ref.parts, ref.float_slots, ints, floats))
        except (ValueError, sqlite3.DatabaseError) as exc:
            self._skip(index, t, str(exc))
            return None

    def _delta_ints(self, index: int, dict_id: int, data: bytes) -> tuple[list[int], list[str]]:
        """The integers and float texts of the delta row `index`: its chain is read
        back to a checkpoint (or to rows decoded already), then decoded forward."""
        chain = [(index, data)]
        while True:
            first, first_data = chain[-1]
            order = delta.row_order(first_data)
            if order <= 0 or all(first - k in self._rows for k in range(1, order + 1)):
                break
            if len(chain) > MAX_CHAIN:
                raise ValueError(f"no checkpoint within {MAX_CHAIN} rows before it")
            chain.append((first - 1, self._chained_row(first - 1, dict_id, index)))
        floats: list[str] = []
        for row, row_data in reversed(chain):
            try:
                order, stored, floats = delta.unpack_row(row_data, self._zstd)
            except ValueError as exc:
                if row == index:
                    raise
                raise ValueError(f"it is stored against sample #{row}, which is damaged "
                                 f"({exc})") from None
            if order == 0:
                bases: tuple[list[int], ...] = (self._reference(dict_id).block().ints,)
            else:
                bases = tuple(self._rows[row - k] for k in range(1, order + 1))
            self._rows[row] = delta.restore(order, stored, bases)
            self._rows.move_to_end(row)
            while len(self._rows) > _ROWS_KEPT:
                self._rows.popitem(last=False)
        return self._rows[index], floats

    def _chained_row(self, row: int, dict_id: int, index: int) -> bytes:
        """The data of the row `row`, which the delta row `index` is stored against."""
        got = self._conn.execute("SELECT dict_id, data FROM samples WHERE id = ?",
                                 (row,)).fetchone()
        if got is None or got[0] != dict_id or not delta.is_delta_row(got[1]):
            raise ValueError(f"it is stored against sample #{row}, which is missing "
                             "or damaged")
        data: bytes = got[1]
        return data

    def _reference(self, dict_id: int) -> _Reference:
        ref = self._references.get(dict_id)
        if ref is None:
            row = self._conn.execute(
                "SELECT data FROM dictionaries WHERE id = ?", (dict_id,)
            ).fetchone()
            if row is None:
                raise ValueError(f"its dictionary #{dict_id} is missing")
            try:
                ref = _Reference(blob.unpack(row[0]))
            except ValueError as exc:
                raise ValueError(f"its dictionary #{dict_id} is damaged ({exc})") from None
            self._references[dict_id] = ref
            if len(self._references) > _REFERENCES_KEPT:
                self._references.popitem(last=False)
        else:
            self._references.move_to_end(dict_id)
        return ref

    def _decompressor(self, dict_id: int | None) -> Any:
        """The decompressor of a whole-sample row (against its dictionary, if any)."""
        return self._zstd if dict_id is None else self._reference(dict_id).decompressor()

    def _skip(self, index: int, t: float | None, why: str) -> None:
        if index in self._damaged:
            return
        self._damaged.add(index)
        when = f" ({_stamp(t)})" if t is not None else ""
        self._notice(f"sample #{index}{when} skipped: {why}")

    def _notice(self, line: str) -> None:
        if line not in self.notices:
            self.notices.append(line)

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
