"""Damaged or unusual recordings as users met them (#16): a broken page in a copy of
the lab sample, a file cut to a tenth, a copy without its log, a hot journal, a log in
a directory the reader may not write. Every reader reads every intact sample, says
what it skipped, and ends in one clear line and status 2 when nothing can be read.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvmtop.commands.main import main
from kvmtop.config import Settings
from kvmtop.feed.replay import ReplayFeed
from kvmtop.store.meta import StoreError
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from kvmtop.wiring import build_pipeline
from tests.store.conftest import make_samples

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "fixtures" / "recordings" / "lab-sample-format3.kvmtop"
PAGE = 1024
"""The lab sample's page size (`kvmtop.store.writer.PAGE_SIZE`)."""

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A copy of the lab sample (the example itself is never touched)."""
    return Path(shutil.copy(LAB, tmp_path / "lab.kvmtop"))


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """`kvmtop ARGS` in-process with an empty config: (status, stdout, stderr)."""
    config = tmp_path / "config.toml"
    config.write_text("")

    def run(*args: str | Path) -> tuple[int, str, str]:
        status = main([*map(str, args), "--config", str(config)])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return status, out, err

    return run


def _times(path: Path) -> dict[int, float]:
    """Index → wall time of every sample an intact reader reads."""
    with StoreReader(path) as r:
        out: dict[int, float] = {}
        index = r.first_index()
        while index is not None:
            sample = r.read(index)
            if sample is not None:
                out[index] = sample.wall_s
            index = r.next_index(index)
        return out


def _row_page(path: Path, index: int) -> int:
    """File offset of the page holding the row of sample `index` (its leaf page)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        data = conn.execute("SELECT data FROM samples WHERE id = ?", (index,)).fetchone()[0]
    offset = path.read_bytes().find(data[:24])
    assert offset > 0
    return offset - offset % PAGE


def _garble(path: Path, offset: int, n: int = 32, seed: int = 4) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(random.Random(seed).randbytes(n))


# ----------------------------------------------------------------- 1: a damaged page


def test_every_reader_goes_on_past_a_damaged_page(lab: Path, tmp_path: Path, run: Run) -> None:
    original = _times(LAB)
    assert len(original) == 121
    # 32 random bytes over the header of the page holding sample #25: SQLite finds
    # the page malformed; the rows after it are on pages of their own. Sample #25
    # and the rest of its chain of delta rows (#21-#30) cannot be read.
    _garble(lab, _row_page(lab, 25))
    lost = set(range(25, 31))
    intact = [t for i, t in original.items() if i not in lost]

    status, out, err = run("replay", lab, "--batch", "--format", "json")
    assert status == 0
    # The first sample only primes the rates; then every intact one, to the end.
    assert [x["time"] for x in map(json.loads, out.splitlines())] == [
        round(t, 3) for t in intact[1:]
    ]
    # One line for the six samples lost, naming the run, its span and why.
    assert err.count("skipped") == 1
    assert f"{lab}: samples #25 to #30 (6 samples, " in err
    assert "skipped: unreadable: database disk image is malformed; it is stored against " in err

    status, out, err = run("export", lab, "--format", "jsonl")
    assert status == 0 and len(out.splitlines()) == len(intact)
    status, out, _ = run("report", lab, "--exact", "--format", "json")
    assert status == 0 and json.loads(out)["range"]["samples"] == len(intact)
    status, _, err = run("slice", lab, "-o", tmp_path / "cut.kvmtop")
    assert status == 0 and f"{len(intact)} samples written" in err
    assert list(_times(tmp_path / "cut.kvmtop").values()) == intact


def test_the_replay_feed_plays_every_intact_sample(lab: Path) -> None:
    _garble(lab, _row_page(lab, 25))
    expected = _times(lab)
    feed = ReplayFeed(StoreReader(lab), build_pipeline(Settings()))
    try:
        played = []
        while (frame := feed.next()) is not None:
            played.append(frame.wall_s)
        assert played == list(expected.values())
        assert len(played) == 115
        assert [line.split(" (")[0] for line in feed.notices] == ["samples #25 to #30"]
        # Stepping back over the damage lands on the sample before it.
        assert feed.seek(expected[31]) is not None and feed.position == 31
        assert feed.step(-1) is not None and feed.position == 24
    finally:
        feed.close()


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """An SQLite varint at `at`: (value, its length) (fileformat2.html §1.6)."""
    value = 0
    for n in range(9):
        byte = data[at + n]
        if n == 8:
            return (value << 8) | byte, 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, n + 1
    raise AssertionError("unreachable")


def _garble_key(path: Path, index: int, key: int) -> None:
    """Change the row id of sample `index` to `key` in its table leaf cell (a page:
    8-byte header, 2-byte cell pointers; a cell: payload length, then the row id,
    as varints: fileformat2.html §1.6)."""
    page = _row_page(path, index)
    data = bytearray(path.read_bytes())
    assert data[page] == 0x0D  # a table b-tree leaf
    (cells,) = struct.unpack_from(">H", data, page + 3)
    for n in range(cells):
        (cell,) = struct.unpack_from(">H", data, page + 8 + 2 * n)
        _, length = _varint(data, page + cell)
        rowid, size = _varint(data, page + cell + length)
        if rowid == index:
            assert size == 1 and key < 0x80
            data[page + cell + length] = key
            path.write_bytes(data)
            return
    raise AssertionError(f"no cell of sample #{index}")


