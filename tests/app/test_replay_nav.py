"""Replay navigation: the app over a real recording (StoreWriter → StoreReader →
ReplayFeed), driven through its keys and the timeline.

The recording is 20 minutes of one steady guest and two that start, steal and stop:
"noisy" runs from t+300 s to t+600 s at 7 % steal (a warning), "hog" from t+800 s to
t+900 s at 30 % (critical). With the steal detector's 3-observation hysteresis, the
scan finds exactly two spans: noisy raised at t+330 s (since t+310 s) and hog raised
at t+830 s (since t+810 s), each an incident of its own. One sample every 10 s; T0 is
16:00:00 UTC. In the flapping variant noisy stops stealing from t+420 s to t+480 s: its
finding clears at t+450 s and is raised again at t+500 s (since t+480 s), a second
span of the same incident (one crossing).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from kvmtop.app.main import KvmtopApp
from kvmtop.config import Settings
from kvmtop.feed.replay import ReplayFeed
from kvmtop.feed.times import parse_time
from kvmtop.model.sample import GuestSample, Sample
from kvmtop.model.snapshot import Snapshot
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from kvmtop.views.guest_table import GuestTable
from kvmtop.views.host_strip import ModeBadge
from kvmtop.views.incidents import IncidentsPanel, IncidentTable
from kvmtop.views.timeline import CURSOR, TimeInput, Timeline, cell_of
from kvmtop.wiring import build_pipeline
from tests.app.builders import (
    DEFAULT_SOURCES,
    NS,
    T0,
    GuestSpec,
    HostSpec,
    guest_sample,
    host_sample,
    wait_until,
)
from tests.records import replace
from tests.store.conftest import write

SIZE = (120, 40)
EVERY = 10
"""Seconds between samples."""
LENGTH = 1200
"""Seconds from the first sample to the last."""
STEADY = GuestSpec("steady", cpu_pct=20, steal_pct=1)
NOISY = GuestSpec("noisy", cpu_pct=30, steal_pct=7)
HOG = GuestSpec("hog", vcpus=4, cpu_pct=50, steal_pct=30)


def guest(spec: GuestSpec, t: int, running: bool) -> GuestSample:
    """A builder guest whose balloon stats are fresh and refreshing (no memory findings)."""
    g = guest_sample(spec if running else replace(spec, state="shutoff"), t)
    if g.balloon is None:
        return g
    return replace(g, balloon_period_s=EVERY, balloon=replace(g.balloon, last_update_s=int(T0) + t))


def sample(t: int, *, flapping: bool = False) -> Sample:
    """The raw sample t seconds into the recording (its flapping variant)."""
    noisy = replace(NOISY, steal_pct=1) if flapping and 420 <= t < 480 else NOISY
    return Sample(
        wall_s=T0 + t,
        mono_ns=t * NS,
        host=host_sample(HostSpec(), t),
        guests=(
            guest(STEADY, t, True),
            guest(noisy, t, 300 <= t < 600),
            guest(HOG, t, 800 <= t < 900),
        ),
        sources=DEFAULT_SOURCES,
        interval_s=EVERY,
    )


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """The 20-minute recording, closed."""
    return write(tmp_path / "incident.kvmtop", [sample(t) for t in range(0, LENGTH + 1, EVERY)])


@pytest.fixture
def flapping(tmp_path: Path) -> Iterator[ReplayFeed]:
    """The replay feed over the flapping variant, closed after the test."""
    feed = replay_feed(
        write(
            tmp_path / "flapping.kvmtop",
            [sample(t, flapping=True) for t in range(0, LENGTH + 1, EVERY)],
        )
    )
    yield feed
    feed.close()


def replay_feed(path: Path, **kw: Any) -> ReplayFeed:
    """The feed `kvmtop replay` builds, with the default settings."""
    settings = Settings()
    return ReplayFeed(
        StoreReader(path),
        build_pipeline(settings),
        scanner=build_pipeline(replace(settings, window_size=2)),
        **kw,
    )


@pytest.fixture
def feed(recording: Path) -> Iterator[ReplayFeed]:
    """The replay feed over the recording, closed after the test."""
    feed = replay_feed(recording)
    yield feed
    feed.close()


def paused_app(feed: ReplayFeed) -> KvmtopApp:
    """The app, holding playback from its first frame on."""
    app = KvmtopApp(feed, title_suffix="replay of incident.kvmtop")
    app.paused = True
    return app


def at(app: KvmtopApp) -> float:
    """Seconds into the recording of the frame on screen."""
    assert app.displayed is not None
    return app.displayed.wall_s - T0


async def ready(pilot: Pilot[None], app: KvmtopApp, feed: ReplayFeed) -> None:
    """Wait for the first frame and for the finding scan to reach the end."""
    await wait_until(
        pilot,
        lambda: (
            app.displayed is not None and feed.scanned_s == T0 + LENGTH and feed.extent is not None
        ),
        timeout=30,
    )  # the scan takes about 1 s, more on a loaded machine
    await pilot.pause()


async def press(pilot: Pilot[None], app: KvmtopApp, *keys: str) -> float:
    """Press keys, each waiting for the frame it asks for; the time then shown."""
    for key in keys:

        def moved(before: Snapshot | None = app.displayed) -> bool:
            return app.displayed is not before

        await pilot.press(key)
        await wait_until(pilot, moved)
    await pilot.pause()
    return at(app)


def notes_of(app: KvmtopApp, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every notification's text from now on (posted from either thread)."""
    notes: list[str] = []
    real = app.notify

    def notify(message: str, **kw: Any) -> None:
        notes.append(message)
        real(message, **kw)

    monkeypatch.setattr(app, "notify", notify)
    return notes


