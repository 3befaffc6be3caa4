"""Damaged recordings: a killed writer, a truncated file, flipped bits, a broken page.

Whatever the damage, every sample that can be read is read, the rest is skipped with
a notice, and nothing raises past the header.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kvmtop.model.sample import Sample
from kvmtop.store.meta import StoreError
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import CHAIN, StoreWriter
from tests.store.conftest import make_samples

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import itertools, sys
from kvmtop.store.writer import CHAIN, StoreWriter
from tests.store.synth import SyntheticHost
host, writer = SyntheticHost(3), StoreWriter(sys.argv[1])
for i in itertools.count(1):
    writer.append(host.sample())
    print(i, flush=True)
"""


def test_the_synthetic_samples_are_reproducible() -> None:
    # The kill -9 test compares what a child process wrote with a fresh sequence.
    assert make_samples(3) == make_samples(3)


def test_kill_9_loses_at_most_the_sample_being_written(tmp_path: Path) -> None:
    path = tmp_path / "killed.kvmtop"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    committed = 0
    while committed < 60:  # past the first reference dictionary and a checkpoint
        committed = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)  # lands wherever the writer is, mid-append or not
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").exists()  # not closed cleanly: the log holds the tail
    expected = make_samples(committed + 5)
    with StoreReader(path) as r:
        got = list(r.iter())
        assert r.notices == []
    assert len(got) >= committed
    assert got == expected[: len(got)]
    # A new recorder continues the same file after the crash.
    writer = StoreWriter(path)
    writer.append(expected[len(got)])
    writer.close()
    with StoreReader(path) as r:
        assert r.count() == len(got) + 1


def _blob_offset(path: Path, index: int) -> int:
    """File offset of the first bytes of a sample's blob (its local part on the page)."""
    with sqlite3.connect(path) as conn:
        data = conn.execute("SELECT data FROM samples WHERE id = ?", (index,)).fetchone()[0]
    offset = path.read_bytes().find(data[:24])
    assert offset > 0
    return offset


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x40]))


def test_a_flipped_bit_in_a_blob_skips_that_sample_and_the_rest_of_its_chain(
    recording: Path, samples: list[Sample]
) -> None:
    # Rows 31-40 are one chain (a checkpoint every CHAIN rows from the block's first):
    # 36-40 are stored against 35.
    assert CHAIN == 10
    _flip(recording, _blob_offset(recording, 35) + 20)
    with StoreReader(recording) as r:
        assert r.read(35) is None
        assert len(r.notices) == 1 and r.notices[0].startswith("sample #35 (")
        assert "skipped" in r.notices[0]
        assert r.read(34) == samples[33] and r.read(38) is None
        assert "stored against sample #35" in r.notices[-1]
        got = list(r.iter())
        assert got == samples[:34] + samples[40:]  # replays up to and past the damage
        # The six samples lost are one run, told in one line (36-37 joined the
        # runs 35 and 38 when the iteration reached them).
        assert r.skipped == set(range(35, 41))
        assert len(r.notices) == 1
        assert r.notices[0].startswith("samples #35 to #40 (6 samples, ")
        assert "stored against sample #35" in r.notices[0]
    with StoreReader(recording) as r:  # stepping back over the damage: one run too
        assert [r.read(i) for i in (40, 39, 38)] == [None] * 3
        assert [n.split(" (")[0] for n in r.notices] == ["samples #38 to #40"]


def test_a_damaged_page_is_skipped_and_reading_goes_on(
    recording: Path, samples: list[Sample]
) -> None:
    page_size = 1024
    offset = _blob_offset(recording, 60)
    page = offset - offset % page_size
    with open(recording, "r+b") as f:
        f.seek(page)
        f.write(b"\xff" * page_size)  # the leaf page holding sample 60's row: garbage
    with StoreReader(recording) as r:
        got = list(r.iter())
        assert r.notices, "the damage must be reported"
        lost = {s.wall_s for s in samples} - {s.wall_s for s in got}
        assert samples[59].wall_s in lost
        assert got[-1] == samples[-1]  # reading went on past the damage
        assert len(lost) < 10
        assert got == [s for s in samples if s.wall_s not in lost]


def test_a_truncated_file_reads_up_to_the_cut(recording: Path, samples: list[Sample]) -> None:
    data = recording.read_bytes()
    recording.write_bytes(data[: len(data) * 2 // 3])
    with StoreReader(recording) as r:
        got = list(r.iter())
        assert r.notices
    assert len(got) > len(samples) // 3
    assert got == [s for s in samples if s in got]
    assert got[0] == samples[0]


def test_a_file_cut_inside_its_header_is_refused(recording: Path) -> None:
    recording.write_bytes(recording.read_bytes()[:300])
    with pytest.raises(StoreError, match="damaged or truncated"):
        StoreReader(recording)
