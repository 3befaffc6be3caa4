"""Store: write and read back, header, seek, follow mode, permissions, versions."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmtop import __version__
from kvmtop.model.sample import SCHEMA_VERSION, Sample
from kvmtop.store import writer
from kvmtop.store.meta import FORMAT_VERSION, StoreError
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from tests.records import replace
from tests.store.conftest import make_samples, write

FORMAT_1 = Path(__file__).resolve().parents[1] / "fixtures/recordings/lab-sample.kvmtop"
"""A real lab recording as kvmtop wrote it in format 1 (whole-sample rows, no index)."""


def test_write_then_read_everything_back(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "DICTIONARY_EVERY", 45)  # several blocks in play
    path = write(tmp_path / "blocks.kvmtop", samples)
    with StoreReader(path) as r:
        assert r.count() == len(samples)
        assert list(r.iter()) == samples
        assert [r.read(i) for i in range(1, len(samples) + 1)] == samples
        assert r.notices == []
        assert _count(path, "dictionaries") == 3
    order = list(range(1, len(samples) + 1))
    random.Random(7).shuffle(order)  # cold reads: each walks its chain back
    with StoreReader(path) as r:
        assert [r.read(i) for i in order] == [samples[i - 1] for i in order]


def _count(path: Path, table: str, where: str = "1") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0])


def test_a_sample_of_another_shape_starts_a_block(tmp_path: Path) -> None:
    # A guest more (another shape) from sample 30 on; then a sample whose text holds
    # what delta rows use for a hole ("NaN" in a guest name) is stored whole.
    three, four = make_samples(30), make_samples(30, guests=4)
    odd = replace(four[0], guests=tuple(replace(g, name=f"NaN-{g.name}") for g in four[0].guests))
    samples = [*three, *four[:10], odd, *four[10:]]
    path = write(tmp_path / "shapes.kvmtop", samples)
    with StoreReader(path) as r:
        assert list(r.iter()) == samples
        assert r.notices == []
    # Three blocks: the first, the four guests', and the one after the whole sample
    # (its chain broken).
    assert _count(path, "dictionaries") == 3
    assert _count(path, "samples", "dict_id IS NULL") == 1


def test_header_describes_the_host(recording: Path, samples: list[Sample]) -> None:
    with StoreReader(recording) as r:
        m = r.meta
    assert (m.format_version, m.schema_version, m.kvmtop_version) == (
        FORMAT_VERSION,
        SCHEMA_VERSION,
        __version__,
    )
    assert (m.hostname, m.kernel, m.interval_s) == ("hv-lab-01", "6.1.0-28-amd64", 2.0)
    assert (m.libvirt_version, m.hypervisor, m.uri) == ("9.0.0", "QEMU 7.2.0", "qemu:///system")
    assert m.collectors == ("host", "libvirt", "sched")
    assert m.sources["libvirt"]["libvirt_client"] == "9.0.0"


def test_an_empty_recording_has_a_header_and_no_samples(tmp_path: Path) -> None:
    StoreWriter(tmp_path / "e.kvmtop").close()
    with StoreReader(tmp_path / "e.kvmtop") as r:
        assert r.meta.hostname is None and r.meta.collectors == ()
        assert (r.count(), r.first_index(), r.first_time(), r.seek(0)) == (0, None, None, None)
        assert list(r.iter()) == []


def test_seek_edges(recording: Path, samples: list[Sample]) -> None:
    t0, t_last = samples[0].wall_s, samples[-1].wall_s
    with StoreReader(recording) as r:
        assert (r.first_time(), r.last_time()) == (t0, t_last)
        assert r.seek(t0 - 3600) == 1  # before the first: the first
        assert r.seek(t0) == 1  # exact
        assert r.seek(samples[10].wall_s) == 11  # exact, inside
        assert r.seek(samples[10].wall_s + 0.5) == 12  # between two: the later one
        assert r.seek(t_last) == len(samples)  # exact, last
        assert r.seek(t_last + 0.001) is None  # after the last: none
        assert r.time_of(11) == samples[10].wall_s
        assert (r.next_index(5), r.prev_index(5)) == (6, 4)
        assert (r.next_index(len(samples)), r.prev_index(1)) == (None, None)


def test_iter_a_time_range(recording: Path, samples: list[Sample]) -> None:
    with StoreReader(recording) as r:
        got = list(r.iter(samples[20].wall_s - 1, samples[29].wall_s))
        assert got == samples[20:30]
        assert list(r.iter(from_s=samples[-1].wall_s + 1)) == []
        assert list(r.iter(to_s=samples[0].wall_s - 1)) == []


def test_follow_mode_sees_rows_appended_after_opening(tmp_path: Path) -> None:
    samples = make_samples(8)
    path = tmp_path / "live.kvmtop"
    writer = StoreWriter(path)
    for s in samples[:3]:
        writer.append(s)
    reader = StoreReader(path)
    assert reader.count() == 3
    for s in samples[3:]:
        writer.append(s)
    assert reader.count() == 8
    assert reader.read(8) == samples[7]
    assert list(reader.iter()) == samples
    writer.close()  # with a reader open the file stays in WAL mode: nothing lost
    reader.close()
    with StoreReader(path) as again:
        assert list(again.iter()) == samples


def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "private.kvmtop"
    writer = StoreWriter(path)
    writer.append(make_samples(1)[0])
    for p in (path, Path(f"{path}-wal")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    writer.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not Path(f"{path}-wal").exists()  # closed: one self-contained file


def test_appending_to_an_existing_recording_resumes_it(
    make_recording: Callable[..., Path], samples: list[Sample]
) -> None:
    path = make_recording(samples[:70])
    writer = StoreWriter(path)
    for s in samples[70:]:
        writer.append(s)
    writer.close()
    with StoreReader(path) as r:
        assert list(r.iter()) == samples


def test_appending_to_a_format_1_recording_writes_blocks_after_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.kvmtop"
    shutil.copyfile(FORMAT_1, path)
    with StoreReader(path) as r:
        old = list(r.iter())
        assert r.meta.format_version == 1
    step = old[-1].interval_s
    more = [
        replace(s, wall_s=s.wall_s + 1000 * step, mono_ns=s.mono_ns + int(1000 * step * 1e9))
        for s in old[:25]
    ]
    write(path, more)
    with StoreReader(path) as r:
        assert r.meta.format_version == FORMAT_VERSION
        assert list(r.iter()) == old + more
        assert r.notices == []


def _set_meta(path: Path, **values: str) -> None:
    with sqlite3.connect(path) as conn:
        for key, value in values.items():
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))


@pytest.mark.parametrize("key", ["schema_version", "format_version"])
def test_a_newer_major_version_is_refused_clearly(recording: Path, key: str) -> None:
    _set_meta(recording, **{key: "99", "kvmtop_version": '"9.0"'})
    with pytest.raises(StoreError, match=r"written by kvmtop 9\.0 .*upgrade kvmtop"):
        StoreReader(recording)
    with pytest.raises(StoreError, match=r"upgrade kvmtop"):
        StoreWriter(recording)


def test_an_older_schema_is_read(recording: Path, samples: list[Sample]) -> None:
    _set_meta(recording, schema_version="0")
    with StoreReader(recording) as r:
        assert r.meta.schema_version == 0
        assert r.read(1) == samples[0]


def test_recordings_from_before_shaping_rates_read_them_as_unknown() -> None:
    """NetDevSample.shaped_mbps / shaped_by came later: older files read them as None."""
    with StoreReader(FORMAT_1) as r:
        nets = [n for s in r.iter() if s.host is not None for n in s.host.netdevs]
        assert r.notices == []
    assert {"labup0", "labov0"} <= {n.name for n in nets}
    assert all(n.shaped_mbps is None and n.shaped_by is None for n in nets)


def test_shaping_rates_are_recorded(tmp_path: Path, samples: list[Sample]) -> None:
    shaped = []
    for s in samples[:5]:
        assert s.host is not None
        netdevs = tuple(
            replace(n, shaped_mbps=12.5, shaped_by="tbf") if n.kind == "physical" else n
            for n in s.host.netdevs
        )
        shaped.append(replace(s, host=replace(s.host, netdevs=netdevs)))
    assert any(n.shaped_mbps for s in shaped if s.host is not None for n in s.host.netdevs)
    with StoreReader(write(tmp_path / "shaped.kvmtop", shaped)) as r:
        assert list(r.iter()) == shaped


def test_a_recording_is_not_appended_to_by_another_schema(recording: Path) -> None:
    _set_meta(recording, schema_version="0")
    with pytest.raises(StoreError, match="record to a new file"):
        StoreWriter(recording)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such recording"),
        (b"", "empty file"),
        (b"timestamp,cpu\n1,2\n", "not an SQLite file"),
        (b"SQLite format 3\x00" + b"\x00" * 10, "damaged or truncated"),
    ],
)
def test_files_that_are_not_recordings(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.kvmtop"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StoreError, match=message):
        StoreReader(path)


def test_another_applications_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="SQLite file of another application"):
        StoreReader(path)
    with pytest.raises(StoreError, match="not a kvmtop recording"):
        StoreWriter(path)
    assert os.path.getsize(path) > 0  # left as it was
