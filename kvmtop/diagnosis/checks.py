"""Doctor's verdicts and where they look: `Check`, the `Environment` (everything
injectable for tests) and the `Examination` (the collectors the checks probe, and what
earlier checks found for later ones).

Layer: beside the sampler (reads collectors; never imports textual).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmtop.collectors.base import Probe
from kvmtop.collectors.host import HostCollector
from kvmtop.collectors.kvmdebugfs import DebugfsCollector
from kvmtop.collectors.libvirt.collector import LibvirtCollector
from kvmtop.collectors.perf import OpenFn
from kvmtop.collectors.processes import ProcessCollector
from kvmtop.collectors.sched import SchedCollector
from kvmtop.collectors.tracepoints import TracepointCollector
from kvmtop.detectors.settings import OvercommitSettings
from kvmtop.model.sample import GuestSample, HostSample

OK = "ok"
WARN = "warn"
FAIL = "fail"
SKIP = "skip"
STATUSES = (FAIL, WARN, OK, SKIP)
"""In the order the text report lists them."""

# libvirt versions of the fields kvmtop relies on (docs/sources.md#libvirt-bulk-stats):
# vcpu.N.delay came with commit 4719ec15 (7.2.0); the vm group and vcpu.N.<stat>.<type>
# KVM binary stats with 8.9.0, and they need QEMU's query-stats (QEMU 7.1).
LIBVIRT_DELAY = (7, 2, 0)
LIBVIRT_VM_GROUP = (8, 9, 0)
QEMU_QUERY_STATS = (7, 1, 0)

BALLOON_PERIOD_HINT_S = 5
"""The stats period suggested in fixes: often enough for trends, cheap for guests."""


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict.

    Attributes:
        id: stable identifier ("host", "libvirt.delay", "guest.balloon:web-1", ...).
        status: OK, WARN, FAIL or SKIP (could not be judged here).
        title: what was checked, a few words.
        detail: what was found, or exactly why it does not work.
        fix: the setting or command to change, when there is one.
        required: a FAIL here makes the exit status 1.
    """

    id: str
    status: str
    title: str
    detail: str
    fix: str | None = None
    required: bool = False


@dataclass
class Environment:
    """Where and how to look (everything injectable for tests).

    Attributes:
        root: filesystem root holding proc/, sys/, run/ (a fake tree in tests).
        uri: libvirt URI; `uri_explicit` when the user gave it with -c.
        euid: effective uid to judge privileges by.
        libvirt_open: opens a libvirt connection (default libvirt.openReadOnly).
        perf_open: the perf_event_open call (default the real syscall).
        measure_s: how long to count kvm:kvm_exit on a KVM guest (0 skips it).
        now: wall clock, for balloon stats freshness.
        stat: `os.stat` for resolving disk images to host disks (tests fake it).
        overcommit: thresholds shared with the `overcommit` detector.
    """

    root: Path = Path("/")
    uri: str | None = "qemu:///system"
    uri_explicit: bool = False
    euid: int = field(default_factory=os.geteuid)
    libvirt_open: Callable[[str | None], Any] | None = None
    perf_open: OpenFn | None = None
    measure_s: float = 1.0
    now: Callable[[], float] = time.time
    stat: Callable[[str], os.stat_result] = os.stat
    overcommit: OvercommitSettings = field(default_factory=OvercommitSettings)


def version(text: str | None) -> tuple[int, ...] | None:
    """ "9.0.0" or "QEMU 7.2.0" → (9, 0, 0); None when there is no version."""
    if not text:
        return None
    token = text.split()[-1]
    parts = token.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def dotted(v: tuple[int, ...]) -> str:
    """(9, 0, 0) → "9.0.0"."""
    return ".".join(map(str, v))


def read_under(root: Path, rel: str) -> str | None:
    """The stripped text of the file `rel` under `root`, None when it cannot be read."""
    try:
        return (root / rel).read_text().strip()
    except OSError:
        return None


class Examination:
    """The collectors the checks probe, all reading under `env.root`, and what the
    checks found that later checks read (the host sample, the guests, probes)."""

    def __init__(self, env: Environment) -> None:
        """Build the collectors the checks probe, all reading under `env.root`."""
        self.env = env
        root = env.root
        self.host = HostCollector(root)
        self.libvirt = LibvirtCollector(env.uri, root, balloon_every=1, open_fn=env.libvirt_open)
        self.sched = SchedCollector(root)
        # Doctor looks, it does not change the system: no mounting.
        self.debugfs = DebugfsCollector(root, mount=False)
        self.tracepoints = TracepointCollector(root, mount=False, open_fn=env.perf_open)
        self.processes = ProcessCollector(root)
        self.host_sample: HostSample | None = None
        self.guests: tuple[GuestSample, ...] = ()
        self.libvirt_probe: Probe | None = None
        self.sched_probe: Probe | None = None
        self.trace_probe: Probe | None = None


def probe_check(probe: Probe, title: str, works: str) -> Check:
    """A collector's probe as a check: unavailable or partial → WARN with its reason."""
    if not probe.available:
        return Check(probe.name, WARN, title, probe.reason or "unavailable")
    if probe.reason:
        return Check(probe.name, WARN, title, probe.reason)
    return Check(probe.name, OK, title, works)
