"""`kvmtop serve`: an OpenMetrics / Prometheus text endpoint for this host.

Layer: headless output (like `batch`). Never imports textual.

Collection runs on its own thread, once per interval, through the live feed's
sampler and the shared `Pipeline` (so findings and incidents come from the same
detectors as in the TUI). `/metrics` answers from the last *complete* tick and never
waits for a collection in progress: a libvirt call stuck on a hung QEMU monitor
(libvirt's NOWAIT flag only skips a domain whose job is held by someone else, not a
monitor that does not answer) stalls the collection thread, not the scrapes, and shows
as a stale `kvmtop_last_sample_timestamp_seconds` and a growing
`kvmtop_collection_running_seconds`.

Counters are exported as the raw cumulative values of the `Sample` (ns converted
to seconds), never as rates: Prometheus computes rates with `rate()`, and a guest
restart is a counter reset it already understands. Every metric name, type, label
set and meaning is in `kvmtop.exposition.metrics.METRICS` and documented in
docs/metrics.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted

from kvmtop import __version__
from kvmtop.exposition.encode import Encoder
from kvmtop.exposition.points import Points, tick_points
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot

if TYPE_CHECKING:
    from kvmtop.config import Settings
    from kvmtop.feed.live import LiveFeed

DEFAULT_LISTEN = ("127.0.0.1", 9177)
"""Loopback only unless told otherwise: the endpoint has no authentication."""

OPENMETRICS_TYPE = "application/openmetrics-text"
"""The media type of OpenMetrics (its content types carry a version and charset)."""

GZIP_LEVEL = 1
"""zlib's fastest level. On the shipped lab recording's last tick (77 kB of
OpenMetrics, 12 guests) it took 0.31 ms of CPU to 10.7 kB; level 6 (zlib's default)
0.88 ms to 9.1 kB, level 9 (`gzip.compress`'s) 1.46 ms to 8.9 kB. A scrape's CPU is
what an operator pays; its 1.6 kB more cross a network that does not notice."""


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
        own.add("kvmtop_collection_running_seconds", (),
                0.0 if since is None else max(0.0, self._clock() - since))
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
                text = b"" if tick is None else self._tick_encoder.render(
                    tick_points(tick.sample, tick.snapshot, tick.elapsed_s),
                    openmetrics=openmetrics).encode()
                # wbits 31: a gzip stream (RFC 1952), as Content-Encoding: gzip wants.
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
                body = bodies[openmetrics] = _Body(text, compressor.compress(text),
                                                   compressor)
            own = self._own_encoder.render(self._own(since, errors, samples),
                                           openmetrics=openmetrics)
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

    def __init__(self, feed: LiveFeed[Any], exporter: Exporter, log: TextIO = sys.stderr,
                 mode: str = "live") -> None:
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


# --------------------------------------------------------------------------- HTTP

_INDEX = (
    b"<html><head><title>kvmtop</title></head><body><h1>kvmtop</h1>"
    b'<p><a href="/metrics">/metrics</a> (OpenMetrics with Accept: '
    b"application/openmetrics-text, else Prometheus text 0.0.4)</p></body></html>\n"
)


class _Handler(BaseHTTPRequestHandler):
    """GET /metrics with content negotiation, GET / with a pointer to it; HEAD of both."""

    server: MetricsServer
    # Seconds a client may take to send its request (StreamRequestHandler.timeout):
    # a stuck client must not hold a thread forever.
    timeout = 10
    server_version = f"kvmtop/{__version__}"
    _content = True
    """Send the body (False while answering HEAD; one handler per request)."""

    def do_GET(self) -> None:
        """Serve the metrics or the index page."""
        self._serve(content=True)

    def do_HEAD(self) -> None:
        """GET without the body: RFC 9110, 9.3.2 (HEAD) wants the same header fields,
        and 8.6 a Content-Length, if sent, equal to GET's (so the body is built)."""
        self._serve(content=False)

    def _serve(self, *, content: bool) -> None:
        self._content = content
        path = urlsplit(self.path).path
        if path == "/metrics":
            # prometheus_client negotiates the format (Prometheus asks OpenMetrics
            # first) and the encoding; the exporter writes the body.
            content_type = choose_encoder(self.headers.get("Accept", ""))[1]
            compress = gzip_accepted(self.headers.get("Accept-Encoding", ""))
            body = self.server.exporter.exposition(
                openmetrics=content_type.startswith(OPENMETRICS_TYPE), gzip=compress)
            headers = [("Content-Type", content_type)]
            if compress:
                headers.append(("Content-Encoding", "gzip"))
            self._reply(200, body, headers)
        elif path == "/":
            self._reply(200, _INDEX, [("Content-Type", "text/html; charset=utf-8")])
        else:
            self._reply(404, b"not found; metrics are at /metrics\n",
                        [("Content-Type", "text/plain; charset=utf-8")])

    def _reply(self, code: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self._content:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        """No access log: Prometheus scrapes every few seconds."""


class MetricsServer(ThreadingHTTPServer):
    """A thread-per-request HTTP server over one `Exporter`."""

    daemon_threads = True
    # The listen backlog: connections the kernel completes before serve_forever's
    # thread accepts them. socketserver's 5 overflowed under 50 scrapes at once (a lost
    # SYN is sent again after 1 s, then 3 s...); 128 is what socket.listen() chooses
    # when not told (min(SOMAXCONN, 128)), room for every Prometheus, federation and
    # dashboard of a site at once. The kernel caps it at net.core.somaxconn.
    request_queue_size = min(socket.SOMAXCONN, 128)

    def __init__(self, address: tuple[str, int], exporter: Exporter) -> None:
        """Bind `address` (IPv4 or IPv6 literal, or a host name) and listen."""
        self.exporter = exporter
        self.address_family = _family(address[0])
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-scrape (Prometheus closes a scrape past its
        scrape_timeout) is no error of ours: nothing is logged. Any other exception in a
        handler gets socketserver's traceback on stderr."""
        if not isinstance(sys.exc_info()[1], ConnectionError):  # EPIPE, ECONNRESET, ...
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        """http://HOST:PORT/metrics with the port actually bound (0 picks one)."""
        host, port = self.socket.getsockname()[:2]
        shown = f"[{host}]" if self.address_family == socket.AF_INET6 else host
        return f"http://{shown}:{port}/metrics"


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name: use what it resolves to first
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT` or `PORT` (on 127.0.0.1) → (host, port).

    Raises:
        argparse.ArgumentTypeError: not one of those forms, or a bad port.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_LISTEN[0], text
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    # An IPv6 address needs its brackets: "::1:9177" could end in a port or not.
    if not host or (":" in host and not (bracketed and _is_v6(host))):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ADDR:PORT, [IPV6]:PORT or PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 0-65535")
    return host, int(port)


def _is_v6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


# --------------------------------------------------------------------------- command


def serve(
    feed: LiveFeed[Any],
    address: tuple[str, int],
    stop: threading.Event,
    *,
    log: TextIO = sys.stderr,
    ready: Callable[[MetricsServer], None] | None = None,
    mode: str = "live",
) -> int:
    """Collect in the background and answer scrapes until `stop` is set.

    Args:
        feed: the live feed whose sampler and pipeline produce the ticks.
        address: (host, port) to bind; port 0 picks a free one.
        stop: set it (e.g. from a signal handler) to shut down.
        log: where the start and stop lines go.
        ready: called with the bound server before the first tick (tests use it).
        mode: "live", or "replay" when the feed plays a recording as if live.

    Returns:
        The exit status: 0, or 1 when the address cannot be bound.
    """
    exporter = Exporter()
    try:
        server = MetricsServer(address, exporter)
    except OSError as exc:
        print(f"kvmtop serve: cannot listen on {address[0]}:{address[1]}: {exc.strerror}",
              file=log)
        return 1
    loop = CollectionLoop(feed, exporter, log, mode)
    http = threading.Thread(target=server.serve_forever, name="kvmtop-http", daemon=True)
    http.start()
    what = "" if mode == "live" else f", {mode}"
    print(f"kvmtop serve: listening on {server.url} (every {feed.interval_s:g} s{what})",
          file=log, flush=True)
    if ready is not None:
        ready(server)
    loop.start()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        # A tick stuck in libvirt cannot be interrupted; give a normal tick time to
        # end, then leave without closing the connection under its feet.
        if loop.stop(timeout_s=feed.interval_s + 5):
            feed.close()
        else:
            print("kvmtop serve: a collection is still stuck; exiting without waiting",
                  file=log)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop serve` (the global -c/-d/--config come from the CLI)."""
    parser.description = (
        "Serve the same metrics as the TUI on an OpenMetrics / Prometheus endpoint "
        "(GET /metrics), collected every interval on a background thread. Counters are "
        "raw cumulative values (use rate() in PromQL); findings are the kvmtop_finding "
        "gauge, incidents the kvmtop_incident* families. Metric names: docs/metrics.md."
    )
    parser.add_argument(
        "--listen", type=parse_listen, default=DEFAULT_LISTEN, metavar="ADDR:PORT",
        help="address to listen on (default 127.0.0.1:9177; [::1]:9177 for IPv6; "
        "0.0.0.0:9177 for every interface)",
    )
    parser.add_argument(
        "--replay", type=Path, metavar="FILE",
        help="serve a recording as if it were live: its samples in a loop at its "
        "interval, clocks moved to now (a demo or test host for Prometheus)",
    )
    parser.add_argument(
        "--host", metavar="NAME",
        help="with --replay: the host name to serve it as (default: the recorded one)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`kvmtop serve`: run until SIGTERM or SIGINT; returns the exit status.

    Raises:
        StoreError: the --replay file is missing, damaged or holds no sample.
    """
    from kvmtop.feed.live import LiveFeed
    from kvmtop.wiring import build_live_feed, build_pipeline

    mode = "live"
    feed: LiveFeed[Any]
    if args.replay is not None:
        from kvmtop.store.looped import LoopedRecording
        from kvmtop.store.reader import StoreReader

        # The shared pipeline, with the detectors and incidents the endpoint exports.
        feed = LiveFeed(LoopedRecording(StoreReader(args.replay), hostname=args.host),
                        build_pipeline(settings))
        mode = "replay"
    elif args.host is not None:
        print("kvmtop: --host names a replayed recording's host: use it with --replay",
              file=sys.stderr)
        return 2
    else:
        feed = build_live_feed(settings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        print(f"kvmtop serve: {signal.Signals(signum).name}, stopping", file=sys.stderr)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    return serve(feed, args.listen, stop, mode=mode)
