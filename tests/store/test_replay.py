"""ReplayFeed: parity with the live feed, seek, step, speed, range and follow mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmtop.config import Settings
from kvmtop.detectors.engine import build_engine
from kvmtop.detectors.incidents import IncidentTracker
from kvmtop.detectors.settings import DetectorSettings
from kvmtop.feed import replay as replay_module
from kvmtop.feed.live import LiveFeed
from kvmtop.feed.pipeline import Pipeline
from kvmtop.feed.replay import ReplayFeed
from kvmtop.feed.spans import IncidentLog
from kvmtop.model.incident import Incident
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from kvmtop.wiring import build_pipeline
from tests.detectors.builders import GuestSpec, HostSpec, VcpuSpec, World
from tests.records import replace
from tests.store.conftest import write
from tests.store.synth import SyntheticHost


class FakeSampler:
    """Hands out prepared samples, as the real sampler would have produced them."""

    def __init__(self, samples: list[Sample]) -> None:
        self.interval_s = samples[0].interval_s
        self._left = iter(samples)

    def sample(self) -> Sample:
        return next(self._left)

    def close(self) -> None:
        pass


def pipeline() -> Pipeline:
    settings = DetectorSettings()
    return Pipeline(
        window_size=50, detect=build_engine(settings), incidents=IncidentTracker(settings)
    )


def replay(path: Path, **kw: float | bool | None) -> ReplayFeed:
    return ReplayFeed(StoreReader(path), pipeline(), **kw)  # type: ignore[arg-type]


def drain(feed: ReplayFeed) -> list[Snapshot]:
    frames = []
    while (frame := feed.next()) is not None:
        frames.append(frame)
    return frames


def test_replay_of_a_live_recording_gives_the_live_frames(
    tmp_path: Path, samples: list[Sample]
) -> None:
    path = tmp_path / "parity.kvmtop"
    sampler = FakeSampler(samples)
    live = LiveFeed(sampler, pipeline(), recorder=StoreWriter(path))  # type: ignore[arg-type]
    live_frames = [live.next() for _ in samples]
    live.close()
    assert live.record_error is None
    assert any(f.findings for f in live_frames), "the comparison should cover findings"
    assert any(f.incidents for f in live_frames), "and incidents"

    feed = replay(path)
    replayed = drain(feed)
    feed.close()
    assert [f.mode for f in replayed] == ["replay"] * len(samples)
    assert [f.recording for f in live_frames] == [str(path)] * len(samples)
    assert [replace(f, mode="live", recording=str(path)) for f in replayed] == live_frames


def test_seek_primes_the_window_so_the_target_has_rates(
    recording: Path, samples: list[Sample]
) -> None:
    continuous = drain(replay(recording))
    feed = replay(recording)
    frame = feed.seek(samples[70].wall_s)
    assert frame is not None and frame.wall_s == samples[70].wall_s
    assert feed.position == 71 and feed.position_s == samples[70].wall_s
    assert frame.guests == continuous[70].guests  # the same rates as when played through
    assert frame.host == continuous[70].host
    after = feed.next()
    assert after is not None and after.guests == continuous[71].guests


def test_seek_edges(recording: Path, samples: list[Sample]) -> None:
    feed = replay(recording)
    first = feed.seek(0)
    assert first is not None and first.wall_s == samples[0].wall_s
    assert first.guests[0].cpu_pct is None  # nothing before the first sample: no rates
    last = feed.seek(samples[-1].wall_s + 3600)
    assert last is not None and last.wall_s == samples[-1].wall_s  # past the end: the end
    assert feed.next() is None
    between = feed.seek(samples[5].wall_s + 0.1)
    assert between is not None and between.wall_s == samples[6].wall_s


def test_step_forward_and_back(recording: Path, samples: list[Sample]) -> None:
    feed = replay(recording)
    feed.seek(samples[10].wall_s)
    fwd = feed.step(3)
    assert fwd is not None and fwd.wall_s == samples[13].wall_s
    back = feed.step(-2)
    assert back is not None and back.wall_s == samples[11].wall_s
    assert back.guests[0].cpu_pct is not None
    assert feed.step(0) is back
    feed.seek(samples[0].wall_s)
    assert feed.step(-1) is None  # before the start


def test_range_and_speed(recording: Path, samples: list[Sample]) -> None:
    feed = replay(recording, from_s=samples[20].wall_s, to_s=samples[29].wall_s, speed=4.0)
    frames = drain(feed)
    assert [f.wall_s for f in frames] == [s.wall_s for s in samples[20:30]]
    assert feed.interval_s == pytest.approx(0.5)  # recorded every 2 s, played at x4
    feed.interval_s = 1.0
    assert feed.speed == pytest.approx(2.0)
    with pytest.raises(ValueError):
        feed.speed = 0


def test_damaged_samples_are_skipped_with_a_notice(recording: Path, samples: list[Sample]) -> None:
    import sqlite3

    with sqlite3.connect(recording) as conn:
        conn.execute("UPDATE samples SET data = x'00' WHERE id = 30")
    feed = replay(recording)
    frames = drain(feed)
    assert len(frames) == len(samples) - 1
    assert len(feed.notices) == 1 and "#30" in feed.notices[0]
    assert feed.seek(samples[29].wall_s) is not None  # a damaged target: the next one


@pytest.mark.parametrize("dict_id", [-28, 0])
def test_a_garbled_dictionary_id_reads_as_a_damaged_row(
    recording: Path, samples: list[Sample], dict_id: int
) -> None:
    """A dictionary id SQLite never gives (ids start at 1) is damage to the row, not a
    dictionary "#-28" that went missing."""
    import sqlite3

    with sqlite3.connect(recording) as conn:
        conn.execute("UPDATE samples SET dict_id = ? WHERE id = 30", (dict_id,))
    feed = replay(recording)
    assert len(drain(feed)) == len(samples) - 1
    assert feed.notices == ["sample #30 skipped: its row is damaged"]


def test_follow_mode_picks_up_new_samples(tmp_path: Path) -> None:
    host = SyntheticHost(2, interval_s=0.01)  # follow waits one recorded interval at most
    path = tmp_path / "growing.kvmtop"
    writer = StoreWriter(path)
    for _ in range(3):
        writer.append(host.sample())
    feed = replay(path, follow=True)
    frames = [feed.next() for _ in range(3)]
    assert frames[-1] is not None
    assert feed.next() is frames[-1]  # nothing new yet: the latest frame again
    writer.append(host.sample())
    writer.append(host.sample())
    newer = [feed.next(), feed.next()]
    expected = [host.start_s + 0.01 * k for k in (3, 4)]
    assert [f.wall_s for f in newer if f] == pytest.approx(expected)
    feed.close()
    assert feed.next() is None
    writer.close()


# ------------------------------------------------------------------ incidents


def flapping() -> list[Sample]:
    """80 samples of two guests pinned to CPU 1 stealing from each other, except for
    samples 20-34: their pinning incident clears at 22 and comes back at 37, within
    incident_gap_s (one crossing)."""
    w = World(
        [
            GuestSpec(uuid, name, vcpus=[VcpuSpec(affinity=(1,))])
            for uuid, name in (("u1", "a"), ("u2", "b"))
        ],
        HostSpec(ncpu=8),
    )
    samples = []
    for t in range(80):
        for g in w.guests:
            g.vcpus[0].steal_pct = 0.0 if 20 <= t < 35 else 30.0
        samples.append(w.sample())
    return samples


def pinning(frame: Snapshot) -> Incident:
    return next(i for i in frame.incidents if i.kind == "pinning")


def fresh(samples: list[Sample]) -> list[tuple[Incident, ...]]:
    """The incidents of a run that starts at `samples[0]`."""
    p = pipeline()
    return [p.push(s, mode="replay").incidents for s in samples]


@pytest.mark.parametrize("back", [False, True])
def test_a_seek_starts_incidents_over_as_a_run_from_there(tmp_path: Path, back: bool) -> None:
    """After a seek (forward or back), a replay shows the incidents a run started
    at the primed sample shows: nothing carried over from before the seek."""
    samples = flapping()
    feed = replay(write(tmp_path / "flap.kvmtop", samples))
    played = drain(feed)
    assert pinning(played[50]).crossings == 1  # played through: the same incident
    if not back:
        feed.seek(samples[25].wall_s)  # cleared, within the gap
    frame = feed.seek(samples[50].wall_s)  # back from the end, or forward
    assert frame is not None
    frames = [frame, *drain(feed)]
    feed.close()
    assert [f.incidents for f in frames] == fresh(samples[49:])[1:]
    # Raised again after the seek: a new incident, not a crossing of the old one.
    assert pinning(frames[-1]).crossings == 0
    assert pinning(frames[-1]).since_s == samples[50].wall_s  # its first frame with rates


def test_a_clock_going_back_starts_incidents_over() -> None:
    """A monotonic clock that goes back (a reboot inside one recording) resets the
    detectors and the incidents at the same sample."""
    live = flapping()
    rebooted = [replace(s, mono_ns=s.mono_ns - live[40].mono_ns) for s in live[40:]]
    p = pipeline()
    for s in live[:40]:
        p.push(s, mode="replay")
    after = [p.push(s, mode="replay") for s in rebooted]
    assert [f.incidents for f in after] == fresh(rebooted)
    assert pinning(after[-1]).crossings == 0


def test_the_incident_log_of_the_frames_is_the_whole_history(tmp_path: Path) -> None:
    """What a report keeps: every incident of a replay, closed ones too, as the
    tracker's own (recent) history has them."""
    settings = DetectorSettings(incident_gap_s=10.0)  # the pinning incident closes
    tracker = IncidentTracker(settings)
    feed = ReplayFeed(
        StoreReader(write(tmp_path / "flap.kvmtop", flapping())),
        Pipeline(detect=build_engine(settings), incidents=tracker),
    )
    log = IncidentLog()
    for frame in drain(feed):
        log.add(frame)
    feed.close()
    incidents = log.incidents()
    assert incidents == list(tracker.history())
    closed = [i for i in incidents if i.kind == "pinning" and not i.active]
    assert len(closed) == 1 and closed[0].rank == 0 and closed[0].crossings == 0


