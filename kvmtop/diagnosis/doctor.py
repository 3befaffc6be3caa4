"""`kvmtop doctor`'s examination: which sources work on this host, exactly why not, and
what to change.

Layer: beside the sampler (reads collectors; never imports textual). The stages are
`kvmtop.diagnosis.sources`, `.kvm` and `.advice`; this module runs them in order and
writes the verdicts.

Every source is judged by its own collector's `probe()` (the same code the TUI and
`serve` run), plus the facts only a one-off check can see: the libvirt version's
fields, each guest's balloon stats period and KVM statistics, whether
`kvm:kvm_exit` fires at all (measured over one second on a running KVM guest),
`perf_event_paranoid`, and host settings worth changing (vCPU:pCPU, memory reserve,
THP, I/O scheduler of the devices backing guest disks, halt polling), each with the
exact setting. Everything is read under `root`, so tests run it on fake trees.

Exit status: 1 when a required source is unusable (host /proc; libvirt when a URI
was given explicitly with -c), else 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import TextIO

from kvmtop.diagnosis.advice import advice_checks
from kvmtop.diagnosis.checks import (
    FAIL,
    OK,
    SKIP,
    STATUSES,
    WARN,
    Check,
    Environment,
    Examination,
    probe_check,
)
from kvmtop.diagnosis.kvm import debugfs_check, kvm_exit_check, paranoid_check, tracefs_check
from kvmtop.diagnosis.sources import guest_checks, host_checks, libvirt_checks, privileges_check


class Doctor(Examination):
    """Runs every check once; `checks()` yields them in a stable order."""

    def checks(self) -> Iterator[Check]:
        """Every check, sources first, then guests, then host advice."""
        try:
            yield privileges_check(self)
            yield from host_checks(self)
            self.sched_probe = self.sched.probe()
            yield probe_check(
                self.sched_probe,
                "per-thread schedstat (vCPU steal)",
                "/proc/PID/task/TID/schedstat readable",
            )
            yield probe_check(
                self.processes.probe(),
                "KVM processes without libvirt",
                "process fd tables readable",
            )
            yield from libvirt_checks(self)
            yield from guest_checks(self)
            yield debugfs_check(self)
            yield tracefs_check(self)
            yield paranoid_check(self)
            yield kvm_exit_check(self)
            yield from advice_checks(self)
        finally:
            self.libvirt.close()


_HEADINGS = {FAIL: "FAIL", WARN: "WARN", OK: "OK", SKIP: "SKIPPED"}
_MARKS = {FAIL: "x", WARN: "!", OK: "+", SKIP: "-"}


def exit_status(checks: Sequence[Check]) -> int:
    """1 when a required source is unusable, else 0."""
    return 1 if any(c.required and c.status == FAIL for c in checks) else 0


def render_text(checks: Sequence[Check], out: TextIO) -> None:
    """Grouped FAIL / WARN / OK / SKIPPED, each problem with its fix."""
    for status in STATUSES:
        group = [c for c in checks if c.status == status]
        if not group:
            continue
        print(f"{_HEADINGS[status]} ({len(group)})", file=out)
        for c in group:
            print(f"  {_MARKS[status]} {c.title}: {c.detail}", file=out)
            if c.fix and status in (FAIL, WARN):
                print(f"      fix: {c.fix}", file=out)
        print(file=out)


def render_json(checks: Sequence[Check], out: TextIO) -> None:
    """One JSON object: the checks, counts per status and the exit status."""
    doc = {
        "checks": [asdict(c) for c in checks],
        "summary": {s: sum(c.status == s for c in checks) for s in STATUSES},
        "exit_status": exit_status(checks),
    }
    json.dump(doc, out, indent=2)
    out.write("\n")


def diagnose(env: Environment) -> list[Check]:
    """Run every check once."""
    return list(Doctor(env).checks())
