"""The headless recorder: duration, write errors, SIGTERM and SIGHUP on a real process."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmtop.headless.recorder import Recorder
from kvmtop.model.sample import Sample
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from tests.store.synth import SyntheticHost

ROOT = Path(__file__).resolve().parents[2]


class ClockedSampler:
    """A synthetic sampler whose every tick advances a fake monotonic clock."""

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.host = SyntheticHost(2, interval_s=interval_s)
        self.now = 0.0
        self.taken: list[Sample] = []

    def clock(self) -> float:
        return self.now

    def sample(self) -> Sample:
        s = self.host.sample()
        self.taken.append(s)
        self.now += self.interval_s  # collecting "took" a whole interval: no sleeping
        return s

    def close(self) -> None:
        pass


def test_duration_counts_samples_inclusively(tmp_path: Path) -> None:
    sampler = ClockedSampler()
    path = tmp_path / "d.kvmtop"
    rec = Recorder(
        sampler, lambda: StoreWriter(path), duration_s=10, clock=sampler.clock, log=io.StringIO()
    )
    assert rec.run() == 0
    assert rec.written == 6  # t = 0, 2, 4, 6, 8, 10
    with StoreReader(path) as r:
        assert list(r.iter()) == sampler.taken


def test_a_write_error_ends_with_status_1_and_keeps_the_file(tmp_path: Path) -> None:
    sampler = ClockedSampler()
    path = tmp_path / "e.kvmtop"

    class FailsOnThird(StoreWriter):
        def append(self, sample: Sample) -> None:
            if len(sampler.taken) == 3:
                raise OSError(28, "No space left on device")
            super().append(sample)

    log = io.StringIO()
    rec = Recorder(sampler, lambda: FailsOnThird(path), clock=sampler.clock, log=log)
    assert rec.run() == 1
    assert "No space left on device" in log.getvalue()
    assert "stopped after 2 samples" in log.getvalue()
    with StoreReader(path) as r:
        assert list(r.iter()) == sampler.taken[:2]


def test_a_failure_after_the_commit_counts_the_sample(tmp_path: Path) -> None:
    # On a full disk the sample's row may get in and what follows it fail (the WAL
    # checkpoint, retention, the index's rollup): the count is what the file holds.
    sampler = ClockedSampler()
    path = tmp_path / "c.kvmtop"

    class FullAfterThird(StoreWriter):
        def _apply_retention(self, newest_s: float) -> None:
            if len(sampler.taken) == 3:
                full = sqlite3.OperationalError("database or disk is full")
                full.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
                raise full

    log = io.StringIO()
    rec = Recorder(sampler, lambda: FullAfterThird(path), clock=sampler.clock, log=log)
    assert rec.run() == 1
    assert log.getvalue() == (
        f"kvmtop record: cannot write recording {path}: disk full; "
        "stopped after 3 samples, which stay readable\n"
    )
    with StoreReader(path) as r:
        assert list(r.iter()) == sampler.taken[:3]


def test_reopen_request_starts_a_new_file(tmp_path: Path) -> None:
    sampler = ClockedSampler()
    path = tmp_path / "r.kvmtop"
    rec = Recorder(
        sampler, lambda: StoreWriter(path), duration_s=8, clock=sampler.clock, log=io.StringIO()
    )
    original = sampler.sample

    def rotate_after_two() -> Sample:
        if len(sampler.taken) == 2:
            path.rename(tmp_path / "r.kvmtop.1")  # what logrotate does, then SIGHUP
            rec.request_reopen()
        return original()

    sampler.sample = rotate_after_two  # type: ignore[method-assign]
    assert rec.run() == 0
    with StoreReader(tmp_path / "r.kvmtop.1") as old, StoreReader(path) as new:
        assert list(old.iter()) + list(new.iter()) == sampler.taken
        assert old.count() == 2


CHILD = """
import sys
from kvmtop.headless.recorder import Recorder
from kvmtop.store.writer import StoreWriter
from tests.store.synth import SyntheticHost

class Announcing:
    interval_s = 0.02
    def __init__(self):
        self.host, self.n = SyntheticHost(2, interval_s=0.02), 0
    def sample(self):
        self.n += 1
        print(self.n, flush=True)  # the test paces its signals on these lines
        return self.host.sample()
    def close(self):
        pass