def findings_shown(app: KvmtopApp) -> list[tuple[str, str, str]]:
    """(detector, guest, severity) of each finding in the frame shown."""
    assert app.displayed is not None
    return [(f.detector, f.subject_name, f.severity) for f in app.displayed.findings]


def selected(app: KvmtopApp) -> tuple[str, float] | None:
    """The title and start (seconds into the recording) of the incident under the
    incidents' cursor."""
    row = app.query_one(IncidentTable).cursor
    if row is None or row.incident is None:
        return None
    return row.incident.title.partition(":")[0], row.incident.since_s - T0


async def test_step_back_and_forward_while_paused(feed: ReplayFeed) -> None:
    app = paused_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, feed)
        assert at(app) == 0
        assert app.query_one(ModeBadge).has_class("-paused")
        assert await press(pilot, app, "full_stop", "full_stop", "full_stop") == 30
        assert await press(pilot, app, "comma") == 20
        assert app.displayed is not None and app.displayed.guests[0].cpu_pct is not None
        assert len(feed.pipeline.window) == 2  # a step back is a jump: primed, then shown
        assert await press(pilot, app, "comma", "comma") == 0
        await pilot.press("comma")  # nothing before the first sample: it stays
        assert await press(pilot, app, "full_stop") == 10
        assert app.paused


async def test_step_pauses_playback(feed: ReplayFeed) -> None:
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        # The next frame would come 10 s after the first: step well before that.
        await wait_until(pilot, lambda: app.displayed is not None)
        await pilot.pause()
        assert app.query_one(ModeBadge).has_class("-replay")
        assert "REPLAY" in str(app.query_one(ModeBadge).render())
        assert await press(pilot, app, "full_stop") == 10
        assert app.paused and app.query_one(ModeBadge).has_class("-paused")


async def test_seek_by_minutes_stops_at_the_edges(feed: ReplayFeed) -> None:
    app = paused_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, feed)
        assert await press(pilot, app, "right_square_bracket") == 60
        assert await press(pilot, app, "right_curly_bracket") == 660
        assert await press(pilot, app, "right_curly_bracket") == LENGTH  # past the end
        assert await press(pilot, app, "right_square_bracket") == LENGTH
        assert await press(pilot, app, "left_curly_bracket") == LENGTH - 600
        assert await press(pilot, app, "left_square_bracket") == LENGTH - 660
        assert await press(pilot, app, "left_curly_bracket", "left_curly_bracket") == 0
        assert await press(pilot, app, "left_square_bracket") == 0  # before the start
        # A seek restarts the window there, primed with the sample before the target.
        assert await press(pilot, app, "right_curly_bracket") == 600
        assert len(feed.pipeline.window) == 2
        assert app.displayed is not None and app.displayed.guests[0].cpu_pct is not None


async def test_seek_to_a_typed_time(feed: ReplayFeed, monkeypatch: pytest.MonkeyPatch) -> None:
    app = paused_app(feed)
    notes = notes_of(app, monkeypatch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, feed)
        box = app.query_one(TimeInput)
        for text, expected in [
            ("16:07:30", 450),
            ("+2m", 120),
            ("2025-11-24T16:15:00Z", 900),
            ("16:04:55", 300),
        ]:
            await pilot.press("g")
            assert box.display and app.focused is box
            await pilot.press(*text)
            assert await press(pilot, app, "enter") == expected
            assert not box.display and isinstance(app.focused, GuestTable)
        await pilot.press("g", *"soon", "enter")
        await pilot.pause()
        assert box.display and at(app) == 300  # still open, nothing moved
        assert "cannot read 'soon' as a time" in notes[-1]
        await pilot.press("escape")
        assert not box.display and isinstance(app.focused, GuestTable)
        await pilot.press("g", *"17:00", "enter")
        await wait_until(pilot, lambda: at(app) == LENGTH)
        assert "outside the recording" in notes[-1]


