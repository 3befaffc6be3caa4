"""Window, snapshot, sampler and feed: the shared pipeline after the collectors."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from kvmtop.collectors.base import CollectorError, Probe
from kvmtop.config import Settings
from kvmtop.detectors.engine import build_engine
from kvmtop.detectors.incidents import IncidentTracker
from kvmtop.detectors.settings import DetectorSettings
from kvmtop.feed.live import LiveFeed
from kvmtop.feed.pipeline import Pipeline
from kvmtop.model.sample import GuestSample, HostSample, Sample, VcpuSample
from kvmtop.model.units import NS_PER_S
from kvmtop.model.window import Window
from kvmtop.sampler import Sampler
from kvmtop.wiring import build_pipeline
from tests.detectors.builders import GuestSpec, HostSpec, VcpuSpec, World


def sample(t: int, cpu_ns: int, uuid: str = "u") -> Sample:
    g = GuestSample(
        uuid=uuid,
        name="g",
        dom_id=1,
        state="running",
        cpu_time_ns=cpu_ns,
        vcpus_current=2,
        balloon=None,
    )
    return Sample(float(t), t * NS_PER_S, HostSample(mono_ns=t * NS_PER_S, ncpu=4), (g,), ())


def test_window_bounded_and_derives() -> None:
    w = Window(size=3)
    frames = [w.push(sample(t, t * NS_PER_S // 2)) for t in range(5)]
    assert len(w) == 3
    assert frames[0].guests[0].cpu_pct is None
    assert frames[4].guests[0].cpu_pct == pytest.approx(50.0)
    assert [f.wall_s for f in w.recent(10)] == [2.0, 3.0, 4.0]


def test_window_keeps_fewer_frames_of_many_guests() -> None:
    """The guest-frame budget bounds memory: with 3 guests and a budget of 7 guest
    entries the window keeps 2 frames (never fewer), whatever its size."""

    def many(t: int) -> Sample:
        one = sample(t, t * NS_PER_S // 2)
        guests = tuple(
            GuestSample(
                uuid=f"u{i}",
                name=f"g{i}",
                dom_id=i,
                state="running",
                cpu_time_ns=t * NS_PER_S // 2,
                vcpus_current=1,
                balloon=None,
            )
            for i in range(3)
        )
        return Sample(one.wall_s, one.mono_ns, one.host, guests, ())

    w = Window(size=10, guest_frames=7)
    for t in range(6):
        w.push(many(t))
    assert [f.wall_s for f in w.recent(10)] == [4.0, 5.0]
    latest = w.latest
    assert latest is not None and latest[0].wall_s == 5.0
    assert latest[1].guests[0].cpu_pct == pytest.approx(50.0)


def test_window_restarts_when_clock_goes_back() -> None:
    w = Window(size=10)
    w.push(sample(5, 0))
    f = w.push(sample(4, NS_PER_S))
    assert f.guests[0].cpu_pct is None
    assert len(w) == 1


def test_window_rejects_tiny_size() -> None:
    with pytest.raises(ValueError):
        Window(size=1)


def test_pipeline_snapshot_summary() -> None:
    p = Pipeline(window_size=10)
    p.push(sample(0, 0), mode="live")
    snap = p.push(sample(1, NS_PER_S), mode="live", recording="/tmp/x")
    assert snap.seq == 2
    assert snap.mode == "live"
    assert snap.recording == "/tmp/x"
    assert snap.summary.guests_running == 1
    assert snap.summary.vcpu_pcpu_ratio == pytest.approx(0.5)
    assert snap.guest("u") is not None and snap.guest("nope") is None


def test_the_pipeline_groups_each_push_findings_into_incidents() -> None:
    """`build_pipeline` runs the incident tracker after the detectors: each snapshot
    carries the ranked incidents of its own findings; a pipeline without a tracker
    carries none."""
    w = World(
        [
            GuestSpec(uuid, name, vcpus=[VcpuSpec(steal_pct=30.0, affinity=(1,))])
            for uuid, name in (("u1", "a"), ("u2", "b"))
        ],
        HostSpec(ncpu=8),
    )
    shared = build_pipeline(Settings())
    bare = Pipeline(detect=build_engine(DetectorSettings()))
    tracker = IncidentTracker()
    for _ in range(5):
        s = w.sample()
        snap = shared.push(s, mode="live")
        tracker.update(s.wall_s, snap.findings)
        assert snap.incidents == tracker.current()
        assert bare.push(s, mode="live").incidents == ()
    assert snap.incidents[0].cause == "pinning:cpu=1" and snap.incidents[0].rank == 1


class FakeHost:
    def __init__(self) -> None:
        self.calls = 0

    def probe(self) -> Probe:
        return Probe("host", True)

    def collect(self) -> HostSample:
        self.calls += 1
        return HostSample(mono_ns=self.calls)


class FlakyGuests:
    """Unavailable at first, then up, then failing mid-tick."""

    def __init__(self) -> None:
        self.probes = 0
        self.fail = False

    def probe(self) -> Probe:
        self.probes += 1
        if self.probes == 1:
            return Probe("libvirt", False, "libvirtd not running")
        return Probe("libvirt", True, detail={"uri": "test:///"})

    def collect(self, tick: int, deadline_s: float | None = None) -> tuple[GuestSample, ...]:
        if self.fail:
            raise CollectorError("connection reset")
        self.seen = (GuestSample(uuid="u", name="g", pid=1, vcpus=(VcpuSample(0),)),)
        return self.seen

    def unanswered(self, reason: str) -> tuple[GuestSample, ...]:
        return tuple(
            GuestSample(
                uuid=g.uuid,
                name=g.name,
                pid=g.pid,
                not_responding_since_s=1.0,
                not_responding=reason,
            )
            for g in getattr(self, "seen", ())
        )

    def close(self) -> None:
        pass


class BrokenEnricher:
    def probe(self) -> Probe:
        return Probe("sched", True)

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        raise OSError("boom")


def test_sampler_isolates_failures_and_reprobes() -> None:
    guests = FlakyGuests()
    clock = iter(range(0, 10**9, 1000))
    s = Sampler(
        FakeHost(),
        guests,
        [BrokenEnricher()],
        reprobe_every=2,
        clock=lambda: next(clock),
        wall=lambda: 42.0,
    )
    first = s.sample()
    st = {x.name: x for x in first.sources}
    assert not st["libvirt"].ok and st["libvirt"].reason == "libvirtd not running"
    assert first.guests == ()
    assert not st["sched"].ok and st["sched"].reason == "boom"
    assert first.host is not None and first.wall_s == 42.0
    s.sample()  # tick 1: not re-probed yet
    third = s.sample()  # tick 2: re-probed, available
    assert {x.name: x for x in third.sources}["libvirt"].ok
    assert len(third.guests) == 1
    guests.fail = True
    fourth = s.sample()
    st4 = {x.name: x for x in fourth.sources}
    assert not st4["libvirt"].ok and st4["libvirt"].reason == "connection reset"
    # The guests seen last stay listed, not responding, with the source's error.
    assert [(g.name, g.not_responding) for g in fourth.guests] == [("g", "connection reset")]
    assert set(s.probes()) == {"host", "libvirt", "sched"}


class FailingSink:
    path = "/full/disk.kvmtop"

    def append(self, sample: Sample) -> None:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        pass


def test_live_feed_keeps_monitoring_when_recording_fails() -> None:
    feed = LiveFeed(Sampler(FakeHost(), None), Pipeline(), recorder=FailingSink())
    snap = feed.next()
    assert snap.recording is None
    assert feed.record_error is not None and "No space left" in feed.record_error
    assert feed.next().seq == 2
