"""A VM's cgroups and their CFS bandwidth counters (CPU quota throttling).

Layer: collectors (I/O only). `VmThrottling` gives each running VM the sums of
`nr_periods`, `nr_throttled` and the throttled time over the cpu.stat files of its
cgroup and the groups below it (see `CgroupLocator`); the topology enricher fills
`GuestSample.cpu_nr_periods`, `cpu_nr_throttled` and `cpu_throttled_ns` from them.

Never imports textual.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kvmtop.collectors.base import turn
from kvmtop.collectors.host import read_text
from kvmtop.collectors.mountinfo import Mount, parse_mountinfo
from kvmtop.model.units import NS_PER_US

# How deep below the VM's cgroup to look for cpu.stat files: libvirt's own layout is
# <vm>/{emulator,vcpuN,iothreadN} (1 level), under systemd <scope>/libvirt/... (2).
_CGROUP_DEPTH = 2

QUIET_EVERY = 15
"""Ticks between two reads of a cpu.stat that showed no CFS bandwidth period yet
(`nr_periods` 0, or no bandwidth counters at all): its group has never run under a
quota, so its counters have not moved, and on a host without quotas (the usual case)
that is every group. A quota set later shows within this many ticks; its first
periods then count at once, and `nr_throttled` with them, so their ratio (the share
of throttled periods the steal detector reads) stays true, over a longer span. A
group with periods is read every tick."""

Bandwidth = tuple[int, int, int]
"""(nr_periods, nr_throttled, throttled ns) of one cpu.stat."""


def parse_proc_cgroup(text: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Parse /proc/PID/cgroup (cgroups(7)): (hierarchy id, controllers, path) per line.

    cgroup v2 is the line "0::PATH" (no controllers); a v1 hierarchy lists its
    controllers ("cpu,cpuacct") or its name ("name=systemd").
    """
    out = []
    for line in text.splitlines():
        hid, sep1, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if sep1 and sep2:
            out.append((hid, tuple(c for c in controllers.split(",") if c), path))
    return out


def parse_cpu_stat(text: str) -> dict[str, int]:
    """Parse a cgroup `cpu.stat` ("key value" lines) into integers.

    Non-numeric lines are skipped (the file gains keys over time: nr_bursts,
    burst_usec, core_sched.force_idle_usec).
    """
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def vm_cgroup_dir(path: str) -> tuple[str, bool]:
    """The cgroup of the whole VM, from the cgroup path of the QEMU main thread.

    libvirt moves the main thread into an `emulator` child of the VM's cgroup
    (src/qemu/qemu_cgroup.c, qemuSetupCgroupForEmulator) next to `vcpuN` and
    `iothreadN`. With systemd the VM's cgroup is a machine scope
    (`machine.slice/machine-qemu\\x2d<id>\\x2d<name>.scope`) and, since libvirt 6.10,
    those children sit in a `libvirt` sub-cgroup of it; without systemd (this
    project's machines) it is `machine/qemu-<id>-<name>.libvirt-qemu`.

    Returns:
        (directory, libvirt layout): the VM directory with `/emulator` and a
        trailing `/libvirt` removed, True; or `path` itself, False, when the
        process is not in an `emulator` cgroup (not started by libvirt).
    """
    head, _, leaf = path.rstrip("/").rpartition("/")
    if leaf != "emulator":
        return path, False
    parent, _, last = head.rpartition("/")
    return (parent if last == "libvirt" else head) or "/", True


@dataclass(slots=True)
class _Cgroup:
    """The cpu.stat files of one VM, found for one (pid, vCPU count), with what each
    last read gave (None: no bandwidth counters)."""

    pid: int
    vcpus: int | None
    files: tuple[str, ...]
    """The VM directory's cpu.stat first, then its descendants'."""
    last: dict[str, Bandwidth | None] = field(default_factory=dict)


class CgroupLocator:
    """Finds the cgroup holding the CPU controller and a VM's directories in it.

    The CPU controller is in a cgroup v1 hierarchy when a /proc/PID/cgroup line
    lists "cpu" (this project's machines: no systemd, `cpu` mounted at
    /sys/fs/cgroup/cpu, the unified hierarchy at /sys/fs/cgroup/unified without
    controllers), else in cgroup v2 ("0::" line). Mount points come from
    /proc/self/mountinfo, so any layout works; a mount whose root is not "/" (a
    cgroup namespace or bind mount) has that prefix removed from the path.

    cpu.stat keys: v1 `nr_periods`, `nr_throttled`, `throttled_time` (ns)
    (Documentation/scheduler/sched-bwc.rst); v2 the same counts and
    `throttled_usec` (Documentation/admin-guide/cgroup-v2.rst). They move only in a
    group with a quota; libvirt sets `<cputune><quota>` on each `vcpuN`,
    `<emulator_quota>` on `emulator`, `<global_quota>` on the VM's own group, and a
    group's counters do not include its children's. So the VM's figures are the
    sums over its group and every group below it: periods and throttled periods of
    every quota-limited group of the VM, and the run time they lost.
    """

    def __init__(self, root: Path):
        """Create the locator for the tree under `root`."""
        self._base = str(root).rstrip("/")
        self._mounts: list[Mount] | None = None

    def mounts(self) -> list[Mount]:
        """The cgroup and cgroup2 mounts of /proc/self/mountinfo (read once)."""
        if self._mounts is None:
            try:
                text = read_text(f"{self._base}/proc/self/mountinfo")
            except OSError:
                text = ""
            self._mounts = [m for m in parse_mountinfo(text) if m.fstype in ("cgroup", "cgroup2")]
        return self._mounts

    def describe(self) -> str | None:
        """Where the CPU controller is, e.g. "cgroup v1 at /sys/fs/cgroup/cpu"."""
        for m in self.mounts():
            if m.fstype == "cgroup" and "cpu" in m.options:
                return f"cgroup v1 at {m.mountpoint}"
        for m in self.mounts():
            if m.fstype == "cgroup2":
                return f"cgroup v2 at {m.mountpoint}"
        return None

    def cpu_dir(self, proc_cgroup: str) -> tuple[str, bool] | None:
        """The host directory of the VM cgroup for a /proc/PID/cgroup text.

        Returns:
            (absolute directory under root, libvirt layout) or None when no mounted
            hierarchy matches.
        """
        lines = parse_proc_cgroup(proc_cgroup)
        v1 = next((path for _, ctl, path in lines if "cpu" in ctl), None)
        if v1 is not None:
            mounts = [m for m in self.mounts() if m.fstype == "cgroup" and "cpu" in m.options]
            path = v1
        else:
            path2 = next((path for hid, ctl, path in lines if hid == "0" and not ctl), None)
            if path2 is None:
                return None
            mounts = [m for m in self.mounts() if m.fstype == "cgroup2"]
            path = path2
        directory, libvirt = vm_cgroup_dir(path)
        for m in mounts:
            prefix = m.root.rstrip("/")
            if directory == prefix or directory.startswith(prefix + "/"):
                rel = directory[len(prefix) :].strip("/")
                return f"{self._base}{m.mountpoint.rstrip('/')}/{rel}".rstrip("/"), libvirt
        return None


