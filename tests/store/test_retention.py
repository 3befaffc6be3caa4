"""Retention by age and size, and slicing a time range into a new file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmtop.model.sample import Sample
from kvmtop.store.meta import StoreError
from kvmtop.store.reader import StoreReader
from kvmtop.store.slice import slice_recording
from kvmtop.store.writer import CHAIN, Retention, StoreWriter
from tests.store.conftest import make_samples


def _dictionaries(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM dictionaries").fetchone()[0])


def test_age_retention_keeps_the_last_max_age(
    make_recording: Callable[..., Path], samples: list[Sample]
) -> None:
    path = make_recording(samples, retention=Retention(max_age_s=60))
    with StoreReader(path) as r:
        got = list(r.iter())
        assert r.notices == []
    newest = samples[-1].wall_s
    recent = [s for s in samples if s.wall_s >= newest - 60]
    assert got == samples[-len(got) :]  # a contiguous tail, every row readable
    # Rows go in whole chains: the older rows of the first kept one's chain stay.
    assert len(recent) <= len(got) < len(recent) + CHAIN
    assert _dictionaries(path) <= 2  # the ones no remaining sample uses are gone


def test_size_retention_bounds_the_file(tmp_path: Path) -> None:
    samples = make_samples(300, guests=6)
    limit = 150_000
    path = tmp_path / "ring.kvmtop"
    writer = StoreWriter(path, retention=Retention(max_bytes=limit))
    for s in samples:
        writer.append(s)
    writer.close()
    assert path.stat().st_size <= limit
    with StoreReader(path) as r:
        got = list(r.iter())
        assert r.notices == []
    assert 0 < len(got) < len(samples)
    assert got == samples[-len(got) :]  # the newest kept, contiguous, all readable
    assert path.stat().st_size >= 0.5 * limit  # trims to ~90%, not to nothing


def test_retention_never_deletes_the_newest_sample_or_its_chain(tmp_path: Path) -> None:
    samples = make_samples(5)
    path = tmp_path / "tiny.kvmtop"
    writer = StoreWriter(path, retention=Retention(max_bytes=1, max_age_s=0))
    for s in samples:
        writer.append(s)
    writer.close()
    with StoreReader(path) as r:
        got = list(r.iter())
        assert r.notices == []
    # The newest, and the rows it is stored against (fewer than a chain).
    assert got == samples[-len(got) :] and len(got) < CHAIN


def test_slice_copies_a_time_range(recording: Path, samples: list[Sample], tmp_path: Path) -> None:
    out = tmp_path / "slice.kvmtop"
    with StoreReader(recording) as r:
        copied = slice_recording(r, out, from_s=samples[30].wall_s, to_s=samples[89].wall_s)
    assert copied == 60
    with StoreReader(out) as s:
        assert list(s.iter()) == samples[30:90]
        assert s.meta.hostname == "hv-lab-01"
    assert out.stat().st_size < recording.stat().st_size


def test_slice_never_overwrites(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken.kvmtop"
    out.write_text("precious")
    with StoreReader(recording) as r, pytest.raises(StoreError, match="exists"):
        slice_recording(r, out)
    assert out.read_text() == "precious"


def test_retention_drops_the_index_of_deleted_samples(tmp_path: Path) -> None:
    from dataclasses import replace

    from kvmtop.config import Settings
    from kvmtop.report.index import IndexedWriter
    from kvmtop.wiring import build_pipeline

    samples = make_samples(300, guests=2)  # 10 minutes at 2 s
    path = tmp_path / "indexed.kvmtop"
    writer = IndexedWriter(
        StoreWriter(path, retention=Retention(max_age_s=120)),
        build_pipeline(replace(Settings(), window_size=2)),
        ("physical",),
    )
    for s in samples:
        writer.append(s)
    writer.close()
    with StoreReader(path) as r:
        oldest = r.first_time()
        rollups = r.rollups()
    assert oldest is not None and rollups
    assert all(first_s >= oldest for first_s, _, _, _ in rollups)
    assert len(rollups) <= 4  # two minutes kept, of the ten indexed