def test_a_garbled_first_key_hides_no_sample(lab: Path, run: Run) -> None:
    # Sample #1's key reads 125: the table's first key is past its last (121). The
    # time index still knows #1. #1 and #2 (whose key SQLite no longer finds in
    # their leaf, out of order now) are missing; #3-#10 are stored against them.
    _garble_key(lab, 1, 125)
    original = _times(LAB)
    status, out, err = run("replay", lab, "--batch", "--format", "json")
    assert status == 0
    assert [x["time"] for x in map(json.loads, out.splitlines())] == [
        round(original[i], 3) for i in range(12, 122)
    ]
    # One line for the ten: #1 and #2 have no time left, so the run has no span.
    assert err.splitlines() == [
        f"kvmtop: {lab}: samples #1 to #10 (10 samples) skipped: missing (its page is "
        "damaged); it is stored against sample #2, which is missing or damaged"
    ]


# ------------------------------------------------------------------- 2: cut short


def _cut(path: Path, share: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])
    return path


def test_a_file_cut_to_a_tenth_reads_without_an_exception(lab: Path) -> None:
    _cut(lab, 0.1)
    with StoreReader(lab) as r:
        assert list(r.iter()) == []
        for index in range(-2, 130):
            assert r.read(index) is None
        assert r.notices[0].startswith("the file is cut short (16896 of 168960 bytes)")


@pytest.mark.parametrize(
    "command",
    [
        ("replay", "--batch"),
        ("replay",),
        ("report",),
        ("report", "--exact"),
        ("export", "--format", "csv"),
        ("slice", "-o", "{tmp}/out.kvmtop"),
        ("reindex",),
    ],
)
def test_a_file_cut_to_a_tenth_is_one_line_and_status_2(
    lab: Path, tmp_path: Path, run: Run, command: tuple[str, ...]
) -> None:
    _cut(lab, 0.1)
    name, *rest = command
    status, out, err = run(name, lab, *(a.format(tmp=tmp_path) for a in rest))
    assert status == 2
    assert err.splitlines() == [
        f"kvmtop: {lab}: no sample can be read (4 problems; the first: the file is cut "
        "short (16896 of 168960 bytes): the samples stored past the cut are lost)"
    ]
    assert out == ""
    assert not (tmp_path / "out.kvmtop").exists()


def test_a_file_cut_in_half_reads_what_is_before_the_cut(lab: Path, run: Run) -> None:
    original = _times(LAB)
    _cut(lab, 0.5)
    got = _times(lab)
    assert 40 < len(got) < 121
    assert all(original[i] == t for i, t in got.items())
    status, out, err = run("replay", lab, "--batch", "--format", "json")
    assert status == 0 and len(out.splitlines()) == len(got) - 1
    assert "cut short" in err and "the end of the file cannot be read" in err


@pytest.mark.parametrize("fmt", ["text", "md", "html", "json"])
def test_a_report_counts_the_damaged_samples_not_the_notices(
    lab: Path, tmp_path: Path, run: Run, fmt: str
) -> None:
    """Six samples lost to a damaged page and a file cut short by its last page: the
    report says 6 damaged samples; the cut is a notice about the file, not a sample."""
    _garble(lab, _row_page(lab, 25))
    data = lab.read_bytes()
    lab.write_bytes(data[:-PAGE])
    out = tmp_path / f"report.{fmt}"
    status, _, err = run("report", lab, "--exact", "--format", fmt, "-o", out)
    assert status == 0
    # One line for the run of six samples, one for the cut.
    assert "cut short" in err and err.count("skipped") == 1
    assert "samples #25 to #30 (6 samples, " in err
    with StoreReader(lab) as r:
        list(r.iter())
        assert len(r.skipped) == 6 and len(r.notices) == 2
    if fmt == "json":  # the count, and every notice: the samples' and the file's
        doc = json.loads(out.read_text())
        assert doc["range"]["skipped"] == 6 and len(doc["notices"]) == 2
    else:
        assert "6 damaged samples" in out.read_text()


def test_a_damaged_schema_is_no_empty_recording(tmp_path: Path, run: Run) -> None:
    # Page 1 damaged so that SQLite still parses the schema, but `id` is no longer
    # the row id: every lookup by id finds nothing. It read as a recording without
    # samples (exit 0, no output, no word); it holds 40 that cannot be found.
    path = tmp_path / "schema.kvmtop"
    writer = StoreWriter(path)
    for sample in make_samples(40, guests=2):
        writer.append(sample)
    writer.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, 'id INTEGER PRIMARY KEY', "
            "'id INTEG_R PRIMARY KEY') WHERE name = 'samples'"
        )
    status, out, err = run("replay", path, "--batch")
    assert (status, out) == (2, "")
    assert err == (
        f"kvmtop: {path}: no sample can be read (1 problem; the first: the "
        "first sample cannot be found: the table of samples and its time index "
        "are damaged (database disk image is malformed))\n"
    )


