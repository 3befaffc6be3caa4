"""The HTTP side of `kvmtop serve`: GET /metrics from an `Exporter`, and `serve()`,
which runs the collection loop and the server until told to stop.

Layer: headless output. The server is the standard library's threading HTTP server;
prometheus_client negotiates the format and the encoding (`choose_encoder`,
`gzip_accepted`), the exporter writes the body.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted

from kvmtop import __version__
from kvmtop.exposition.encode import OPENMETRICS_TYPE
from kvmtop.headless.exporter import CollectionLoop, Exporter

if TYPE_CHECKING:
    from kvmtop.feed.live import LiveFeed

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
                openmetrics=content_type.startswith(OPENMETRICS_TYPE), gzip=compress
            )
            headers = [("Content-Type", content_type)]
            if compress:
                headers.append(("Content-Encoding", "gzip"))
            self._reply(200, body, headers)
        elif path == "/":
            self._reply(200, _INDEX, [("Content-Type", "text/html; charset=utf-8")])
        else:
            self._reply(
                404,
                b"not found; metrics are at /metrics\n",
                [("Content-Type", "text/plain; charset=utf-8")],
            )

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
        print(f"kvmtop serve: cannot listen on {address[0]}:{address[1]}: {exc.strerror}", file=log)
        return 1
    loop = CollectionLoop(feed, exporter, log, mode)
    http = threading.Thread(target=server.serve_forever, name="kvmtop-http", daemon=True)
    http.start()
    what = "" if mode == "live" else f", {mode}"
    print(
        f"kvmtop serve: listening on {server.url} (every {feed.interval_s:g} s{what})",
        file=log,
        flush=True,
    )
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
            print("kvmtop serve: a collection is still stuck; exiting without waiting", file=log)
    return 0
