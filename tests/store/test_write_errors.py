"""Disk full and read-only paths: a clear OSError, and nothing already written is lost."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvmtop.feed.live import LiveFeed
from kvmtop.feed.pipeline import Pipeline
from kvmtop.model.sample import Sample
from kvmtop.store.meta import StoreWriteError
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from tests.store.conftest import make_samples
from tests.store.synth import SyntheticHost


def test_disk_full_raises_enospc_and_keeps_what_was_written(tiny_fs: Path) -> None:
    path = tiny_fs / "full.kvmtop"
    host = SyntheticHost(6)
    writer = StoreWriter(path)
    written: list[Sample] = []
    with pytest.raises(StoreWriteError) as caught:
        for _ in range(10_000):
            sample = host.sample()
            writer.append(sample)
            written.append(sample)
    assert isinstance(caught.value, OSError)
    assert caught.value.errno == errno.ENOSPC
    assert "disk full" in str(caught.value) and str(path) in str(caught.value)
    assert len(written) > 5
    writer.close()  # cannot fold the log on a full disk: must not raise or lose data
    with StoreReader(path) as r:
        assert list(r.iter()) == written
        assert r.notices == []


def test_read_only_filesystem_is_a_clear_error(tiny_fs: Path) -> None:
    existing = tiny_fs / "old.kvmtop"
    writer = StoreWriter(existing)
    writer.append(make_samples(1)[0])
    writer.close()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(StoreWriteError) as caught:
        StoreWriter(tiny_fs / "new.kvmtop")
    assert caught.value.errno == errno.EROFS
    assert "cannot write recording" in str(caught.value)
    with pytest.raises(StoreWriteError):
        StoreWriter(existing).append(make_samples(2)[1])
    with StoreReader(existing) as r:  # still readable
        assert r.count() == 1


class FullDisk:
    """A connection whose inserts fail the way SQLite reports a full disk."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("INSERT INTO samples"):
            exc = sqlite3.OperationalError("database or disk is full")
            exc.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
            raise exc
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_simulated_disk_full_through_live_feed(tmp_path: Path) -> None:
    samples = make_samples(4)
    path = tmp_path / "rec.kvmtop"
    writer = StoreWriter(path)
    writer.append(samples[0])
    writer._conn = FullDisk(writer._conn)  # type: ignore[assignment]

    class Replaying:
        interval_s = 2.0

        def __init__(self) -> None:
            self.left = iter(samples[1:])

        def sample(self) -> Sample:
            return next(self.left)

        def close(self) -> None:
            pass

    feed = LiveFeed(Replaying(), Pipeline(window_size=10), recorder=writer)  # type: ignore[arg-type]
    snap = feed.next()
    assert feed.record_error is not None
    assert "disk full" in feed.record_error and str(path) in feed.record_error
    assert snap.recording is None
    assert feed.next() is not None  # monitoring goes on
    writer._conn = writer._conn._conn  # type: ignore[attr-defined]
    writer.close()
    with StoreReader(path) as r:
        assert list(r.iter()) == samples[:1]


# ---------------------------------------- the command line on a full or read-only disk

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "fixtures" / "recordings" / "lab-sample-format3.kvmtop"
OLDER = "an older output, which a failed run must leave as it was\n"


def _kvmtop(*args: str | Path, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m kvmtop ARGS` with an empty config (`tmpdir`: its TMPDIR, which SQLite
    reads for its temporary files when it starts)."""
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": "/nonexistent"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", "kvmtop", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fill(directory: Path, leave: int) -> None:
    """Fill the filesystem of `directory` but for about `leave` bytes."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while os.write(fd, bytes(4096)):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    os.truncate(filler, max(filler.stat().st_size - leave, 0))


def test_openmetrics_export_whose_sort_file_fills_the_disk(tiny_fs: Path, tmp_path: Path) -> None:
    """The OpenMetrics lines are sorted in SQLite's temporary file (in $TMPDIR): a full
    disk there is one line and status 1, and OUT (elsewhere) stays as it was."""
    out = tmp_path / "lab.om"
    out.write_text(OLDER)
    done = _kvmtop("export", LAB, "--format", "openmetrics", "-o", out, tmpdir=tiny_fs)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"kvmtop: cannot write {out}: the temporary file the OpenMetrics lines are sorted "
        "in (in $SQLITE_TMPDIR, else $TMPDIR, else /var/tmp): disk full"
    ]
    assert out.read_text() == OLDER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.om", "mnt"]
    assert list(tiny_fs.iterdir()) == []  # SQLite's file is gone with the connection


@pytest.mark.parametrize(
    "command",
    [
        ("export", "--format", "csv"),
        ("export", "--format", "openmetrics"),
        ("report", "--format", "html"),
        ("report", "--format", "json", "--exact"),
    ],
    ids=["csv", "openmetrics", "html", "json"],
)
def test_a_report_or_export_that_fills_the_disk_leaves_the_older_out(
    tiny_fs: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """OUT is written to a temporary file next to it and renamed over it only when
    complete: on a full disk the older OUT is kept whole and nothing is left beside it."""
    out = tiny_fs / "lab.out"
    out.write_text(OLDER)
    _fill(tiny_fs, leave=8192)  # a few KiB of the output go in, then the disk is full
    name, *rest = command
    done = _kvmtop(name, LAB, *rest, "-o", out, tmpdir=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (f"kvmtop: cannot write {out}: No space left on device")
    assert "Traceback" not in done.stderr
    assert out.read_text() == OLDER
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["filler", "lab.out"]


def test_reindex_of_a_recording_on_a_read_only_filesystem_is_exit_1(tiny_fs: Path) -> None:
    """Its index cannot be written: an output that cannot be written, status 1 (it
    was 2, as for a damaged recording), one line, the file as it was."""
    path = tiny_fs / "rec.kvmtop"
    writer = StoreWriter(path)
    for sample in make_samples(3):
        writer.append(sample)
    writer.close()
    before = path.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    done = _kvmtop("reindex", path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"kvmtop: cannot write recording {path}: Read-only file system"
    ]
    assert path.read_bytes() == before