def test_the_scan_notes_where_each_incident_was_first_shown(tmp_path: Path) -> None:
    """Where `f` / `F` go in the TUI: the first frame showing each incident, in that
    order; a flapping one once, however often its findings come back."""
    path = write(tmp_path / "flap.kvmtop", flapping())
    feed = ReplayFeed(StoreReader(path), pipeline(), scanner=pipeline())
    while feed.scan(16):
        pass
    played = replay(path)
    first: dict[str, tuple[float, Incident]] = {}  # id → first frame, last version
    for frame in drain(played):
        for i in frame.incidents:
            first[i.id] = (first.get(i.id, (frame.wall_s, i))[0], i)
    played.close()
    feed.close()
    assert [(s.raised_s, s.incident) for s in feed.incidents] == list(first.values())
    assert [s.incident.kind for s in feed.incidents].count("pinning") == 1
    assert len(feed.spans) > len(feed.incidents)  # the pinning findings raised twice


def test_empty_recording(tmp_path: Path) -> None:
    StoreWriter(tmp_path / "e.kvmtop").close()
    feed = replay(tmp_path / "e.kvmtop")
    assert (feed.next(), feed.seek(0), feed.step(-1)) == (None, None, None)


SHIPPED = Path(__file__).resolve().parents[1] / "fixtures" / "recordings" / "lab-sample.kvmtop"


