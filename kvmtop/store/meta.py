"""The recording header and the store's error types.

Layer: store. Imports the model and the codec only; never textual.

Two versions guard compatibility:

- `FORMAT_VERSION`: the layout of the file (tables, blob encoding). A reader refuses
  a file with a higher one.
- `kvmtop.model.sample.SCHEMA_VERSION`: the major version of the sample layout. A
  reader refuses a higher one; a lower one is read through the codec, whose missing
  keys take defaults. Fields added with a default (a "minor" change) need no bump:
  older readers ignore the keys they do not know.
"""

from __future__ import annotations

import errno
import json
import sqlite3
from dataclasses import dataclass, field, replace
from typing import Any

from kvmtop import __version__
from kvmtop.model.sample import SCHEMA_VERSION, Sample
from kvmtop.store.codec import CodecError, decode, encode

FORMAT_VERSION = 3
"""Version of the file layout; a reader refuses a file with a higher one.

1: meta, dictionaries, samples. 2: adds the `rollups` table (the report's index, a
cache derived from the samples); a format-1 file reads as one without an index, and
a writer resuming it adds the table. 3: sample rows are delta rows
(`kvmtop.store.delta`) in blocks; rows of formats 1 and 2 still read, so a writer
resuming an older file marks it format 3 and appends blocks."""

UPGRADABLE_FORMATS = (1, 2)
"""Older formats a writer may resume: the newer ones add tables and a row encoding
and read the older rows as before."""

LIBVIRT_SOURCE = "libvirt"
"""`SourceStatus.name` of the libvirt collector, whose detail carries the versions."""


class StoreError(Exception):
    """A recording cannot be opened or read; the message says which file and why."""


class StoreWriteError(StoreError, OSError):
    """Writing a recording failed (disk full, read-only, I/O error).

    An `OSError` (with `errno` set: ENOSPC, EROFS, EACCES, EIO), so `LiveFeed` turns
    it into `record_error` and keeps monitoring. Samples committed before the failure
    stay in the file; `committed` says whether the sample being appended is one of
    them (what failed came after its commit: a checkpoint, retention, its index).
    """

    committed: bool = False

    def __str__(self) -> str:
        """The message alone ("cannot write recording PATH: why"), without OSError's
        "[Errno N]" in front."""
        return str(self.strerror)


# sqlite3 error codes (https://www.sqlite.org/rescode.html) → the errno a user knows.
_ERRNO_OF_SQLITE = {
    "SQLITE_FULL": errno.ENOSPC,
    "SQLITE_READONLY": errno.EROFS,
    "SQLITE_CANTOPEN": errno.EACCES,
    "SQLITE_PERM": errno.EACCES,
    "SQLITE_IOERR": errno.EIO,
}


def sqlite_failure(exc: sqlite3.Error) -> tuple[int, str]:
    """Why an SQLite write failed, as a user knows it: the errno and the words to
    print ("disk full", else SQLite's message)."""
    name = getattr(exc, "sqlite_errorname", "")
    # Extended codes (SQLITE_IOERR_WRITE, SQLITE_READONLY_DBMOVED...) share the
    # primary code's prefix.
    code = next((v for k, v in _ERRNO_OF_SQLITE.items() if name.startswith(k)), errno.EIO)
    return code, "disk full" if code == errno.ENOSPC else str(exc)


def write_error(
    path: str, exc: sqlite3.Error | OSError, *, committed: bool = False
) -> StoreWriteError:
    """A `StoreWriteError` explaining a failed write to `path` (`committed`: after
    the sample being appended was committed)."""
    if isinstance(exc, StoreWriteError):
        error = exc
    elif isinstance(exc, sqlite3.Error):
        code, why = sqlite_failure(exc)
        error = StoreWriteError(code, f"cannot write recording {path}: {why}")
    else:
        error = StoreWriteError(
            exc.errno or errno.EIO, f"cannot write recording {path}: {exc.strerror}"
        )
    error.committed = error.committed or committed
    return error


