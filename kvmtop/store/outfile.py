"""Open a file kvmtop writes (a recording, a slice, a report, an export) so that
what it holds stays private: created with mode 0600, never through a symbolic link,
never into a file of another user.

Layer: store (the standard library only); the store writer and the commands use it.

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

A report or an export (`TextOutput`) is written to a new temporary file next to OUT
and renamed over OUT once complete. rename(2) replaces the name atomically: OUT is at
every moment either the older file, whole, or the new one, whole, so a run that fails
(disk full, an error, Ctrl-C) leaves the older OUT as it was. It also replaces the
name itself, never following a symbolic link put there meanwhile, and the new file is
kvmtop's own (mode 0600) whoever owned the older one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from types import TracebackType
from typing import TextIO

FILE_MODE = 0o600
"""Recordings, reports and exports name guests, hosts and addresses: owner only."""


class OutputFileError(OSError):
    """A path kvmtop refuses to write to; `str()` names the path and says why."""

    def __init__(self, code: int, path: str, why: str) -> None:
        super().__init__(code, why, path)

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _symbolic_link(name: str) -> OutputFileError:
    return OutputFileError(
        errno.ELOOP,
        name,
        "is a symbolic link; kvmtop does not write through one (give the path it points to)",
    )


def _of_another_user(name: str, uid: int, why: str) -> OutputFileError:
    return OutputFileError(
        errno.EPERM,
        name,
        f"exists and belongs to another user (uid {uid}), {why}; remove it or choose another path",
    )


def open_output(path: str | os.PathLike[str], *, new: bool = False, replace: bool = False) -> int:
    """Open `path` for writing as a private file and return its descriptor.

    - A missing file is created with mode 0600.
    - A symbolic link is refused (OutputFileError, ELOOP), wherever it points.
    - `new`: the path must not exist at all (FileExistsError).
    - `replace`: an existing file's content is dropped. Without it the content stays
      (a recording that is continued).
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
            raise _symbolic_link(name) from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            emptied = replace or st.st_size == 0
            if emptied and st.st_uid != os.geteuid():
                raise _of_another_user(name, st.st_uid, "who could read what kvmtop writes")
            if replace and st.st_size:
                os.ftruncate(fd, 0)
            if emptied and stat.S_IMODE(st.st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


TEMPORARY_TRIES = 100
"""Names tried for a temporary file before giving up (each is 48 random bits, so a
clash means someone creates these names on purpose)."""


def _temporary_next_to(name: str) -> tuple[int, str]:
    """A new private file in the directory of `name` (the same filesystem, so that
    rename(2) can move it over `name`): its descriptor and path. A kvmtop killed
    with SIGKILL leaves it behind, named `.kvmtop-*.tmp`."""
    directory = os.path.dirname(name) or "."
    for _ in range(TEMPORARY_TRIES):
        temporary = os.path.join(directory, f".kvmtop-{secrets.token_hex(6)}.tmp")
        try:
            return open_output(temporary, new=True), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name in {directory}", name)


class TextOutput:
    """Where a report or an export is written (UTF-8, newlines as given). Open it
    before the work starts, so that a path kvmtop cannot write is said at once.

    `path` None is standard output, written as it goes. A path is written through a
    new temporary file next to it (`open_output(new=True)`: mode 0600, in the same
    directory so on the same filesystem) that `commit` renames over `path`; until
    then, and for good when the work fails (`discard`, or leaving the `with` block
    without `commit`), `path` is left as it was. A symbolic link, a directory and
    another user's regular file are refused here, as by `open_output`; a path that
    is neither missing nor a regular file (a FIFO, /dev/null, a terminal) cannot be
    renamed over and is written as it is (`open_output(replace=True)`).

    Args:
        path: OUT, or None for standard output.

    Raises:
        OutputFileError: a symbolic link, or another user's file.
        OSError: OUT or its temporary file cannot be created (ENOENT, EACCES,
            EISDIR, EROFS).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.name = "standard output" if self.path is None else self.path
        """What the output is, for messages: the path, or "standard output"."""
        self._temporary: str | None = None
        self._open = self.path is not None
        if self.path is None:
            self.file: TextIO = sys.stdout
            return
        try:
            st: os.stat_result | None = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise _symbolic_link(self.path)
        if st is None or stat.S_ISREG(st.st_mode):
            if st is not None and st.st_uid != os.geteuid():
                raise _of_another_user(self.path, st.st_uid, "whose file kvmtop does not replace")
            fd, self._temporary = _temporary_next_to(self.path)
        else:
            fd = open_output(self.path, replace=True)
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline="")

    def commit(self) -> None:
        """The output is complete: flush it and put it in place (rename the temporary
        file over OUT, after fsync(2) so that a crash after the rename cannot leave
        an OUT whose data never reached the disk).

        Raises:
            OSError: writing or renaming failed (OUT is then left as it was).
        """
        if self.path is None:
            self.file.flush()
            return
        if not self._open:
            return
        if self._temporary is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
        self.file.close()
        if self._temporary is not None:
            # rename(2): an existing OUT is replaced atomically ("there is no point at
            # which another process attempting to access newpath will find it
            # missing"), and when the rename fails OUT stays as it was.
            os.rename(self._temporary, self.path)
        self._open = False

    def discard(self) -> None:
        """Drop what was written (the temporary file) and leave OUT as it was; nothing
        after `commit`, nor for standard output."""
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(OSError):  # closing flushes: it fails as the writes did
            self.file.close()
        if self._temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temporary)

    def __enter__(self) -> TextOutput:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.discard()
