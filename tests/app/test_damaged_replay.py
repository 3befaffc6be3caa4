"""The TUI over a damaged recording (#16): it says which samples it skipped, in a
notification, and plays on past them."""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kvmtop.app.main import KvmtopApp
from kvmtop.config import Settings
from kvmtop.feed.replay import ReplayFeed
from kvmtop.store.reader import StoreReader
from kvmtop.views.host_strip import HostStrip
from kvmtop.wiring import build_pipeline
from tests.app.builders import wait_until
from tests.app.test_replay_nav import notes_of

LAB = Path(__file__).resolve().parents[1] / "fixtures/recordings/lab-sample-format3.kvmtop"
PAGE = 1024
"""The lab sample's page size."""
SAMPLE_25_PAGE = 39 * PAGE
"""Offset of the page holding sample #25's row in the lab sample (checked below)."""


def damaged_copy(tmp_path: Path) -> Path:
    """A copy of the lab sample with 32 random bytes over the header of the page
    holding sample #25's row."""
    path = Path(shutil.copy(LAB, tmp_path / "lab.kvmtop"))
    with open(path, "r+b") as f:
        f.seek(SAMPLE_25_PAGE)
        f.write(random.Random(4).randbytes(32))
    return path


async def test_skipped_samples_are_notified_and_playback_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = damaged_copy(tmp_path)
    with StoreReader(LAB) as intact:
        last_s = intact.last_time()
    settings = Settings()
    feed = ReplayFeed(
        StoreReader(path),
        build_pipeline(settings),
        speed=64,
        scanner=build_pipeline(replace(settings, window_size=2)),
    )
    app = KvmtopApp(feed)
    notes: list[tuple[str, dict[str, Any]]] = []
    real = app.notify

    def notify(message: str, **kw: Any) -> None:
        notes.append((message, kw))
        real(message, **kw)

    monkeypatch.setattr(app, "notify", notify)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: bool(notes), timeout=30)
            _, kw = notes[0]
            assert kw["title"] == "Damaged recording" and kw["severity"] == "warning"
            # Playback (at 64x) goes on past the damaged page to the end, and the scan
            # too (no frame or scan message is left to come after the app exits).
            await wait_until(
                pilot,
                lambda: (
                    "end of recording" in app.query_one(HostStrip).note and feed.scanned_s == last_s
                ),
                timeout=60,
            )
            assert feed.position == 121
        # The damage is notified where it starts, #25: alone, or as the run it is
        # the first of when the scan found the rest of its chain (#26-#30) before
        # the notification; as the run grows, it is notified again, whole, and the
        # notices listed at exit hold it whole too.
        text = "\n".join(message for message, _ in notes)
        assert re.match(
            r"samples? #25 (to #\d+ )?\(.*2026-11-26 05:18:03 UTC.*\) skipped: unreadable: "
            "database disk image is malformed",
            text,
        ), text
        assert notes[-1][0].startswith("samples #25 to #30 ("), notes
        assert [line.split(" (")[0] for line in feed.notices] == ["samples #25 to #30"]
    finally:
        feed.close()


async def test_a_run_of_skipped_samples_that_grows_is_notified_again_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run the reader extends after it was notified (the scan reaches more of it
    later) has another notice text: it is notified again, whole; a notice notified
    already is not repeated."""
    feed = ReplayFeed(StoreReader(damaged_copy(tmp_path)), build_pipeline(Settings()), speed=64)
    app = KvmtopApp(feed)
    notes = notes_of(app, monkeypatch)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            # Played to the end first (this feed has no scanner): no frame is left to
            # come while the app exits.
            await wait_until(
                pilot, lambda: "end of recording" in app.query_one(HostStrip).note, timeout=60
            )
            assert notes
            first = list(feed.notices)
            grown = [*first[:-1], "samples #25 to #31 (7 samples) skipped: unreadable"]
            monkeypatch.setattr(ReplayFeed, "notices", property(lambda _self: grown))
            shown = len(notes)
            app._show_notices()
            assert notes[shown:] == [grown[-1]]
            app._show_notices()
            assert len(notes) == shown + 1
    finally:
        feed.close()
