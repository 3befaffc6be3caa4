"""`kvmtop doctor`: which sources work on this host, exactly why not, and what to change.

Layer: commands (the examination: `kvmtop.diagnosis`).

Exit status: 1 when a required source is unusable (host /proc; libvirt when a URI
was given explicitly with -c), else 0.
"""

from __future__ import annotations

import argparse
import io
from typing import TextIO

from kvmtop.commands.common import write_stdout
from kvmtop.config import Settings
from kvmtop.diagnosis.checks import Environment
from kvmtop.diagnosis.doctor import diagnose, exit_status, render_json, render_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop doctor` (the global -c/--config come from the CLI)."""
    parser.description = (
        "Check every data source kvmtop uses on this host and say exactly why one does "
        "not work, then give host configuration advice (vCPU:pCPU, memory reserve, THP, "
        "I/O schedulers, halt polling), each with the setting to change."
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    parser.add_argument(
        "--measure",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds to count kvm:kvm_exit on a KVM guest (0: skip)",
    )


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """`kvmtop doctor`: write the report to `out` (None: standard output, all at once
    when complete); return the exit status."""
    env = Environment(
        uri=settings.uri,
        # The CLI's global -c/--connect (dest "connect"): explicit URIs are required.
        uri_explicit=getattr(args, "connect", None) is not None,
        measure_s=args.measure,
        overcommit=settings.detectors.overcommit,
    )
    checks = diagnose(env)
    text = io.StringIO()
    (render_json if args.format == "json" else render_text)(checks, text)
    if out is None:
        write_stdout(text.getvalue())
    else:
        out.write(text.getvalue())
    return exit_status(checks)
