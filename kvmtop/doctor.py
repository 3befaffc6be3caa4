"""`kvmtop doctor`: which sources work on this host, exactly why not, and what to change.

Layer: headless output. Never imports textual.

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

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kvmtop.collectors.base import CollectorError, Probe
from kvmtop.collectors.host import HostCollector, selected_word
from kvmtop.collectors.kvmdebugfs import LOCKDOWN_REASON, DebugfsCollector
from kvmtop.collectors.libvirt.collector import LibvirtCollector
from kvmtop.collectors.libvirt.connect import LIBVIRT_MISSING
from kvmtop.collectors.libvirt.domxml import DomainInfo
from kvmtop.collectors.perf import OpenFn
from kvmtop.collectors.processes import ProcessCollector
from kvmtop.collectors.sched import SchedCollector
from kvmtop.collectors.topology import BlockTopology
from kvmtop.collectors.tracepoints import TracepointCollector
from kvmtop.detectors.settings import OvercommitSettings
from kvmtop.model.rates.kvm import kvm_exit_silent
from kvmtop.model.sample import BlockDevSample, GuestSample, HostSample

if TYPE_CHECKING:
    from kvmtop.config import Settings

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


def _version(text: str | None) -> tuple[int, ...] | None:
    """"9.0.0" or "QEMU 7.2.0" → (9, 0, 0); None when there is no version."""
    if not text:
        return None
    token = text.split()[-1]
    parts = token.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def _dotted(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text().strip()
    except OSError:
        return None


class Doctor:
    """Runs every check once; `checks()` yields them in a stable order."""

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

    def checks(self) -> Iterator[Check]:
        """Every check, sources first, then guests, then host advice."""
        try:
            yield self._privileges()
            yield from self._host()
            self.sched_probe = self.sched.probe()
            yield self._probe_check(self.sched_probe, "per-thread schedstat (vCPU steal)",
                                    "/proc/PID/task/TID/schedstat readable")
            yield self._probe_check(self.processes.probe(), "KVM processes without libvirt",
                                    "process fd tables readable")
            yield from self._libvirt()
            yield from self._guests()
            yield self._debugfs()
            yield self._tracefs()
            yield self._paranoid()
            yield self._kvm_exit()
            yield from self._advice()
        finally:
            self.libvirt.close()

    # ------------------------------------------------------------------ sources

    def _privileges(self) -> Check:
        if self.env.euid == 0:
            return Check("privileges", OK, "privileges", "running as root")
        return Check(
            "privileges", WARN, "privileges",
            # proc(5): /proc/PID/task/TID/schedstat is 0444 (steal works for anyone);
            # /proc/PID/fd is 0500 and debugfs/tracefs mount 0700 (fs/debugfs/inode.c).
            f"not root (uid {self.env.euid}): libvirt needs the libvirt group; KVM "
            "debugfs, tracepoints and other users' /proc/PID/fd (finding unmanaged VMs) need root",
            "run as root (sudo kvmtop ...), or add the user to the libvirt group for "
            "libvirt stats alone",
        )

    def _host(self) -> Iterator[Check]:
        probe = self.host.probe()
        if not probe.available:
            yield Check(
                "host", FAIL, "host /proc", probe.reason or "unusable",
                "kvmtop needs procfs: mount -t proc proc /proc", required=True,
            )
            return
        self.host_sample = sample = self.host.collect()
        yield Check(
            "host", OK, "host /proc",
            f"kernel {sample.kernel or '?'}, {sample.ncpu} CPUs, "
            f"{(sample.mem_total_bytes or 0) / 2**30:.1f} GiB RAM",
        )
        gaps = self.host.last_gaps

        def gap(prefix: str) -> str:
            return next((g for g in gaps if g.startswith(prefix)), f"{prefix} unreadable")

        if sample.run_delay_ns is None:
            yield Check(
                "schedstat", WARN, "host run-queue delay", gap("/proc/schedstat"),
                "rebuild the kernel with CONFIG_SCHEDSTATS=y (no run-time switch); guest "
                "steal is unaffected (libvirt vcpu.N.delay, /proc/PID/task/TID/schedstat)",
            )
        else:
            yield Check("schedstat", OK, "host run-queue delay", "/proc/schedstat present")
        if not sample.pressure:
            yield Check(
                "psi", WARN, "host pressure (PSI)", gap("/proc/pressure"),
                "boot with psi=1 (kernel with CONFIG_PSI=y, Linux >= 4.20)",
            )
        else:
            yield Check("psi", OK, "host pressure (PSI)",
                        "/proc/pressure/" + ",".join(sorted(sample.pressure)))
        other = [g for g in gaps if not g.startswith(("/proc/schedstat", "/proc/pressure"))]
        if other:
            yield Check("host.gaps", WARN, "host baseline gaps", "; ".join(other))

    @staticmethod
    def _probe_check(probe: Probe, title: str, works: str) -> Check:
        """A collector's probe as a check: unavailable or partial → WARN with its reason."""
        if not probe.available:
            return Check(probe.name, WARN, title, probe.reason or "unavailable")
        if probe.reason:
            return Check(probe.name, WARN, title, probe.reason)
        return Check(probe.name, OK, title, works)

    def _libvirt(self) -> Iterator[Check]:
        probe = self.libvirt_probe = self.libvirt.probe()
        uri = self.env.uri or "(default URI)"
        if not probe.available:
            reason = probe.reason or "unavailable"
            if reason == LIBVIRT_MISSING:
                fix = "pip install 'kvmtop[libvirt]' (builds libvirt-python: needs " \
                      "libvirt-dev and pkg-config, or the distro's python3-libvirt)"
            elif "permission denied" in reason:
                fix = "run as root, or add the user to the libvirt group"
            else:
                fix = (f"start the libvirt daemon (libvirtd, or virtqemud with the modular "
                       f"daemons) or pass another URI with -c (now {uri})")
            status = FAIL if self.env.uri_explicit else WARN
            yield Check("libvirt", status, "libvirt", reason, fix,
                        required=self.env.uri_explicit)
            return
        d = probe.detail
        yield Check(
            "libvirt", OK, "libvirt",
            f"{d.get('uri', uri)}: libvirt {d.get('libvirt', '?')} "
            f"(client {d.get('libvirt_client', '?')}), {d.get('hypervisor', '?')}",
        )
        daemon = _version(d.get("libvirt"))
        if daemon is not None and daemon < LIBVIRT_DELAY:
            yield Check(
                "libvirt.delay", WARN, "libvirt vcpu.N.delay",
                f"libvirt {_dotted(daemon)} has no vcpu.N.delay (since "
                f"{_dotted(LIBVIRT_DELAY)}): steal comes from vCPU threads' schedstat "
                "(needs root)",
                f"upgrade libvirt to >= {_dotted(LIBVIRT_DELAY)}",
            )
        elif daemon is not None:
            yield Check("libvirt.delay", OK, "libvirt vcpu.N.delay",
                        f"libvirt {_dotted(daemon)} reports vCPU delay (steal)")
        qemu = _version(d.get("hypervisor"))
        if daemon is not None and daemon < LIBVIRT_VM_GROUP:
            yield Check(
                "libvirt.vm_group", WARN, "KVM binary stats via libvirt",
                f"libvirt {_dotted(daemon)} has no vm stats group nor vcpu.N.<stat>.sum "
                f"(since {_dotted(LIBVIRT_VM_GROUP)}): exits come from debugfs (root, "
                "no lockdown) or tracepoints",
                f"upgrade libvirt to >= {_dotted(LIBVIRT_VM_GROUP)} with QEMU >= "
                f"{_dotted(QEMU_QUERY_STATS)}",
            )
        elif qemu is not None and qemu < QEMU_QUERY_STATS:
            yield Check(
                "libvirt.vm_group", WARN, "KVM binary stats via libvirt",
                f"QEMU {_dotted(qemu)} has no query-stats (since "
                f"{_dotted(QEMU_QUERY_STATS)}): libvirt cannot export KVM counters",
                f"upgrade QEMU to >= {_dotted(QEMU_QUERY_STATS)}",
            )
        elif daemon is not None:
            yield Check("libvirt.vm_group", OK, "KVM binary stats via libvirt",
                        f"libvirt {_dotted(daemon)}, {d.get('hypervisor', 'QEMU ?')}")
        try:
            guests = self.libvirt.collect(0)
        except CollectorError as exc:
            yield Check("libvirt.stats", WARN, "libvirt domain stats", str(exc))
            return
        usable = self.sched_probe is not None and self.sched_probe.available
        self.guests = self.sched.enrich(guests) if usable else guests

    # ------------------------------------------------------------------ guests

    def _guests(self) -> Iterator[Check]:
        if self.libvirt_probe is None or not self.libvirt_probe.available:
            return
        running = [g for g in self.guests if g.state == "running"]
        accel = Counter(g.accel or "unknown" for g in running)
        mix = ", ".join(f"{n} {kind}" for kind, n in sorted(accel.items()))
        yield Check("guests", OK, "guests",
                    f"{len(self.guests)} defined, {len(running)} running ({mix or 'none'})")
        for g in sorted(running, key=lambda g: g.name):
            yield from self._guest(g, self.libvirt.domain_info(g.uuid))

    def _guest(self, g: GuestSample, info: DomainInfo | None) -> Iterator[Check]:
        if g.accel == "tcg":
            yield Check(
                f"guest.accel:{g.name}", WARN, f"{g.name}: accelerator",
                "runs under QEMU TCG emulation (domain type='qemu'): no KVM counters "
                "(exits, halt polling) for it",
                "use <domain type='kvm'> where /dev/kvm with VT-x/AMD-V is available",
            )
        elif g.accel == "kvm" and not any("exits.sum" in v.kvm for v in g.vcpus):
            yield Check(
                f"guest.kvm_stats:{g.name}", WARN, f"{g.name}: KVM statistics",
                "no KVM binary stats (vcpu.N.exits.sum) from libvirt for this KVM guest",
                f"libvirt >= {_dotted(LIBVIRT_VM_GROUP)} with QEMU >= "
                f"{_dotted(QEMU_QUERY_STATS)}; otherwise debugfs (root, no lockdown)",
            )
        yield self._balloon(g, info)

    def _balloon(self, g: GuestSample, info: DomainInfo | None) -> Check:
        cid, title = f"guest.balloon:{g.name}", f"{g.name}: balloon stats"
        period_fix = (f"virsh dommemstat {g.name} --period {BALLOON_PERIOD_HINT_S} --live "
                      f"--config (XML: <memballoon model='virtio'><stats "
                      f"period='{BALLOON_PERIOD_HINT_S}'/></memballoon>)")
        if info is not None and info.memballoon_model == "none":
            return Check(
                cid, WARN, title,
                "no balloon device (<memballoon model='none'/>): guest memory used/"
                "available and leak detection unavailable",
                f"virsh edit {g.name}: <memballoon model='virtio'><stats "
                f"period='{BALLOON_PERIOD_HINT_S}'/></memballoon>, then restart the guest",
            )
        last = g.balloon.last_update_s if g.balloon is not None else None
        period = info.balloon_period_s if info is not None else None
        age = self.env.now() - last if last else None
        if not last:
            why = ("stats period unset: the guest's memory stats are never refreshed"
                   if not period else
                   f"stats period {period} s but the guest never reported (virtio_balloon "
                   "driver not loaded in the guest?)")
            return Check(cid, WARN, title, why, period_fix if not period else
                         "load virtio_balloon in the guest")
        # A live period refreshes last-update every `period` seconds; allow for
        # a slow guest and for libvirt's own balloon cadence.
        if age is not None and age > max(3 * (period or BALLOON_PERIOD_HINT_S), 30):
            return Check(
                cid, WARN, title,
                f"balloon.last-update not advancing: last report {age:.0f} s ago"
                + (f" with period {period} s" if period else ", period unset"),
                period_fix,
            )
        return Check(cid, OK, title, f"live (period {period or '?'} s, last report "
                     f"{age:.0f} s ago)" if age is not None else "live")

    # ------------------------------------------------------------------ KVM sources

    def _debugfs(self) -> Check:
        probe = self.debugfs.probe()
        title = "KVM debugfs"
        if probe.reason == LOCKDOWN_REASON:
            mode = _read(self.env.root, "sys/kernel/security/lockdown")
            shown = f" (lockdown: {selected_word(mode) or mode})" if mode else ""
            refused = probe.detail.get("refused", "").split(", ")
            # The counters kvmtop would use first, then how many more.
            key = [n for n in ("exits", "halt_exits", "io_exits", "mmio_exits") if n in refused]
            return Check(
                "debugfs", WARN, title,
                f"kernel lockdown{shown}: {len(refused)} cumulative KVM counters refused "
                f"with EPERM ({', '.join(key or refused[:4])}, ...); gauges still read "
                f"({probe.detail.get('readable', 'none')})",
                "lockdown cannot be lifted at run time (boot without Secure Boot / "
                "lockdown= or use libvirt >= 8.9 with QEMU >= 7.1: KVM binary stats are "
                "not subject to lockdown)",
            )
        if not probe.available:
            fix = None
            if "not mounted" in (probe.reason or ""):
                fix = ("mount -t debugfs none /sys/kernel/debug (kvmtop mounts it itself "
                       "when run as root)")
            elif "module not loaded" in (probe.reason or ""):
                fix = "modprobe kvm_intel or kvm_amd"
            return Check("debugfs", WARN, title, probe.reason or "unavailable", fix)
        return Check("debugfs", OK, title,
                     f"cumulative counters readable ({probe.detail.get('path', '')})")

    def _tracefs(self) -> Check:
        probe = self.trace_probe = self.tracepoints.probe()
        title = "KVM tracepoints (exit reasons)"
        if probe.available:
            return Check(
                "tracepoints", OK, title,
                f"{probe.detail.get('counters_per_vcpu', '?')} counters per vCPU, ISA "
                f"{probe.detail.get('isa', '?')}, tracefs {probe.detail.get('tracefs', '?')}",
            )
        reason = probe.reason or "unavailable"
        fix = None
        if "tracefs not mounted" in reason:
            fix = "mount -t tracefs none /sys/kernel/tracing (kvmtop mounts it as root)"
        elif "module not loaded" in reason:
            fix = "modprobe kvm_intel or kvm_amd"
        return Check("tracepoints", WARN, title, reason, fix)

    def _paranoid(self) -> Check:
        raw = _read(self.env.root, "proc/sys/kernel/perf_event_paranoid")
        title = "perf_event_paranoid"
        if raw is None or not raw.lstrip("-").isdigit():
            return Check("perf_event_paranoid", SKIP, title,
                         "/proc/sys/kernel/perf_event_paranoid absent (no CONFIG_PERF_EVENTS?)")
        value = int(raw)
        # kernel/events/core.c perf_allow_tracepoint(): unprivileged tracepoint events
        # need paranoid <= -1; CAP_PERFMON (Linux 5.8) or CAP_SYS_ADMIN bypass it.
        if self.env.euid == 0:
            return Check("perf_event_paranoid", OK, title,
                         f"{value} (root bypasses it with CAP_PERFMON/CAP_SYS_ADMIN)")
        if value > -1:
            return Check(
                "perf_event_paranoid", WARN, title,
                f"{value}: unprivileged processes cannot count KVM tracepoints",
                "run as root or with CAP_PERFMON, or sysctl kernel.perf_event_paranoid=-1",
            )
        return Check("perf_event_paranoid", OK, title, f"{value}: tracepoints allowed")

    def _kvm_exit(self) -> Check:
        """Count kvm:kvm_exit on one running KVM guest against KVM's own exit count."""
        title = "kvm:kvm_exit tracepoint"
        cid = "kvm_exit"
        kvm = [g for g in self.guests if g.state == "running" and g.accel == "kvm"
               and any(v.tid for v in g.vcpus)]
        if self.trace_probe is None or not self.trace_probe.available:
            return Check(cid, SKIP, title, "not measured: tracepoints unavailable")
        if not kvm or self.env.measure_s <= 0:
            return Check(cid, SKIP, title, "not measured: no running KVM guest with "
                         "known vCPU threads")
        failures = []
        for guest in kvm:  # the next one when a guest goes away meanwhile
            try:
                before, after = self._count_exits(guest)
                break
            except CollectorError as exc:
                failures.append(f"{guest.name}: {exc}")
        else:
            return Check(cid, SKIP, title, f"not measured ({'; '.join(failures)})")
        traced, exits = (_delta(before, after, "trace"), _delta(before, after, "exits"))
        silent = kvm_exit_silent(traced, exits)
        if silent is None:
            return Check(cid, SKIP, title, f"not measured on {guest.name}: KVM's own exit "
                         "counter is unknown (no binary stats, debugfs refused)")
        if silent:
            return Check(
                cid, WARN, title,
                f"silent: 0 events on {guest.name} in {self.env.measure_s:g} s while KVM "
                f"counted {exits:.0f} exits (PVM or another exit path that bypasses "
                "VMX/SVM): exits split by category from binary stats and kvm_pio / "
                "kvm_userspace_exit, not by hardware reason",
                "none on this host: a property of the hypervisor module "
                f"({', '.join(_kvm_modules(self.env.root)) or 'kvm'})",
            )
        return Check(cid, OK, title,
                     f"{traced:.0f} events on {guest.name} in {self.env.measure_s:g} s")

    def _count_exits(self, guest: GuestSample) -> tuple[dict[str, float], dict[str, float]]:
        """Exits by tracepoint and by KVM's counter, before and after `measure_s`."""
        self.tracepoints.attach(guest.uuid, [v.tid for v in guest.vcpus if v.tid])
        try:
            first = self._exit_counts(guest.uuid, 0)
            time.sleep(self.env.measure_s)
            second = self._exit_counts(guest.uuid, 1)
        finally:
            self.tracepoints.detach(guest.uuid)
        return first, second

    def _exit_counts(self, uuid: str, tick: int) -> dict[str, float]:
        guests = self.sched.enrich(self.libvirt.collect(tick))
        g = next((g for g in guests if g.uuid == uuid), None)
        if g is None:
            raise CollectorError("the guest went away")
        traced = self.tracepoints.enrich([g])[0]
        out: dict[str, float] = {}
        total = traced.exit_reasons.get("kvm_exit:total")
        if total is not None:
            out["trace"] = total
        sums = [v.kvm.get("exits.sum") for v in g.vcpus]
        known = [s for s in sums if s is not None]
        if known:
            out["exits"] = sum(known)
        elif "exits" in g.debugfs:
            out["exits"] = g.debugfs["exits"]
        return out

    # ------------------------------------------------------------------ advice

    def _advice(self) -> Iterator[Check]:
        host = self.host_sample
        running = [g for g in self.guests if g.state == "running"]
        s = self.env.overcommit
        if host is not None and host.ncpu and running:
            vcpus = sum(g.vcpus_current or 0 for g in running)
            ratio = vcpus / host.ncpu
            detail = f"{vcpus} vCPUs of {len(running)} running guests on {host.ncpu} CPUs"
            if ratio > s.vcpu_ratio:
                yield Check(
                    "advice.vcpu_ratio", WARN, "vCPU:pCPU",
                    f"{ratio:.1f} ({detail}) > {s.vcpu_ratio:g}: busy guests will steal "
                    "from each other",
                    "reduce vCPUs (virsh setvcpus NAME N --config), move guests to "
                    "another host, or raise [detectors.overcommit] vcpu_ratio if "
                    "intended",
                )
            else:
                yield Check("advice.vcpu_ratio", OK, "vCPU:pCPU", f"{ratio:.1f} ({detail})")
        yield from self._memory_reserve(host, running, s)
        if host is not None:
            yield self._thp(host)
            yield from self._io_schedulers(host, running)
        yield self._halt_poll(host, running)

    def _memory_reserve(
        self, host: HostSample | None, running: Sequence[GuestSample], s: OvercommitSettings
    ) -> Iterator[Check]:
        if host is None or not host.mem_total_bytes or not running:
            return
        sizes = []
        for g in running:
            info = self.libvirt.domain_info(g.uuid)
            size = info.max_memory_bytes if info is not None else None
            if size is None and g.balloon is not None:
                size = g.balloon.maximum_bytes
            sizes.append(size or 0)
        total = host.mem_total_bytes
        reserve = 100.0 * (total - sum(sizes)) / total
        detail = (f"{reserve:.0f}% of {total / 2**30:.1f} GiB left after the guests' "
                  f"maximum memory ({sum(sizes) / 2**30:.1f} GiB)")
        if reserve < s.mem_reserve_pct:
            yield Check(
                "advice.memory_reserve", WARN, "host memory reserve",
                f"{detail} < {s.mem_reserve_pct:g}%: guests can push the host into reclaim",
                "lower guests' maximum memory (virsh setmaxmem NAME SIZE --config), move "
                "guests, or add RAM",
            )
        else:
            yield Check("advice.memory_reserve", OK, "host memory reserve", detail)

    def _thp(self, host: HostSample) -> Check:
        path = "/sys/kernel/mm/transparent_hugepage/enabled"
        mode = host.thp_enabled
        if mode is None:
            return Check("advice.thp", SKIP, "transparent huge pages",
                         f"{path} absent (kernel without THP)")
        if mode == "never":
            return Check(
                "advice.thp", WARN, "transparent huge pages",
                "never: guest RAM on 4 KiB pages (more TLB misses and page walks)",
                f"echo madvise > {path} (QEMU madvises guest RAM; persist with "
                "transparent_hugepage=madvise on the kernel command line)",
            )
        return Check("advice.thp", OK, "transparent huge pages", mode)

    def _io_schedulers(
        self, host: HostSample, running: Sequence[GuestSample]
    ) -> Iterator[Check]:
        """The I/O scheduler of every host disk under a running guest's disk."""
        blocks = BlockTopology(self.env.root, self.env.stat)
        users: dict[str, list[str]] = {}
        for g in running:
            info = self.libvirt.domain_info(g.uuid)
            for d in info.disks if info is not None else ():
                disk, _why = blocks.resolve(d.source)  # network storage: no host disk
                if disk is not None:
                    users.setdefault(disk, []).append(f"{g.name}:{d.target}")
        devices = {b.name: b for b in host.blockdevs}
        for name, on in sorted(users.items()):
            yield self._scheduler(name, devices.get(name), on)

    @staticmethod
    def _scheduler(name: str, dev: BlockDevSample | None, users: list[str]) -> Check:
        cid, title = f"advice.io_scheduler:{name}", f"I/O scheduler of {name}"
        shown = ", ".join(users[:4]) + (f" (+{len(users) - 4})" if len(users) > 4 else "")
        if dev is None or dev.scheduler is None:
            return Check(cid, SKIP, title, f"scheduler of {name} unknown (backs {shown})")
        kind = {True: "rotational", False: "non-rotational", None: "unknown"}[dev.rotational]
        detail = f"{dev.scheduler} on {kind} {name} (backs {shown})"
        # block/Kconfig.iosched: mq-deadline suits seeking disks, bfq trades CPU per
        # request for fairness, which flash rarely needs.
        if dev.rotational is True and dev.scheduler == "none":
            better, why = "mq-deadline", ": no request sorting or merging for a seeking disk"
        elif dev.rotational is False and dev.scheduler == "bfq":
            better, why = "none", ": bfq costs CPU per request that flash does not need"
        else:
            return Check(cid, OK, title, detail)
        queue = f"/sys/block/{name.replace('/', '!')}/queue/scheduler"
        return Check(
            cid, WARN, title, detail + why,
            f"echo {better} > {queue} (persist with a udev rule: ACTION==\"add|change\", "
            f'KERNEL=="{name}", ATTR{{queue/scheduler}}="{better}")',
        )

    def _halt_poll(self, host: HostSample | None, running: Sequence[GuestSample]) -> Check:
        path = "sys/module/kvm/parameters/halt_poll_ns"
        raw = _read(self.env.root, path)
        title = "halt polling"
        if raw is None or not raw.isdigit():
            return Check("advice.halt_poll", SKIP, title, f"/{path} absent (kvm not loaded)")
        poll_ns = int(raw)
        fix = (f"echo 0 > /{path} (persist: options kvm halt_poll_ns=0 in "
               "/etc/modprobe.d/kvm.conf)")
        vcpus = sum(g.vcpus_current or 0 for g in running)
        ncpu = host.ncpu if host is not None else 0
        if poll_ns and ncpu and vcpus / ncpu > self.env.overcommit.vcpu_ratio:
            return Check(
                "advice.halt_poll", WARN, title,
                f"halt_poll_ns={poll_ns} on an overcommitted host ({vcpus} vCPUs on {ncpu} "
                "CPUs): polling burns CPU that other vCPUs are waiting for",
                fix,
            )
        # Since boot: time polled in vain vs polled with success (KVM binary stats).
        fail = sum(v.kvm.get("halt_poll_fail_ns.sum", 0) for g in running for v in g.vcpus)
        success = sum(v.kvm.get("halt_poll_success_ns.sum", 0) for g in running for v in g.vcpus)
        if poll_ns and fail > success and fail > 1_000_000_000:
            return Check(
                "advice.halt_poll", WARN, title,
                f"halt_poll_ns={poll_ns}: polling mostly fails ({fail / 1e9:.1f} s in vain "
                f"vs {success / 1e9:.1f} s useful since the guests started)",
                f"echo {poll_ns // 2} > /{path}, or load cpuidle-haltpoll in the guests",
            )
        return Check("advice.halt_poll", OK, title, f"halt_poll_ns={poll_ns}")