rec = Recorder(Announcing(), lambda: StoreWriter(sys.argv[1]))
rec.install_signal_handlers()
sys.exit(rec.run())
"""


def test_sighup_reopens_and_sigterm_flushes_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "daemon.kvmtop"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None

    def wait_for(n: int) -> int:
        while (got := int(child.stdout.readline())) < n:  # type: ignore[union-attr]
            pass
        return got

    wait_for(5)
    path.rename(tmp_path / "daemon.kvmtop.1")
    child.send_signal(signal.SIGHUP)
    wait_for(12)
    child.send_signal(signal.SIGTERM)
    rest, err = child.communicate()
    sampled = int(rest.split()[-1]) if rest.split() else 12
    assert child.returncode == 0, err
    assert "reopened" in err
    with StoreReader(tmp_path / "daemon.kvmtop.1") as old, StoreReader(path) as new:
        assert old.count() >= 4 and new.count() >= 1
        # Every sample taken was written, the one in progress at SIGTERM included.
        assert old.count() + new.count() == sampled
        assert new.notices == [] and old.notices == []
    assert not Path(f"{path}-wal").exists()  # closed cleanly


def test_cli_record_against_the_libvirt_test_driver(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    path = tmp_path / "cli.kvmtop"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvmtop",
            "record",
            "-o",
            str(path),
            "-c",
            "test:///default",
            "--interval",
            "0.2",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait (bounded) for a few samples to be committed; nothing asserts on timing.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if path.exists():
            try:
                with StoreReader(path) as r:
                    if r.count() >= 3:
                        break
            except Exception:
                pass  # the file exists but its header is not committed yet
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert "samples written to" in err
    with StoreReader(path) as r:
        assert r.count() >= 3
        assert r.meta.uri == "test:///default"
        assert {"host", "libvirt", "sched"} <= set(r.meta.collectors)
        sample = r.read(r.first_index() or 1)
        # The recorder indexed what it wrote (kvmtop.report.index): SIGTERM flushed the last
        # minute, so the index covers every sample.
        rollups = r.rollups()
        assert rollups and sum(n for _, _, n, _ in rollups) == r.count()
    # The test driver's one domain; KVM processes of this host join as unmanaged guests.
    assert sample is not None and "test" in [g.name for g in sample.guests]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_recording_paths_never_load_the_tui() -> None:
    code = (
        "import sys, kvmtop.commands.record, kvmtop.store.reader, kvmtop.store.writer, "
        "kvmtop.store.slice, kvmtop.report.index, kvmtop.commands.main; "
        "print('textual' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "False"


def test_cli_record_without_the_index(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    path = tmp_path / "plain.kvmtop"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvmtop",
            "record",
            "-o",
            str(path),
            "-c",
            "test:///default",
            "--interval",
            "0.2",
            "--duration",
            "0.6",
            "--no-index",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with StoreReader(path) as r:
        assert r.count() >= 3
        assert r.rollups() == [] and r.rollups(hours=True) == []


class FastSampler:
    """The sampler `kvmtop record` builds, replaced by a synthetic one that takes
    its samples as fast as the disk takes them."""

    interval_s = 0.001
    guests = None  # no libvirt connection to check

    def __init__(self) -> None:
        self.host = SyntheticHost(6)

    def sample(self) -> Sample:
        return self.host.sample()

    def trace(self, guests: list[str]) -> None:
        pass

    def close(self) -> None:
        pass


def test_cli_record_on_a_full_disk_exits_1_with_one_error(
    tiny_fs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import kvmtop.commands.main
    import kvmtop.commands.record

    monkeypatch.setattr(kvmtop.commands.record, "build_sampler", lambda _settings: FastSampler())
    monkeypatch.setattr(Recorder, "install_signal_handlers", lambda _self: None)
    config = tmp_path / "config.toml"
    config.write_text("")
    path = tiny_fs / "full.kvmtop"  # a real 128 KiB tmpfs: the disk fills up
    status = kvmtop.commands.main.main(["record", "-o", str(path), "--config", str(config)])
    err = capsys.readouterr().err.splitlines()
    with StoreReader(path) as r:
        written = len(list(r.iter()))
        assert r.notices == [] and written == r.count() > 5
    assert status == 1  # as the manual says for a write error
    assert err[1:] == [
        f"kvmtop record: cannot write recording {path}: disk full; stopped after "
        f"{written} samples, which stay readable",
        f"kvmtop record: {written} samples written to {path}",
    ]
