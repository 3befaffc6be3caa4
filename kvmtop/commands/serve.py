"""`kvmtop serve`: an OpenMetrics / Prometheus endpoint for this host.

Layer: commands. Parses the options, builds the live feed (or a recording looped as if
live) and hands it to `kvmtop.headless.endpoint.serve`.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from kvmtop.headless.endpoint import serve

if TYPE_CHECKING:
    from kvmtop.config import Settings
    from kvmtop.feed.live import LiveFeed

DEFAULT_LISTEN = ("127.0.0.1", 9177)
"""Loopback only unless told otherwise: the endpoint has no authentication."""


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop serve` (the global -c/-d/--config come from the CLI)."""
    parser.description = (
        "Serve the same metrics as the TUI on an OpenMetrics / Prometheus endpoint "
        "(GET /metrics), collected every interval on a background thread. Counters are "
        "raw cumulative values (use rate() in PromQL); findings are the kvmtop_finding "
        "gauge, incidents the kvmtop_incident* families. Metric names: docs/metrics.md."
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=DEFAULT_LISTEN,
        metavar="ADDR:PORT",
        help="address to listen on (default 127.0.0.1:9177; [::1]:9177 for IPv6; "
        "0.0.0.0:9177 for every interface)",
    )
    parser.add_argument(
        "--replay",
        type=Path,
        metavar="FILE",
        help="serve a recording as if it were live: its samples in a loop at its "
        "interval, clocks moved to now (a demo or test host for Prometheus)",
    )
    parser.add_argument(
        "--host",
        metavar="NAME",
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
        feed = LiveFeed(
            LoopedRecording(StoreReader(args.replay), hostname=args.host), build_pipeline(settings)
        )
        mode = "replay"
    elif args.host is not None:
        print(
            "kvmtop: --host names a replayed recording's host: use it with --replay",
            file=sys.stderr,
        )
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