def _delta(before: dict[str, float], after: dict[str, float], key: str) -> float | None:
    if key not in before or key not in after or after[key] < before[key]:
        return None
    return after[key] - before[key]


def _kvm_modules(root: Path) -> list[str]:
    try:
        return sorted(p.name for p in (root / "sys/module").iterdir()
                      if p.name.startswith("kvm_"))
    except OSError:
        return []


# --------------------------------------------------------------------------- output

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop doctor` (the global -c/--config come from the CLI)."""
    parser.description = (
        "Check every data source kvmtop uses on this host and say exactly why one does "
        "not work, then give host configuration advice (vCPU:pCPU, memory reserve, THP, "
        "I/O schedulers, halt polling), each with the setting to change."
    )
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="output format (default text)")
    parser.add_argument("--measure", type=float, default=1.0, metavar="S",
                        help="seconds to count kvm:kvm_exit on a KVM guest (0: skip)")


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """`kvmtop doctor`: write the report to `out` (None: standard output); return the
    exit status."""
    env = Environment(
        uri=settings.uri,
        # The CLI's global -c/--connect (dest "connect"): explicit URIs are required.
        uri_explicit=getattr(args, "connect", None) is not None,
        measure_s=args.measure,
        overcommit=settings.detectors.overcommit,
    )
    checks = diagnose(env)
    (render_json if args.format == "json" else render_text)(
        checks, sys.stdout if out is None else out)
    return exit_status(checks)