def test_a_tui_that_fails_exits_1(
    recording: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kvmtop.app.main

    class Failing:
        return_code = 1  # what Textual sets when the app ended on an exception

        def __init__(self, *args: Any, **kw: Any) -> None:
            pass

        def run(self) -> None:
            pass

    monkeypatch.setattr(kvmtop.app.main, "KvmtopApp", Failing)
    assert run("replay", recording)[0] == 1


# ------------------------------------------------- 3: logs, journals, read-only places

WRITER = """
import os, sys
from kvmtop.store.writer import StoreWriter
from tests.store.synth import SyntheticHost
host, writer = SyntheticHost(2), StoreWriter(sys.argv[1])
for _ in range(int(sys.argv[2])):
    writer.append(host.sample())
os._exit(0)  # killed: the log is not folded back, its -wal and -shm stay
"""


def _killed_recorder(path: Path, samples: int) -> Path:
    """A recording whose writer died after `samples` samples (left in WAL mode)."""
    subprocess.run([sys.executable, "-c", WRITER, str(path), str(samples)], cwd=ROOT, check=True)
    assert Path(f"{path}-wal").stat().st_size > 0
    return path


def test_a_copy_without_its_log_says_so(tmp_path: Path, run: Run) -> None:
    killed = _killed_recorder(tmp_path / "live.kvmtop", 5)
    copy = Path(shutil.copy(killed, tmp_path / "copy.kvmtop"))  # without copy.kvmtop-wal
    with pytest.raises(
        StoreError,
        match=r"in WAL mode without its log: its content is in "
        r".*copy\.kvmtop-wal, which is missing; copy that file next to it",
    ):
        StoreReader(copy)
    status, _, err = run("replay", copy, "--batch")
    assert status == 2 and "another application" not in err and "-wal" in err
    shutil.copy(f"{killed}-wal", f"{copy}-wal")
    with StoreReader(copy) as r:
        assert list(r.iter()) == make_samples(5, guests=2)


HOT = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = {cache}")
conn.execute("BEGIN IMMEDIATE")
for i in range({rows}):
    conn.execute("INSERT INTO samples (t, data) VALUES (?, randomblob(3000))", (2e9 + i,))
os._exit(0)  # killed inside the transaction: the journal stays, hot
"""


def _hot(path: Path, *, rows: int, cache: int) -> Path:
    subprocess.run(
        [sys.executable, "-c", HOT.format(rows=rows, cache=cache), str(path)], check=True
    )
    assert Path(f"{path}-journal").stat().st_size > 0
    return path


def test_a_journal_of_a_write_killed_before_it_changed_the_file_is_no_matter(
    lab: Path,
) -> None:
    _hot(lab, rows=1, cache=2000)  # one row, kept in the cache: the journal is not hot
    with StoreReader(lab) as r:
        assert len(list(r.iter())) == 121 and r.notices == []


def test_a_hot_journal_says_how_to_roll_it_back(lab: Path, run: Run) -> None:
    _hot(lab, rows=60, cache=2)  # the cache spills: the journal is hot, the file changed
    before = lab.read_bytes()
    status, _, err = run("report", lab)
    assert status == 2
    assert err == (
        f"kvmtop: {lab}: a write to it was interrupted and its journal ({lab}-journal) must "
        "be rolled back before it can be read; as a user who may write the file and its "
        f"directory, run `sqlite3 {lab} 'PRAGMA quick_check'` (any SQLite program that "
        f"opens it for writing rolls it back), and keep {lab}-journal until then\n"
    )
    assert lab.read_bytes() == before  # the reader changed nothing
    # What the message says works: a connection that may write rolls it back.
    with sqlite3.connect(lab) as conn:
        conn.execute("PRAGMA quick_check")
    with StoreReader(lab) as r:
        assert len(list(r.iter())) == 121 and r.notices == []


def test_a_log_in_a_read_only_directory_is_read(tmp_path: Path, tiny_fs: Path, run: Run) -> None:
    killed = _killed_recorder(tmp_path / "rec.kvmtop", 5)  # every sample in the log
    path = Path(shutil.copy(killed, tiny_fs / "rec.kvmtop"))
    shutil.copy(f"{killed}-wal", f"{path}-wal")  # no -shm: nobody has it open
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with StoreReader(path) as r:
        assert list(r.iter()) == make_samples(5, guests=2)
        assert r.notices == [
            f"cannot create {path}-shm (its directory is read-only to this user): read the "
            f"file and its log {path}-wal without it, as no recorder is writing it"
        ]
    status, out, err = run("replay", path, "--batch", "--format", "json")
    assert status == 0 and len(out.splitlines()) == 4 and "-shm" in err