@dataclass(frozen=True, slots=True)
class RecordingMeta:
    """The header of a recording: what made it, where, and how.

    The host fields are filled from the first sample written, so a file that holds
    no sample yet has them None.

    Attributes:
        format_version: `FORMAT_VERSION` of the writer.
        schema_version: `SCHEMA_VERSION` of the samples in the file.
        kvmtop_version: version of the kvmtop that wrote the file.
        created_s: Unix time the file was created.
        interval_s: sampling interval of the first sample.
        hostname: host name (from the host collector, else from libvirt).
        kernel: host kernel release (`uname -r`).
        libvirt_version: libvirt daemon version, when libvirt was reachable.
        hypervisor: hypervisor driver and version as libvirt reports it ("QEMU 8.2.0").
        uri: libvirt URI in use.
        collectors: names of the collectors that ran.
        sources: each collector's detail from the first sample (versions, paths).
    """

    format_version: int
    schema_version: int
    kvmtop_version: str
    created_s: float
    interval_s: float | None = None
    hostname: str | None = None
    kernel: str | None = None
    libvirt_version: str | None = None
    hypervisor: str | None = None
    uri: str | None = None
    collectors: tuple[str, ...] = ()
    sources: dict[str, dict[str, str]] = field(default_factory=dict)


def new_meta(created_s: float) -> RecordingMeta:
    """The header of a file this kvmtop starts writing now."""
    return RecordingMeta(FORMAT_VERSION, SCHEMA_VERSION, __version__, created_s)


def describe_host(meta: RecordingMeta, sample: Sample) -> RecordingMeta:
    """`meta` completed with the host facts the first sample carries."""
    libvirt = next((s.detail for s in sample.sources if s.name == LIBVIRT_SOURCE), {})
    host = sample.host
    return replace(
        meta,
        interval_s=sample.interval_s,
        hostname=(host.hostname if host is not None and host.hostname else None)
        or libvirt.get("hostname"),
        kernel=host.kernel if host is not None and host.kernel else None,
        libvirt_version=libvirt.get("libvirt"),
        hypervisor=libvirt.get("hypervisor"),
        uri=libvirt.get("uri"),
        collectors=tuple(s.name for s in sample.sources),
        sources={s.name: dict(s.detail) for s in sample.sources if s.detail},
    )


def meta_rows(meta: RecordingMeta) -> list[tuple[str, str]]:
    """(key, JSON value) rows of the `meta` table: one readable row per field."""
    return [(k, json.dumps(v)) for k, v in encode(meta).items()]


def meta_from_rows(path: str, rows: dict[str, str]) -> RecordingMeta:
    """Parse the `meta` table, refusing a file from a newer kvmtop.

    Raises:
        StoreError: a newer format or sample schema, or a damaged header.
    """
    try:
        values: dict[str, Any] = {k: json.loads(v) for k, v in rows.items() if isinstance(k, str)}
    except (ValueError, TypeError) as exc:  # TypeError: a NULL a damaged page left
        raise StoreError(f"{path}: damaged recording header: {exc}") from None
    fmt, schema = values.get("format_version"), values.get("schema_version")
    if not isinstance(fmt, int) or not isinstance(schema, int):
        raise StoreError(f"{path}: not a kvmtop recording (no format/schema version)")
    writer = values.get("kvmtop_version", "an unknown version")
    if fmt > FORMAT_VERSION or schema > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: written by kvmtop {writer} (file format {fmt}, sample schema {schema}); "
            f"this kvmtop {__version__} reads file format <= {FORMAT_VERSION} and sample "
            f"schema <= {SCHEMA_VERSION}: upgrade kvmtop to read it"
        )
    try:
        meta: RecordingMeta = decode(RecordingMeta, values)
    except CodecError as exc:
        raise StoreError(f"{path}: damaged recording header: {exc}") from None
    return meta
