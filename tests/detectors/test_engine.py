"""The engine: hysteresis pushed one frame at a time, since-time, resets, settings."""

from __future__ import annotations

from dataclasses import replace

from kvmtop.detectors.engine import DETECTORS, DetectorEngine, build_engine
from kvmtop.detectors.settings import DETECTOR_IDS, DetectorSettings, GuestOverride
from kvmtop.feed.pipeline import Pipeline
from kvmtop.model.window import Window
from tests.detectors.builders import GuestSpec, VcpuSpec, World, active, problems


def stealing_world(**kw: object) -> World:
    return World([GuestSpec("u1", "web", vcpus=[VcpuSpec(steal_pct=0.0)])], **kw)  # type: ignore[arg-type]


def test_registry_matches_the_stable_ids() -> None:
    assert tuple(DETECTORS) == DETECTOR_IDS


def test_raise_after_k_bad_and_clear_after_k_good_one_frame_at_a_time() -> None:
    w = stealing_world()
    w.run(3)
    w.guest("web").vcpus[0].steal_pct = 15.0
    seen = [bool(active(w.engine(w.push()), "steal")) for _ in range(4)]
    assert seen == [False, False, True, True]  # K = 3
    since = active(w.engine(w.window), "steal")[0].since_s
    assert since == w.wall_s - 3 * 2.0  # the first bad frame of the streak
    w.guest("web").vcpus[0].steal_pct = 0.0
    seen = [bool(active(w.engine(w.push()), "steal")) for _ in range(4)]
    assert seen == [True, True, False, False]


def test_an_interrupted_streak_does_not_raise() -> None:
    w = stealing_world()
    w.run(2)
    spec = w.guest("web").vcpus[0]
    for steal in (15.0, 15.0, 0.0, 15.0, 15.0):
        spec.steal_pct = steal
        assert not active(w.engine(w.push()), "steal")


def test_restart_drops_the_guest_findings_at_once() -> None:
    w = stealing_world()
    w.guest("web").vcpus[0].steal_pct = 15.0
    assert active(w.run(6), "steal")
    w.guest("web").dom_id = 2  # new incarnation: libvirt gave it a new domain ID
    w.reset_counters("u1:")
    assert not active(w.engine(w.push()), "steal")


def test_stopped_or_vanished_guest_is_forgotten() -> None:
    w = stealing_world()
    w.guest("web").vcpus[0].steal_pct = 15.0
    assert active(w.run(6), "steal")
    w.guest("web").state = "shutoff"
    assert not problems(w.engine(w.push()))
    w.guests.clear()
    assert not problems(w.engine(w.push()))


def test_cleared_window_resets_everything() -> None:
    w = stealing_world()
    w.guest("web").vcpus[0].steal_pct = 15.0
    assert active(w.run(6), "steal")
    w.window.clear()  # what Pipeline.reset() does after a replay seek
    assert not problems(w.engine(w.push()))
    assert not problems(w.engine(Window()))


def test_same_window_twice_is_not_counted_twice() -> None:
    w = stealing_world()
    w.run(2)
    w.guest("web").vcpus[0].steal_pct = 15.0
    w.push()
    for _ in range(5):
        w.engine(w.window)
    assert not active(w.engine(w.window), "steal")


def test_disabled_globally_and_per_guest_and_overrides() -> None:
    settings = DetectorSettings(disabled=("steal",))
    w = stealing_world(settings=settings)
    w.guest("web").vcpus[0].steal_pct = 15.0
    assert not active(w.run(6), "steal")

    override = GuestOverride(pattern="web*", disabled=("steal",))
    w = stealing_world(settings=DetectorSettings(overrides=(override,)))
    w.guests.append(GuestSpec("u2", "db", vcpus=[VcpuSpec(steal_pct=15.0)]))
    w.guest("web").vcpus[0].steal_pct = 15.0
    assert [f.guest for f in active(w.run(6), "steal")] == ["db"]

    tolerant = GuestOverride(pattern="web", values={"steal": {"warn_max_pct": 20.0}})
    base = DetectorSettings(overrides=(tolerant,))
    w = stealing_world(settings=replace(base, steal=replace(base.steal, warn_mean_pct=50.0)))
    w.guest("web").vcpus[0].steal_pct = 15.0
    assert not active(w.run(6), "steal")


def test_build_engine_plugs_into_the_pipeline() -> None:
    engine = build_engine(DetectorSettings())
    assert isinstance(engine, DetectorEngine)
    w = stealing_world()
    w.guest("web").vcpus[0].steal_pct = 15.0
    pipeline = Pipeline(detect=engine)
    snaps = [pipeline.push(w.sample(), mode="live") for _ in range(5)]
    assert [f.detector for f in snaps[-1].findings if f.severity != "info"] == ["steal"]
    assert snaps[-1].findings[0].guest == "web"


def test_findings_sorted_by_severity() -> None:
    w = World(
        [
            GuestSpec("u1", "a", vcpus=[VcpuSpec(steal_pct=12.0)]),
            GuestSpec("u2", "b", vcpus=[VcpuSpec(steal_pct=30.0)]),
        ]
    )
    ranks = [f.severity for f in w.run(6)]
    assert "critical" in ranks and "warning" in ranks
    assert ranks == sorted(ranks, key=["critical", "warning", "info"].index)