async def test_next_and_previous_incident(
    flapping: ReplayFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = paused_app(flapping)
    notes = notes_of(app, monkeypatch)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, flapping)
        assert [s.raised_s - T0 for s in flapping.spans] == [330, 500, 830]
        assert findings_shown(app) == [] and selected(app) is None
        # Each jump lands on the first frame showing the incident, as play showed it
        # (resumed from the scan's checkpoint), and selects it; noisy's second raise
        # at t+500 s is the same incident: not a stop.
        assert await press(pilot, app, "f") == 330
        assert findings_shown(app) == [("steal", "noisy", "warning")]
        assert app.query_one(IncidentsPanel).has_class("-has-incidents")
        assert selected(app) == ("noisy", 310)
        assert notes[-1].startswith("warning incident: noisy: steal max 7%")
        assert notes[-1].endswith("(16:05:10 to 16:09:50)")
        assert await press(pilot, app, "f") == 830
        assert findings_shown(app) == [("steal", "hog", "critical")]
        assert selected(app) == ("hog", 810)
        await pilot.press("f")
        await wait_until(pilot, lambda: notes[-1] == "no later incident")
        assert at(app) == 830
        assert await press(pilot, app, "F") == 330
        await pilot.press("F")
        await wait_until(pilot, lambda: notes[-1] == "no earlier incident")
        assert await press(pilot, app, "right_curly_bracket", "F") == 830  # from t+930
        assert await press(pilot, app, "F") == 330  # not t+500


async def test_speed_keys_step_from_x1_to_x64(feed: ReplayFeed) -> None:
    app = paused_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, feed)
        speeds = []
        for _ in range(7):
            await pilot.press("plus")
            speeds.append(feed.speed)
        assert speeds == [2, 4, 8, 16, 32, 64, 64]
        assert feed.interval_s == EVERY / 64
        assert "16:00:00 paused ×64" in app.query_one(Timeline).render().plain
        await pilot.press("minus", "minus")
        assert feed.speed == 16
        for _ in range(5):
            await pilot.press("minus")
        assert feed.speed == 1


async def test_playing_advances_at_the_chosen_speed(feed: ReplayFeed) -> None:
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, feed)
        await pilot.press(*["plus"] * 6)  # ×64: a frame every 0.16 s
        await wait_until(pilot, lambda: at(app) >= 30)
        assert "playing ×64" in app.query_one(Timeline).render().plain
        await pilot.press("space")
        await pilot.pause(0.5)  # a frame already on its way may still land
        held = at(app)
        await pilot.pause(0.5)
        assert at(app) == held  # paused: playback holds
        assert "paused ×64" in app.query_one(Timeline).render().plain
        assert await press(pilot, app, "full_stop") == held + EVERY


