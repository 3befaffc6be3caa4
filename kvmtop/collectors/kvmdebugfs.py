"""KVM's debugfs statistics per VM: `/sys/kernel/debug/kvm/<pid>-<fd>/<stat>`.

Layer: collectors (I/O only). Never imports textual.

virt/kvm/kvm_main.c (kvm_create_vm_debugfs) makes one directory per VM, named
"<creator pid>-<vm fd>", with one file per VM stat and per vCPU stat; a vCPU stat
file sums over the VM's vCPUs. `vcpuN/` subdirectories hold arch items, among them
`pid` (the vCPU thread id, mode 0444).

File modes follow the stat type (kvm_stats_debugfs_mode): instant stats are 0444,
cumulative and peak stats 0644. Under kernel lockdown, debugfs refuses every file
that is writable (fs/debugfs/file.c debugfs_locked_down → EPERM), so the counters
that matter (`exits`, `halt_exits`, ...) fail while gauges (`blocking`, `pages_4k`)
still read. Each file's outcome is recorded, and the probe says what is readable.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from msgspec.structs import replace

from kvmtop.collectors.base import Probe
from kvmtop.collectors.host import read_text
from kvmtop.model.sample import GuestSample, VcpuSample

Reader = Callable[[str], str]
"""Reads one file's text; raises OSError like `open` (injectable for tests)."""

RELIST_EVERY = 30
"""Ticks a VM directory's listing and its vCPU thread ids are kept before they are
read again (`_Layout`)."""

LOCKDOWN_REASON = (
    "debugfs: cumulative KVM counters refused (kernel lockdown); using libvirt binary stats instead"
)


def mount_pseudo_fs(fstype: str, target: Path) -> str | None:
    """Mount a kernel pseudo filesystem (debugfs, tracefs) on `target` via mount(2).

    Returns:
        None on success, else a human reason (e.g. "EPERM: not permitted").
    """
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(fstype.encode(), os.fsencode(target), fstype.encode(), 0, None)
    if rc == 0:
        return None
    err = ctypes.get_errno()
    return f"mount -t {fstype} {target}: {errno.errorcode.get(err, str(err))}: {os.strerror(err)}"


def _is_stat_file(name: str) -> bool:
    """Whether a VM directory entry is a scalar stat worth reading.

    Histogram stats (`*_hist`, Linux 5.15) get a debugfs file too, but it returns
    only bucket 0 (kvm_main.c kvm_get_stat_per_vm reads one u64), so they are left
    out; `vcpuN` directories are arch items, not stats.
    """
    return not name.endswith("_hist") and not name.startswith("vcpu")


@dataclass(slots=True)
class _Layout:
    """What one VM directory holds, listed once and kept: its files do not change
    while the VM lives, but for a `vcpuN/` per vCPU added. It is listed again when
    the guest's vCPU count changes and every `RELIST_EVERY` ticks."""

    vcpus: tuple[int | None, int]
    """The guest's (`vcpus_current`, number of `vcpus`) it was listed for."""
    listed: int
    """The tick it was listed at."""
    stats: list[str]
    """Its stat files, sorted."""
    entries: list[str]
    """Everything in it (the `vcpuN` directories among them)."""
    vcpu_dirs: int
    """How many `vcpuN` directories it holds."""
    tids: dict[int, int] = field(default_factory=dict)
    """vCPU index → thread id, once each vCPU ran (`vcpuN/pid` is 0 before)."""


def _vcpu_index(name: str) -> int | None:
    """N of a `vcpuN` entry of a VM directory, else None."""
    index = name.removeprefix("vcpu")
    return int(index) if index != name and index.isdigit() else None