def test_the_shipped_lab_recording_replays_with_its_contended_pair() -> None:
    with StoreReader(SHIPPED) as reader:
        assert reader.meta.hostname == "vm" and reader.meta.hypervisor == "QEMU 7.2.22"
        assert reader.count() == 121
    feed = replay(SHIPPED)
    frames = drain(feed)
    assert feed.notices == []
    assert len(frames) == 121
    stealing = {f.subject_name for f in frames[-1].findings if f.detector == "steal"}
    assert {"lab-steal-a", "lab-steal-b"} <= stealing
    feed.close()


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab-sample.kvmtop"


def test_a_jump_to_an_incident_shows_it_as_play_did(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seek to a frame where the scan saw an incident first shown (`f` / `F`), with
    or without a lead for the plots, shows the findings and incidents continuous play
    showed there, trend detectors included: the demo's leak is judged on the balloon
    figures since the start. Any other seek starts the detectors over (no leak)."""
    monkeypatch.setattr(replay_module, "CHECKPOINT_SPACING", 7)
    settings = Settings()
    played = ReplayFeed(StoreReader(EXAMPLE), build_pipeline(settings))
    continuous = {f.wall_s: f for f in drain(played)}
    played.close()
    times = sorted(continuous)
    feed = ReplayFeed(
        StoreReader(EXAMPLE),
        build_pipeline(settings),
        scanner=build_pipeline(replace(settings, window_size=2)),
    )
    while feed.scan(50):
        pass
    assert len(feed.incidents) >= 5
    for lead_s in (0.0, 120.0, 3600.0):
        for span in reversed(feed.incidents):
            frame = feed.seek(span.raised_s, lead_s=lead_s)
            assert frame is not None and frame.wall_s == span.raised_s
            want = continuous[span.raised_s]
            assert (frame.findings, frame.incidents, frame.guests) == (
                want.findings,
                want.incidents,
                want.guests,
            ), span.incident.cause
            assert span.incident.cause in {i.cause for i in frame.incidents}
            # The plots: the lead (up to the recording's start), as a plain seek has it.
            plain = ReplayFeed(StoreReader(EXAMPLE), build_pipeline(settings))
            primed = plain.seek(span.raised_s, lead_s=lead_s)
            plain.close()
            assert primed is not None and len(frame.recent) >= len(primed.recent)
            if lead_s:
                assert frame.recent[0].wall_s <= max(span.raised_s - lead_s, times[0])
    leak = next(s for s in feed.incidents if s.incident.kind == "leak")
    after = feed.seek(leak.raised_s + 1)
    feed.close()
    assert after is not None and leak.incident.cause not in {i.cause for i in after.incidents}
