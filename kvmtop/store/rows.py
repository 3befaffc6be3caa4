"""Decoding one row of a recording's samples table into a `Sample`: whole-sample rows
(formats 1 and 2, zstd against an optional dictionary) and delta rows (format 3),
whose chains are read back to a checkpoint and stored against a block's reference.

Layer: store. Reads rows over the reader's connection; the reader decides what a
failure means (a skipped sample, with a notice).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from typing import Any

from kvmtop.model.sample import Sample
from kvmtop.store import blob, delta

_REFERENCES_KEPT = 4
_ROWS_KEPT = 4
"""Decoded rows kept: the two a delta row is stored against, and a little slack."""

MAX_CHAIN = 64
"""Rows a reader walks back to find a checkpoint (the writer makes chains of
`writer.CHAIN`); a longer walk means a damaged file."""


def column_blob(value: object) -> bytes:
    """A BLOB column's value (raises ValueError when a damaged row holds another type)."""
    if not isinstance(value, bytes):
        raise ValueError("its row is damaged")
    return value


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


class RowDecoder:
    """Decodes the sample rows of one open recording, keeping the references and the
    decoded rows that the next delta rows are stored against."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._references: OrderedDict[int, _Reference] = OrderedDict()
        self._rows: OrderedDict[int, list[int]] = OrderedDict()
        self._zstd = blob.decompressor(None)

    def decode(self, index: int, dict_id: int | None, data: bytes) -> Sample:
        """The sample of the row `index` (its `dict_id` and `data` columns).

        Raises:
            ValueError, sqlite3.DatabaseError: the row, or one it is stored against,
                is damaged (the message says how).
        """
        if not delta.is_delta_row(data):  # a whole sample (format 1 and 2 rows)
            return blob.loads(blob.unpack(data, self._decompressor(dict_id)))
        if dict_id is None:
            raise ValueError("a delta row without its reference")
        ints, floats = self._delta_ints(index, dict_id, data)
        ref = self._reference(dict_id).block()
        return blob.loads(delta.fill(ref.parts, ref.float_slots, ints, floats))

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
                raise ValueError(
                    f"it is stored against sample #{row}, which is damaged ({exc})"
                ) from None
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
        try:
            got = self._conn.execute(
                "SELECT dict_id, data FROM samples WHERE id = ?", (row,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise ValueError(
                f"it is stored against sample #{row}, which is unreadable ({exc})"
            ) from None
        if (
            got is None
            or got[0] != dict_id
            or not isinstance(got[1], bytes)
            or not delta.is_delta_row(got[1])
        ):
            raise ValueError(f"it is stored against sample #{row}, which is missing or damaged")
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
                ref = _Reference(blob.unpack(column_blob(row[0])))
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