def _cpu_stat_files(directory: str, descend: bool) -> tuple[str, ...]:
    """cpu.stat of `directory` and, when `descend`, of its groups down to
    `_CGROUP_DEPTH` levels (only those that have the file)."""
    files = [f"{directory}/cpu.stat"]
    if descend:
        level = [directory]
        for _ in range(_CGROUP_DEPTH):
            below: list[str] = []
            for d in level:
                try:
                    entries = os.scandir(d)
                except OSError:
                    continue
                with entries:
                    below.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
            files.extend(f"{d}/cpu.stat" for d in below if os.path.exists(f"{d}/cpu.stat"))
            level = below
    return tuple(files)


def _bandwidth(values: dict[str, int]) -> Bandwidth | None:
    """The bandwidth counters of a parsed cpu.stat; None without them (cgroup v2
    without the cpu controller enabled: only `usage_usec` and its kin)."""
    if "nr_periods" not in values:
        return None
    return (
        values["nr_periods"],
        values.get("nr_throttled", 0),
        values.get("throttled_time", values.get("throttled_usec", 0) * NS_PER_US),
    )


class VmThrottling:
    """The CFS bandwidth counters of each VM, summed over its cgroups, tick after tick.

    The cgroups are found once per (uuid, pid, vCPU count). Each tick reads the
    cpu.stat of every group that has seen a bandwidth period, and the others once per
    `QUIET_EVERY` ticks (what they showed last counts in between).
    """

    def __init__(self, root: Path):
        """Create the reader for the tree under `root`."""
        self._base = str(root).rstrip("/")
        self.locator = CgroupLocator(root)
        self._vms: dict[str, _Cgroup | None] = {}
        self._tick = 0

    def tick(self, live: set[str]) -> None:
        """Move on to the next tick, forgetting the VMs not in `live` (UUIDs)."""
        self._tick += 1
        for uuid in self._vms.keys() - live:
            del self._vms[uuid]

    def counters(
        self, uuid: str, name: str, pid: int, vcpus: int | None, gaps: list[str]
    ) -> tuple[int | None, int | None, int | None]:
        """Σ (nr_periods, nr_throttled, throttled ns) over the VM's cgroups (see
        `CgroupLocator`); None each, with the reason in `gaps`, when unknown."""
        vm = self._vms.get(uuid)
        if vm is None or vm.pid != pid or vm.vcpus != vcpus:
            vm = self._vms[uuid] = self._locate(pid, vcpus)
        if vm is None:
            gaps.append(f"{name}: no cgroup with the CPU controller; throttling unknown")
            return None, None, None
        quiet_due = turn(self._tick, pid, QUIET_EVERY)
        periods = throttled = throttled_ns = 0
        seen = False
        for path in vm.files:
            last = vm.last.get(path)
            if path not in vm.last or quiet_due or (last is not None and last[0]):
                try:
                    last = vm.last[path] = _bandwidth(parse_cpu_stat(read_text(path)))
                except OSError:
                    if path == vm.files[0]:  # the VM's cgroup is gone: find it again
                        del self._vms[uuid]
                        return None, None, None
                    continue  # a vCPU group removed (unplug): rescanned on the count change
            if last is None:
                continue
            seen = True
            periods += last[0]
            throttled += last[1]
            throttled_ns += last[2]
        if not seen:
            gaps.append(f"{name}: cpu.stat without CFS bandwidth counters")
            return None, None, None
        return periods, throttled, throttled_ns

    def _locate(self, pid: int, vcpus: int | None) -> _Cgroup | None:
        try:
            text = read_text(f"{self._base}/proc/{pid}/cgroup")
        except OSError:
            return None
        found = self.locator.cpu_dir(text)
        if found is None:
            return None
        directory, libvirt = found
        return _Cgroup(pid, vcpus, _cpu_stat_files(directory, libvirt))
