"""What an SQLite file says about itself before SQLite opens it: its header.

Layer: store. Never textual.

The reader uses it to tell a damaged recording from one it must open in another way
(a log it cannot index) or that was copied without its log, and to notice a file cut
short. Offsets and rules are those of https://www.sqlite.org/fileformat2.html §1.3
(the database header) and https://www.sqlite.org/wal.html.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

MAGIC = b"SQLite format 3\x00"
"""First 16 bytes of every SQLite database (fileformat2.html §1.3)."""

HEADER_SIZE = 100
"""Bytes of the database header at the start of page 1 (§1.3)."""

WAL_VERSION = 2
"""File format write/read version bytes (offsets 18, 19) of a database in WAL mode;
1 is the legacy rollback-journal mode (§1.3.3)."""


@dataclass(frozen=True, slots=True)
class Header:
    """The parts of a database header the reader checks.

    Attributes:
        page_size: bytes per page (offset 16; the value 1 means 65536).
        pages: the in-header database size (offset 28); None when SQLite itself
            would not trust it: zero, or the change counter (offset 24) differs from
            the version-valid-for number (offset 92), as after a legacy writer.
        wal: the file is in WAL mode (write and read versions 2).
    """

    page_size: int
    pages: int | None
    wal: bool


def read_header(path: str) -> Header | None:
    """The header of the SQLite database at `path`; None when the file is shorter
    than a header, is not an SQLite database, or its page size is not a power of
    two from 512 to 65536 (raises OSError when it cannot be read)."""
    with open(path, "rb") as f:
        raw = f.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE or raw[: len(MAGIC)] != MAGIC:
        return None
    (size,) = struct.unpack_from(">H", raw, 16)
    page_size = 65536 if size == 1 else size
    if page_size < 512 or page_size & (page_size - 1):
        return None
    counter, pages = struct.unpack_from(">II", raw, 24)
    (valid_for,) = struct.unpack_from(">I", raw, 92)
    return Header(
        page_size,
        pages if pages and counter == valid_for else None,
        raw[18] == raw[19] == WAL_VERSION,
    )


def truncated(path: str, header: Header) -> tuple[int, int] | None:
    """(bytes present, bytes the header says the file holds) when the file is
    shorter than its header says, else None.

    Only meaningful without a log: in WAL mode pages past the end of the file may
    still be in the -wal file (wal.html: a checkpoint writes them back).
    """
    if header.pages is None:
        return None
    expected = header.pages * header.page_size
    size = os.path.getsize(path)
    return (size, expected) if size < expected else None