async def test_timeline_cursor_markers_and_click(feed: ReplayFeed) -> None:
    app = paused_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, feed)
        timeline = app.query_one(Timeline)
        state = timeline.state
        assert state is not None
        assert (state.start_s, state.end_s) == (T0, T0 + LENGTH)
        assert [(m.start_s - T0, m.end_s - T0, m.severity) for m in state.markers] == [
            (310, 590, "warning"),
            (810, 890, "critical"),
        ]
        assert state.scanned_pct is None  # the scan is done
        text = timeline.render().plain
        assert text.startswith("16:00:00 ") and "16:20:00  16:00:00 paused ×1" in text
        first, width = timeline._bar_at
        assert text.index(CURSOR) == first  # at the start
        await press(pilot, app, "right_curly_bracket")
        text = timeline.render().plain
        assert text.index(CURSOR) == first + cell_of(T0 + 600, T0, T0 + LENGTH, width)
        assert abs(text.index(CURSOR) - first - (width - 1) / 2) <= 0.5  # the middle
        # Clicking the bar seeks to the time under the pointer (the padding is 1).
        assert await pilot.click(Timeline, offset=(1 + first + width - 1, 0))
        await wait_until(pilot, lambda: at(app) == LENGTH)
        assert await pilot.click(Timeline, offset=(1 + first, 0))
        await wait_until(pilot, lambda: at(app) == 0)
        assert await pilot.click(Timeline, offset=(1 + first + width // 4, 0))
        quarter = (width // 4) / (width - 1) * LENGTH
        await wait_until(pilot, lambda: quarter <= at(app) < quarter + EVERY)


async def test_help_and_footer_follow_the_feed(feed: ReplayFeed) -> None:
    app = paused_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, feed)
        help_keys = dict(app.key_help())
        for key, what in [
            ("+, =", "Play faster"),
            ("-", "Play slower"),
            (",", "Step back (pauses)"),
            (".", "Step forward (pauses)"),
            ("[", "Back 1 min"),
            ("]", "Forward 1 min"),
            ("{", "Back 10 min"),
            ("}", "Forward 10 min"),
            ("g", "Go to"),
            ("f", "Next incident"),
            ("F", "Previous incident"),
        ]:
            assert help_keys[key] == what
        assert "Slower" not in help_keys.values()  # the live interval keys are hidden
        assert "HH:MM[:SS]" in help_keys["g accepts"]
        assert app.screen.active_bindings["plus"].binding.action == "speed(1)"


async def test_follow_mode_shows_samples_as_they_are_written(tmp_path: Path) -> None:
    path = tmp_path / "growing.kvmtop"
    writer = StoreWriter(path)
    for t in range(0, 30, EVERY):
        writer.append(sample(t))
    feed = replay_feed(path, follow=True, speed=64.0)  # a tick every 0.16 s
    app = KvmtopApp(feed)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.displayed is not None)
            assert at(app) == 20  # the first frame is the newest sample, as tail -f
            badge = app.query_one(ModeBadge)
            assert "FOLLOW" in str(badge.render()) and badge.has_class("-replay")
            for t in (30, 40):
                writer.append(sample(t))
            await wait_until(pilot, lambda: at(app) == 40)
            await wait_until(pilot, lambda: feed.extent == (T0, T0 + 40))
            await pilot.pause()
            state = app.query_one(Timeline).state
            assert state is not None and state.end_s == T0 + 40
    finally:
        feed.close()
        writer.close()


def test_snapshot_replay_screen_with_timeline_and_finding(
    recording: Path, snap_compare: Any
) -> None:
    feed = replay_feed(recording)
    app = paused_app(feed)

    async def run_before(pilot: Pilot[None]) -> None:
        await ready(pilot, app, feed)
        await pilot.press("g", *"16:13:20", "enter")
        await wait_until(pilot, lambda: at(app) == 800)
        # Stepping forward plays through the window: hog's steal is raised at t+830.
        assert await press(pilot, app, *["full_stop"] * 4) == 840
        assert findings_shown(app) == [("steal", "hog", "critical")]

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        feed.close()


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("16:05", T0 + LENGTH, T0 + 300),
        ("16:05:07.5", T0 + LENGTH, T0 + 307.5),
        ("15:59:30", T0 + LENGTH, T0 - 30),  # before the start: that day still
        ("02:00", T0 + 12 * 3600, T0 + 10 * 3600),  # over midnight: the next day
        ("02:00", None, T0 - 14 * 3600),  # no known end: the first day
    ],
)
def test_time_of_day_reads_as_a_time_during_the_recording(
    text: str, end: float | None, expected: float
) -> None:
    assert parse_time(text, T0, end) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["25:00", "16:61", "16:00:99"])
def test_impossible_time_of_day(text: str) -> None:
    with pytest.raises(ValueError, match="not a time of day"):
        parse_time(text, T0, T0 + LENGTH)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab-sample.kvmtop"


async def test_f_lands_on_the_shipped_leak_and_selects_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the shipped demo recording, `f` reaches the leak incident (raised after 4 min
    of balloon figures) on a frame that shows it, with its row selected: the jump
    resumes the detectors from the scan's checkpoint, not from the incident's start."""
    feed = replay_feed(EXAMPLE)
    app = KvmtopApp(feed, title_suffix="replay of lab-sample.kvmtop")
    app.paused = True
    notes = notes_of(app, monkeypatch)
    with StoreReader(EXAMPLE) as reader:
        end = reader.last_time()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot, lambda: app.displayed is not None and feed.scanned_s == end, timeout=60
        )
        leak = next(s for s in feed.incidents if s.incident.kind == "leak")
        for _ in feed.incidents:
            await press(pilot, app, "f")
            if app.displayed is not None and app.displayed.wall_s == leak.raised_s:
                break
        assert app.displayed is not None and app.displayed.wall_s == leak.raised_s
        assert notes[-1].startswith("critical incident: lab-memleak")
        shown = {i.cause: i for i in app.displayed.incidents}
        assert leak.incident.cause in shown
        assert "exhausted in" in shown[leak.incident.cause].members[0].message
        row = app.query_one(IncidentTable).cursor
        assert row is not None and row.incident is not None
        assert row.incident.cause == leak.incident.cause
    feed.close()
