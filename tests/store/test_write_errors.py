"""Disk full and read-only paths: a clear OSError, and nothing already written is lost."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvmtop.feed import LiveFeed, Pipeline
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


def _kvmtop(*args: str | Path, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m kvmtop ARGS` with an empty config (`tmpdir`: its TMPDIR, which SQLite
    reads for its temporary files when it starts)."""
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": "/nonexistent"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run([sys.executable, "-m", "kvmtop", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


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
        f"kvmtop: cannot write recording {path}: Read-only file system"]
    assert path.read_bytes() == before
