"""Command line: parse arguments, build the feed, run the TUI or a headless loop.

The only module that reads argv and the environment. Headless paths (`--batch`)
never import textual: the app module is imported only when the TUI starts.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from kvmtop import __version__
from kvmtop.config import ConfigError, Settings, load_settings
from kvmtop.feed import LiveFeed, Pipeline


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `kvmtop` (live TUI and batch mode)."""
    p = argparse.ArgumentParser(
        prog="kvmtop",
        description="Live monitor for KVM hosts: per-guest steal, VM exits, disk, network "
        "and memory next to the host baseline.",
        epilog="Privileges: libvirt stats need read access to the libvirt socket "
        "(root or the libvirt group); vCPU schedstat of QEMU threads needs root or the "
        "same user as QEMU. See README.md, 'Privileges'.",
    )
    p.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (default qemu:///system)")
    p.add_argument("-d", "--interval", type=_positive_float, metavar="S",
                   help="seconds between samples (default 2)")
    p.add_argument("--config", type=Path, metavar="FILE", help="config file (TOML)")
    p.add_argument("--theme", help="theme name (kvmtop-dark, kvmtop-light, kvmtop-high-contrast)")
    p.add_argument("-b", "--batch", action="store_true", help="print snapshots to stdout, no TUI")
    p.add_argument("-n", "--count", type=int, metavar="N", help="with --batch: stop after N lines")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="with --batch: output format (json: one object per line)")
    p.add_argument("--version", action="version", version=f"kvmtop {__version__}")
    return p


def build_live_feed(settings: Settings) -> LiveFeed:
    """Wire the real collectors to the shared pipeline."""
    from kvmtop.collectors.host import HostCollector
    from kvmtop.collectors.libvirt import LibvirtCollector
    from kvmtop.collectors.sched import SchedCollector
    from kvmtop.sampler import Sampler

    sampler = Sampler(
        HostCollector(),
        LibvirtCollector(settings.uri, balloon_every=settings.balloon_every),
        [SchedCollector()],
        interval_s=settings.interval_s,
    )
    pipeline = Pipeline(window_size=settings.window_size, min_ops=settings.min_ops)
    return LiveFeed(sampler, pipeline)


def _check_uri(feed: LiveFeed, explicit: bool) -> str | None:
    """With an explicit -c URI, the connection must open: return the error if not."""
    if not explicit or feed.sampler.guests is None:
        return None
    probe = feed.sampler.guests.probe()
    return None if probe.available else probe.reason or "cannot connect"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kvmtop` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings, warning = load_settings(args.config)
    except ConfigError as exc:
        print(f"kvmtop: {exc}", file=sys.stderr)
        return 2
    if warning:
        print(f"kvmtop: warning: {warning}", file=sys.stderr)
    if args.connect:
        settings = replace(settings, uri=args.connect)
    if args.interval:
        settings = replace(settings, interval_s=args.interval)
    if args.theme:
        settings = replace(settings, theme=args.theme)

    feed = build_live_feed(settings)
    error = _check_uri(feed, explicit=bool(args.connect))
    if error:
        print(f"kvmtop: cannot open {settings.uri}: {error}", file=sys.stderr)
        feed.close()
        return 1
    try:
        if args.batch:
            from kvmtop.batch import run_batch

            try:
                run_batch(feed, sys.stdout, count=args.count, fmt=args.format)
            except KeyboardInterrupt:
                pass
            return 0
        from kvmtop.app import KvmtopApp

        KvmtopApp(feed, theme_name=settings.theme).run()
        return 0
    finally:
        feed.close()
