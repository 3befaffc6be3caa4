"""Cut a time range of a recording into a new, small recording (to attach to a ticket).

Layer: store. Never textual.
"""

from __future__ import annotations

import errno
import os

from kvmtop.store.meta import write_error
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter


def slice_recording(
    reader: StoreReader,
    out: str | os.PathLike[str],
    *,
    from_s: float | None = None,
    to_s: float | None = None,
) -> int:
    """Copy the raw samples from `from_s` to `to_s` into a new recording at `out`.

    The samples are copied as they are (never re-derived), so the slice replays
    exactly like the same range of the original. Damaged samples are skipped and
    listed in `reader.notices`.

    Returns:
        The number of samples copied.

    Raises:
        StoreWriteError: `out` cannot be written, or already exists (a slice never
            appends to or overwrites a file).
    """
    if os.path.lexists(out):
        raise write_error(
            os.fspath(out), FileExistsError(errno.EEXIST, "exists; choose a new file for the slice")
        )
    writer = StoreWriter(out, new=True)  # O_EXCL: not created meanwhile either
    copied = 0
    try:
        for sample in reader.iter(from_s, to_s):
            writer.append(sample)
            copied += 1
    finally:
        writer.close()
    return copied
