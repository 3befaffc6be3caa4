"""Open a file kvmtop writes (a recording, a slice, a report, an export) so that
what it holds stays private: created with mode 0600, never through a symbolic link,
never into a file of another user.

Layer: a leaf (the standard library only); the store and the headless outputs use it.

What open(2) guarantees (Linux man-pages, open(2)):

- O_CREAT creates the file with `mode` masked by the process's umask, which can only
  take permission bits away: a new file is never wider than 0600.
- O_NOFOLLOW: when the last component of the path is a symbolic link, the open fails
  with ELOOP, whether the link dangles or not (a dangling link would otherwise be
  followed and its target created with whatever mode).
- O_EXCL with O_CREAT: the open fails with EEXIST when the path exists, a symbolic
  link included, so "must not exist" holds without a race.

An existing file is checked through the descriptor (fstat), so what is checked is
what is written.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TextIO

FILE_MODE = 0o600
"""Recordings, reports and exports name guests, hosts and addresses: owner only."""


class OutputFileError(OSError):
    """A path kvmtop refuses to write to; `str()` names the path and says why."""

    def __init__(self, code: int, path: str, why: str) -> None:
        super().__init__(code, why, path)

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def open_output(path: str | os.PathLike[str], *, new: bool = False,
                replace: bool = False) -> int:
    """Open `path` for writing as a private file and return its descriptor.

    - A missing file is created with mode 0600.
    - A symbolic link is refused (OutputFileError, ELOOP), wherever it points.
    - `new`: the path must not exist at all (FileExistsError).
    - `replace`: an existing file's content is dropped (a report written again).
      Without it the content stays (a recording that is continued).
    - A regular file of another user that would be emptied or that is empty (so
      it would become the new file) is refused (OutputFileError, EPERM) before
      anything in it changes: its owner could read what kvmtop writes.
    - A regular file left empty (created, emptied, or given empty) gets mode 0600
      when it had another: an empty file someone prepared with mode 0666.
    - Anything else (a FIFO, a terminal, /dev/null) is written as it is.

    Raises:
        OutputFileError: a symbolic link, or another user's file (see above).
        OSError: the open itself failed (ENOENT, EACCES, EISDIR, EROFS, EEXIST).
    """
    name = os.fspath(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(name, flags | (os.O_EXCL if new else 0), FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(name):
            raise OutputFileError(errno.ELOOP, name, "is a symbolic link; kvmtop does "
                                  "not write through one (give the path it points to)"
                                  ) from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            emptied = replace or st.st_size == 0
            if emptied and st.st_uid != os.geteuid():
                raise OutputFileError(errno.EPERM, name, f"exists and belongs to another "
                                      f"user (uid {st.st_uid}), who could read what kvmtop "
                                      "writes; remove it or choose another path")
            if replace and st.st_size:
                os.ftruncate(fd, 0)
            if emptied and stat.S_IMODE(st.st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_text(path: str | os.PathLike[str]) -> TextIO:
    """`path` opened by `open_output(path, replace=True)` as UTF-8 text (newlines
    written as given): a report or an export."""
    return os.fdopen(open_output(path, replace=True), "w", encoding="utf-8", newline="")
