"""The app's collection thread: it calls `feed.next()` once per interval and posts
each frame to the UI thread.

Layer: app. Imports the feed protocol; never collectors directly.

Collection runs in a thread worker that calls `feed.next()` once per interval and
posts one `FrameReady` per frame; a frame still queued is replaced by a newer one, so
a slow terminal shows the latest frame rather than a backlog. The UI thread never
waits for libvirt. Pausing freezes what is shown while collection goes on.

Over a recording (a `Navigable` feed) pausing holds playback instead, and the keys
move through it: the UI queues a request and the same thread performs it (the feed
reads the file), posting the frame there at once, paused or not. While it waits for
the next tick, that thread also scans the recording for findings (the timeline's
markers) and incidents (where `f` and `F` go).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.message import Message

from kvmtop.feed.protocols import Feed, Navigable
from kvmtop.model.snapshot import Snapshot
from kvmtop.views.themes import ThemedApp

SCAN_CHUNK = 4
"""Samples scanned for findings between two looks for requests (each costs one
pipeline push, which grows with the guests: bench/results/measurements.md#replay-scan-chunk)."""

Request = Callable[[Navigable], Snapshot | None]
"""A move through a recording, asked for by the UI, performed by the collection
thread; it returns the frame to show, or None (after saying why) for none."""


class FrameReady(Message):
    """A new snapshot from the feed; a newer one replaces it while it waits in the queue."""

    def __init__(self, snapshot: Snapshot) -> None:
        """Wrap a snapshot."""
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        """Only the latest frame matters."""
        return isinstance(message, FrameReady)


class FeedEnded(Message):
    """The feed has no more snapshots (the end of a recording)."""


class TimelineChanged(Message):
    """The scan got further: redraw the timeline."""

    def can_replace(self, message: Message) -> bool:
        """Only the latest state matters."""
        return isinstance(message, TimelineChanged)


class FeedApp(ThemedApp):
    """An app shown from a feed through the collection thread (`collect`).

    Over a recording the thread also performs the moves the keys queue
    (`_requests`, a `Request` each) and scans the recording while it waits.
    """

    def __init__(
        self, feed: Feed, *, theme_name: str | None = None, user_theme_dir: Path | None = None
    ) -> None:
        """Create the app over `feed` (see `KvmtopApp`)."""
        super().__init__(theme_name=theme_name, user_theme_dir=user_theme_dir)
        self.feed = feed
        self.paused = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.nav: Navigable | None = feed if isinstance(feed, Navigable) else None
        """The feed as a recording the keys move through; None when live."""
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._scanning = self.nav is not None
        """The collection thread still scans the recording (set only by that thread)."""

    def on_unmount(self) -> None:
        """Let the collection thread finish."""
        self._stop.set()
        self._wake.set()

    @work(thread=True, exclusive=True, group="feed")
    def collect(self) -> None:
        """Call the feed once per interval and post each frame (runs in a thread).

        Over a recording this thread also performs the requests the keys queue,
        holds playback while paused (after the first frame) and after the end, and
        scans the recording while it waits.
        """
        shown = ended = False
        while not self._stop.is_set():
            started = time.monotonic()
            if self.nav is not None and not self._requests.empty():
                frame = self._requests.get()(self.nav)
                if frame is not None:
                    shown, ended = True, False
                    self.post_message(FrameReady(frame))
                continue
            if ended or (shown and self.paused and self.nav is not None):
                self._wait(None)
                continue
            snapshot = self.feed.next()
            if snapshot is None:
                self.post_message(FeedEnded())
                if self.nav is None:
                    return
                ended = True
                continue
            shown = True
            self._scanning = self._scanning or (self.nav is not None and self.nav.follow)
            self.post_message(FrameReady(snapshot))
            self._wait(started)

    def _wait(self, started: float | None) -> None:
        """Sleep until the next tick (`started` + interval), or with None until woken,
        scanning the recording meanwhile; a request or quitting ends it early, and a
        new interval moves the tick."""
        while not self._stop.is_set() and self._requests.empty():
            remaining = (
                math.inf if started is None else (started + self.feed.interval_s - time.monotonic())
            )
            if remaining <= 0:
                return
            if self._scanning and self.nav is not None:
                self._scanning = self.nav.scan(SCAN_CHUNK)
                self.post_message(TimelineChanged())
                continue
            if self._wake.wait(None if started is None else remaining):
                self._wake.clear()
                if started is None:
                    return
