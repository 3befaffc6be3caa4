"""What `kvmtop serve` collects and answers: the collection loop and the exporter.

Layer: headless output (like the recorder). Never imports textual.

Collection runs on its own thread, once per interval, through the live feed's
sampler and the shared `Pipeline` (so findings and incidents come from the same
detectors as in the TUI). A scrape answers from the last *complete* tick and never
waits for a collection in progress: a libvirt call stuck on a hung QEMU monitor
(libvirt's NOWAIT flag only skips a domain whose job is held by someone else, not a
monitor that does not answer) stalls the collection thread, not the scrapes, and shows
as a stale `kvmtop_last_sample_timestamp_seconds` and a growing
`kvmtop_collection_running_seconds`. What is exported: `kvmtop.exposition`.
"""

from __future__ import annotations

import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from kvmtop import __version__
from kvmtop.exposition.encode import Encoder
from kvmtop.exposition.points import Points, tick_points
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot

if TYPE_CHECKING:
    from kvmtop.feed.live import LiveFeed

GZIP_LEVEL = 1
"""zlib's fastest level: a fraction of the CPU of levels 6 (zlib's default) and 9
(`gzip.compress`'s) for a slightly larger body (bench/results/measurements.md#scrape-gzip-level).
A scrape's CPU is what an operator pays; its few kB more cross a network that does
not notice."""


# --------------------------------------------------------------------------- exporter


@dataclass(frozen=True, slots=True)
class _Tick:
    """The last complete tick."""

    sample: Sample
    snapshot: Snapshot
    elapsed_s: float


@dataclass(slots=True)
class _Body:
    """A tick's families written in one format: plain, and as the start of a gzip
    stream (the bytes compressed so far and the compressor that holds the rest,
    copied by each scrape to add the endpoint's own lines and end the stream)."""

    text: bytes
    gzip_head: bytes
    gzip: Any  # zlib's Compress (typeshed has no public name for it)


class Exporter:
    """What a scrape answers: the last complete tick plus the endpoint's own state.

    The collection thread calls `begin()` / `publish()` (or `fail()`); scrapes call
    `exposition()`, which never waits for a collection: it takes the lock only to read
    references (never across I/O). A tick is written once per format, by the first
    scrape that asks for it, whatever the number of scrapes (two Prometheus of an HA
    pair, federation, a curl); only the endpoint's few own lines are written per scrape.

    Args:
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tick: _Tick | None = None
        # The tick's bodies by format (True: OpenMetrics), with the encoders, under
        # _render_lock: one scrape writes a tick, concurrent ones wait for it.
        self._render_lock = threading.Lock()
        self._bodies: tuple[_Tick | None, dict[bool, _Body]] = (None, {})
        self._tick_encoder = Encoder()
        self._own_encoder = Encoder()
        # Exported from the start, so `increase()` sees the first pipeline failure.
        self._errors: Counter[str] = Counter({"pipeline": 0})
        self._samples = 0
        self._running_since: float | None = None

    def begin(self) -> None:
        """A collection starts now."""
        with self._lock:
            self._running_since = self._clock()

    def publish(self, sample: Sample, snapshot: Snapshot, elapsed_s: float) -> None:
        """A collection completed: serve it from now on."""
        with self._lock:
            self._tick = _Tick(sample, snapshot, elapsed_s)
            self._samples += 1
            self._running_since = None
            for status in sample.sources:
                if not status.ok:
                    self._errors[status.name] += 1
                else:
                    self._errors.setdefault(status.name, 0)

    def fail(self, source: str) -> None:
        """A collection failed as a whole; the previous tick stays served."""
        with self._lock:
            self._errors[source] += 1
            self._running_since = None

    def _own(self, since: float | None, errors: dict[str, int], samples: int) -> Points:
        """The endpoint's own series (its build, collection state and counts)."""
        own = Points()
        own.add("kvmtop_build_info", (__version__,), 1)
        own.add(
            "kvmtop_collection_running_seconds",
            (),
            0.0 if since is None else max(0.0, self._clock() - since),
        )
        for source, n in sorted(errors.items()):
            own.add("kvmtop_collection_errors_total", (source,), n)
        own.add("kvmtop_samples_total", (), samples)
        return own

    def exposition(self, *, openmetrics: bool, gzip: bool) -> bytes:
        """The body of a scrape: Prometheus text 0.0.4 or OpenMetrics 1.0.0 (ended by
        `# EOF`), gzip-compressed when `gzip`."""
        with self._lock:
            tick = self._tick
            errors = dict(self._errors)
            samples = self._samples
            since = self._running_since
        with self._render_lock:
            cached_tick, bodies = self._bodies
            if cached_tick is not tick:
                bodies = {}
                self._bodies = (tick, bodies)
            body = bodies.get(openmetrics)
            if body is None:
                text = (
                    b""
                    if tick is None
                    else self._tick_encoder.render(
                        tick_points(tick.sample, tick.snapshot, tick.elapsed_s),
                        openmetrics=openmetrics,
                    ).encode()
                )
                # wbits 31: a gzip stream (RFC 1952), as Content-Encoding: gzip wants.
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
                body = bodies[openmetrics] = _Body(text, compressor.compress(text), compressor)
            own = self._own_encoder.render(
                self._own(since, errors, samples), openmetrics=openmetrics
            )
            stream = body.gzip.copy() if gzip else None
        tail = (own + "# EOF\n" if openmetrics else own).encode()
        if stream is None:
            return body.text + tail
        gzipped: bytes = body.gzip_head + stream.compress(tail) + stream.flush()
        return gzipped


# --------------------------------------------------------------------------- collection


class CollectionLoop:
    """Runs the live feed's sampler and the shared pipeline on a daemon thread.

    Each tick: `sampler.sample()` (raw counters), `pipeline.push()` (rates, window,
    detectors, snapshot), then `Exporter.publish()`. Ticks start every `interval_s`;
    a tick that overruns makes the next one start at once (no burst of catch-up
    ticks). An exception in a tick is counted and reported, never fatal.
    """

    def __init__(
        self, feed: LiveFeed[Any], exporter: Exporter, log: TextIO = sys.stderr, mode: str = "live"
    ) -> None:
        """Wire a live feed (sampler + pipeline) to an exporter; `mode` is the
        snapshots' ("live", or "replay" for a recording played as if live)."""
        self.feed = feed
        self.exporter = exporter
        self._log = log
        self._mode = mode
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvmtop-collect", daemon=True)

    def start(self) -> None:
        """Start collecting."""
        self._thread.start()

    def tick(self) -> None:
        """Collect once and publish (the thread's body; tests call it directly)."""
        self.exporter.begin()
        started = time.monotonic()
        try:
            sample = self.feed.sampler.sample()
            snapshot = self.feed.pipeline.push(sample, mode=self._mode)
        except Exception as exc:  # a bug in one tick must not end the endpoint
            self.exporter.fail("pipeline")
            print(f"kvmtop serve: collection failed: {exc!r}", file=self._log, flush=True)
            return
        self.exporter.publish(sample, snapshot, time.monotonic() - started)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_at = max(next_at + self.feed.interval_s, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def stop(self, timeout_s: float) -> bool:
        """Ask the thread to stop; True when it ended within `timeout_s`."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()
