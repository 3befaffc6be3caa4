"""The argument parser of `kvmtop` and its commands: the options every command takes,
then each command's own (its module's `add_arguments`), and around what argparse
writes, the manual's sections (`kvmtop.commands.manual`).

Layer: commands. Building it imports every command module but none of the work they
call: `kvmtop record` loads no rendering code and no command loads textual
(tests/test_architecture.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kvmtop import __version__
from kvmtop.commands import (
    completion,
    doctor,
    export,
    fleet,
    manual,
    record,
    reindex,
    replay,
    report,
    serve,
    top,
)
from kvmtop.commands import slice as slice_

COMMANDS = (
    ("record", record, "record raw samples to a file, headless"),
    ("replay", replay, "replay a recording in the TUI or as batch output"),
    ("slice", slice_, "copy a time range of a recording to a new file"),
    ("reindex", reindex, "rebuild a recording's index (what makes reports fast)"),
    ("report", report, "summarize a recording: findings, offenders, host baseline"),
    ("export", export, "export a recording as CSV, JSON lines or OpenMetrics"),
    ("doctor", doctor, "check every data source and the host"),
    ("serve", serve, "serve OpenMetrics for Prometheus"),
    ("fleet", fleet, "every host's kvmtop, from Prometheus"),
    ("completion", completion, "print a shell completion script (bash, zsh or fish)"),
)
"""Each command: its name, its module (`add_arguments`, `run`) and its line in --help."""


def common_options(p: argparse.ArgumentParser, default: object) -> None:
    """Options every command accepts, before or after the command name."""
    p.add_argument(
        "-c",
        "--connect",
        metavar="URI",
        default=default,
        help="libvirt URI (default qemu:///system)",
    )
    # Its range is the config file's (the type of Settings.interval_s), checked in settings_of.
    p.add_argument(
        "-d",
        "--interval",
        type=float,
        metavar="S",
        default=default,
        help="seconds between samples (default 2)",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", default=default, help="config file (TOML)"
    )
    p.add_argument(
        "--theme",
        default=default,
        help="theme name (kvmtop-dark, kvmtop-light, kvmtop-high-contrast)",
    )
    p.add_argument(
        "--rtt",
        action="store_true",
        default=default,
        help="probe each guest's network round-trip time (sends ICMP echo, or "
        "TCP SYN to ports set in [rtt]; live, batch, record; see config [rtt])",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `kvmtop` and its commands."""
    p = argparse.ArgumentParser(
        prog="kvmtop",
        description="Live monitor for KVM hosts: per-guest steal, VM exits, disk, network "
        "and memory next to the host baseline. Without a command: the live TUI (or, with "
        "--batch, text or JSON snapshots on standard output).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common_options(p, None)
    top.add_arguments(p)
    p.add_argument("--version", action="version", version=f"kvmtop {__version__}")
    # Sub-command options default to SUPPRESS so they never reset a global one
    # given before the command name (argparse copies sub-parser defaults over).
    common = argparse.ArgumentParser(add_help=False)
    common_options(common, argparse.SUPPRESS)
    commands = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, text in COMMANDS:
        module.add_arguments(
            commands.add_parser(
                name,
                parents=[common],
                help=text,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
    # The man-page sections (manual.py) around what argparse writes (usage, options).
    for name, sub in (("", p), *commands.choices.items()):
        sub.description = manual.description(sub.description)
        sub.epilog = manual.epilog(name, sub.epilog)
    return p