class DebugfsCollector:
    """Fills GuestSample.debugfs with the readable KVM stat files of each guest's VM.

    Args:
        root: directory holding `sys/` (a fake tree in tests).
        mount: mount debugfs on `sys/kernel/debug` when it is not mounted (only
            ever attempted when `root` is "/"); defaults to True when running as root.
        reader: reads one file (tests inject EPERM this way, since root ignores
            file modes).
    """

    name = "debugfs"

    def __init__(
        self, root: Path = Path("/"), *, mount: bool | None = None, reader: Reader = read_text
    ) -> None:
        self._root = root
        self._debug = root / "sys" / "kernel" / "debug"
        self._kvm = self._debug / "kvm"
        # The per-tick walk joins and sorts plain strings: a pathlib join or
        # comparison costs microseconds, hundreds of times a tick
        # (bench/results/measurements.md#procfs-reads).
        self._kvm_dir = str(self._kvm)
        self._mount = (os.geteuid() == 0) if mount is None else mount
        self._read = reader
        self.file_status: dict[str, str] = {}
        """Per stat name, the outcome of the last read: "ok", "EPERM", "unparsable", ..."""
        self._refused: set[str] = set()
        self._layouts: dict[str, _Layout] = {}
        self._tick = 0

    def paths_read(self) -> list[str]:
        """Glob patterns (relative to root) of every file this collector reads."""
        return [
            "sys/kernel/debug/kvm/*",
            "sys/kernel/debug/kvm/[0-9]*-*/*",
            "sys/kernel/debug/kvm/[0-9]*-*/vcpu[0-9]*/pid",
        ]

    def probe(self) -> Probe:
        """Mount debugfs if needed and allowed, then classify the top-level KVM stats.

        The top-level `kvm/<stat>` files (sums over all VMs) have the same modes as
        the per-VM ones, so they show whether lockdown refuses the cumulative stats
        even when no VM runs.
        """
        try:
            reason = None if self._kvm.is_dir() else self._try_mount()
        except PermissionError as e:  # fs/debugfs/inode.c: DEBUGFS_DEFAULT_MODE 0700
            reason = f"{e.filename}: permission denied (debugfs needs root)"
        if reason is not None:
            return Probe(self.name, False, reason)
        self._refused.clear()
        self.file_status.clear()
        try:
            names = sorted(p.name for p in self._kvm.iterdir() if p.is_file())
        except OSError as e:
            return Probe(self.name, False, f"{self._kvm}: {e.strerror}")
        self._read_dir(self._kvm_dir, [n for n in names if _is_stat_file(n)])
        return self._verdict()

    def _try_mount(self) -> str | None:
        """Mount debugfs when it is not mounted and that is allowed.

        Returns:
            None once `kvm/` is present, else why it is not.
        """
        mounted = self._debug.is_dir() and any(self._debug.iterdir())
        if not mounted:
            if not (self._mount and self._root == Path("/")):
                return f"debugfs not mounted on {self._debug} (mount -t debugfs none {self._debug})"
            failure = mount_pseudo_fs("debugfs", self._debug)
            if failure is not None:
                return f"debugfs not mounted; {failure}"
        if not self._kvm.is_dir():
            return f"{self._kvm} absent (kvm module not loaded)"
        return None

    def _verdict(self) -> Probe:
        ok = sorted(n for n, s in self.file_status.items() if s == "ok")
        refused = sorted(n for n, s in self.file_status.items() if s == "EPERM")
        detail = {"path": str(self._kvm), "readable": ", ".join(ok) or "none"}
        if refused:
            detail["refused"] = ", ".join(refused)
            return Probe(self.name, bool(ok), LOCKDOWN_REASON, detail)
        return Probe(self.name, True, None, detail)

    def _read_dir(self, directory: str, names: Sequence[str]) -> dict[str, int]:
        """Read the stat files `names` of `directory`, recording each outcome."""
        values: dict[str, int] = {}
        for name in names:
            if name in self._refused:
                continue
            try:
                text = self._read(f"{directory}/{name}")
            except PermissionError as e:
                # Lockdown cannot be lifted without a reboot (security/lockdown),
                # so a refused stat is not asked for again until the next probe.
                if e.errno == errno.EPERM:
                    self._refused.add(name)
                self.file_status[name] = errno.errorcode.get(e.errno or 0, "EACCES")
                continue
            except OSError as e:
                self.file_status[name] = errno.errorcode.get(e.errno or 0, str(e.errno))
                continue
            try:
                values[name] = int(text.strip())
            except ValueError:
                self.file_status[name] = "unparsable"
                continue
            self.file_status[name] = "ok"
        return values

    def vm_dirs_by_pid(self) -> dict[int, list[str]] | None:
        """Every VM directory ("<pid>-<fd>", its path) grouped by the pid that created
        it, in name order; None when the KVM debugfs directory cannot be listed (not
        mounted, KVM not loaded, no permission)."""
        out: dict[int, list[str]] = {}
        try:
            names = sorted(os.listdir(self._kvm_dir))
        except OSError:
            return None
        for name in names:
            pid, dash, fd = name.partition("-")
            if dash and pid.isdigit() and fd.isdigit():
                out.setdefault(int(pid), []).append(f"{self._kvm_dir}/{name}")
        return out

    def vcpu_tids(self, vm_dir: str, names: Sequence[str] | None = None) -> dict[int, int]:
        """vCPU index → thread id from `vcpuN/pid` (0444, readable under lockdown).

        `names`: the directory's entries when the caller listed it already.
        """
        out: dict[int, int] = {}
        if names is None:
            try:
                names = os.listdir(vm_dir)
            except OSError:
                return out
        for name in names:
            index = _vcpu_index(name)
            if index is None:
                continue
            try:
                tid = int(self._read(f"{vm_dir}/{name}/pid").strip())
            except (OSError, ValueError):
                continue
            if tid > 0:  # 0 until the vCPU first ran (kvm_vcpu_debugfs pid file)
                out[index] = tid
        return out

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        """Return `guests` with `debugfs` filled and vCPU thread ids completed.

        Guests without a pid, or whose process has no KVM VM (TCG), are unchanged.
        A process with several VMs gets the sum of their stats.
        """
        self._tick += 1
        by_pid = self.vm_dirs_by_pid() or {}
        out = tuple(
            self._enrich(g, by_pid[g.pid]) if g.pid is not None and g.pid in by_pid else g
            for g in guests
        )
        if len(self._layouts) > sum(map(len, by_pid.values())):
            listed = {d for dirs in by_pid.values() for d in dirs}
            for gone in self._layouts.keys() - listed:
                del self._layouts[gone]
        return out

    def _layout(self, vm_dir: str, guest: GuestSample) -> _Layout | None:
        """The VM directory's kept listing, listed again when due (see `_Layout`);
        None when it cannot be listed (the VM went away)."""
        vcpus = (guest.vcpus_current, len(guest.vcpus))
        layout = self._layouts.get(vm_dir)
        if layout is None or layout.vcpus != vcpus or self._tick - layout.listed >= RELIST_EVERY:
            try:
                entries = os.listdir(vm_dir)
            except OSError:
                self._layouts.pop(vm_dir, None)
                return None
            stats = sorted(n for n in entries if _is_stat_file(n))
            vcpu_dirs = sum(1 for n in entries if _vcpu_index(n) is not None)
            layout = self._layouts[vm_dir] = _Layout(vcpus, self._tick, stats, entries, vcpu_dirs)
        if len(layout.tids) < layout.vcpu_dirs:  # a vCPU that has not run yet, or new
            layout.tids = self.vcpu_tids(vm_dir, layout.entries)
        return layout

    def _enrich(self, guest: GuestSample, dirs: Sequence[str]) -> GuestSample:
        totals: dict[str, int] = {}
        tids: dict[int, int] = {}
        for vm_dir in dirs:
            layout = self._layout(vm_dir, guest)
            if layout is None:
                continue  # the VM went away between listing and reading
            for name, value in self._read_dir(vm_dir, layout.stats).items():
                totals[name] = totals.get(name, 0) + value
            tids.update(layout.tids)
        vcpus = [
            v if v.tid is not None or v.index not in tids else replace(v, tid=tids[v.index])
            for v in guest.vcpus
        ]
        known = {v.index for v in guest.vcpus}
        vcpus += [VcpuSample(index=i, tid=t) for i, t in sorted(tids.items()) if i not in known]
        return replace(guest, debugfs=totals, vcpus=tuple(vcpus))
