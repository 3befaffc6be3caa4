"""LoopedRecording: a recording played as if sampled now, lap after lap
(`kvmtop serve --replay`)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from kvmtop.config import Settings
from kvmtop.model.sample import BalloonSample, Sample, shift_clocks
from kvmtop.model.units import NS_PER_S
from kvmtop.store.looped import LoopedRecording
from kvmtop.store.meta import StoreError
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from kvmtop.wiring import build_pipeline
from tests.records import replace
from tests.store.conftest import make_samples, write

NOW_S = 1_900_000_000.0
NOW_NS = 5_000 * NS_PER_S


def test_shift_clocks_moves_every_clock_and_no_counter() -> None:
    (s,) = make_samples(1)
    g = replace(s.guests[0], balloon=BalloonSample(last_update_s=100), not_responding_since_s=50.5)
    assert s.host is not None
    s = replace(s, guests=(g, *s.guests[1:]), host=replace(s.host, ovs_mono_ns=7))
    moved = shift_clocks(s, 10.0, 3 * NS_PER_S, "other")
    assert moved.wall_s == s.wall_s + 10 and moved.mono_ns == s.mono_ns + 3 * NS_PER_S
    assert moved.host is not None
    assert (moved.host.mono_ns, moved.host.ovs_mono_ns, moved.host.hostname) == (
        s.host.mono_ns + 3 * NS_PER_S,
        7 + 3 * NS_PER_S,
        "other",
    )
    mg = moved.guests[0]
    assert mg.balloon is not None and mg.balloon.last_update_s == 110
    assert mg.not_responding_since_s == 60.5
    assert replace(mg, balloon=g.balloon, not_responding_since_s=50.5) == g
    for before, after in zip(s.guests[1:], moved.guests[1:], strict=True):
        if before.balloon is not None and before.balloon.last_update_s is not None:
            assert after.balloon is not None and after.balloon.last_update_s is not None
            assert after.balloon.last_update_s == before.balloon.last_update_s + 10
        assert replace(after, balloon=before.balloon) == before
    assert shift_clocks(s, 0.0, 0).host == s.host  # no host name: the recorded one


def test_laps_follow_on_with_the_recorded_spacing(tmp_path: Path) -> None:
    samples = make_samples(5)
    loop = LoopedRecording(
        StoreReader(write(tmp_path / "r.kvmtop", samples)),
        hostname="replayed-1",
        wall=lambda: NOW_S,
        mono=lambda: NOW_NS,
    )
    got = [loop.sample() for _ in range(12)]
    loop.close()
    assert loop.laps == 2 and loop.interval_s == samples[0].interval_s
    walls = [s.wall_s for s in got]
    assert walls[0] == pytest.approx(NOW_S, abs=0.5)
    steps = {round(b - a, 6) for a, b in itertools.pairwise(walls)}
    assert steps == {samples[0].interval_s}  # one interval apart, across laps too
    monos = [s.mono_ns for s in got]
    assert monos[0] == NOW_NS and all(b > a for a, b in itertools.pairwise(monos))
    assert {s.host.hostname for s in got if s.host} == {"replayed-1"}

    # Counters as recorded: a lap starts again from the first sample's.
    def counters(s: Sample) -> list[tuple[int | None, ...]]:
        return [(g.cpu_time_ns, *(v.time_ns for v in g.vcpus)) for g in s.guests]

    assert [counters(s) for s in got[5:10]] == [counters(s) for s in samples]


def test_the_pipeline_takes_a_new_lap_as_a_counter_reset(tmp_path: Path) -> None:
    """Rates across the lap boundary are unknown (never negative), then known again."""
    loop = LoopedRecording(StoreReader(write(tmp_path / "r.kvmtop", make_samples(6))))
    pipeline = build_pipeline(Settings())
    frames = [pipeline.push(loop.sample(), mode="replay") for _ in range(14)]
    loop.close()
    cpu = [f.guests[0].cpu_pct for f in frames]
    assert cpu[0] is None and cpu[6] is None and cpu[12] is None  # start, then each lap
    assert all(v is not None and v >= 0 for i, v in enumerate(cpu) if i % 6)


def test_a_recording_without_a_readable_sample_is_refused(tmp_path: Path) -> None:
    StoreWriter(tmp_path / "e.kvmtop").close()
    with pytest.raises(StoreError, match="no sample can be read"):
        LoopedRecording(StoreReader(tmp_path / "e.kvmtop"))
