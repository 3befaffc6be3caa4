"""KVM guests that libvirt does not manage, and the helper threads of every guest.

Layer: collectors (I/O only). Never imports textual.

Discovery: any process holding an `anon_inode:kvm-vm` fd runs a KVM VM (the VM fd
that KVM_CREATE_VM returns is an anon inode named "kvm-vm", vCPU fds are
"kvm-vcpu:N": virt/kvm/kvm_main.c kvm_dev_ioctl_create_vm, create_vcpu_fd), and
KVM debugfs names one directory "<pid>-<fd>" per VM. Processes libvirt already
reported (same pid) are skipped; the rest (plain QEMU, Proxmox, Firecracker, Cloud
Hypervisor, ...) become guests marked `managed="unmanaged"`.

Threads: every guest with a pid gets its emulator (main) thread, QEMU iothreads and
vhost workers with their schedstat, since a starved vhost worker explains network
drops the way vCPU steal explains slowness.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from msgspec.structs import replace

from kvmtop.collectors import procfs
from kvmtop.collectors.base import Probe, turn
from kvmtop.collectors.host import read_text
from kvmtop.collectors.kvmdebugfs import DebugfsCollector
from kvmtop.model.sample import GuestSample, ThreadSample, VcpuSample
from kvmtop.model.units import NS_PER_S

_VM_FD = "anon_inode:kvm-vm"
_VCPU_FD = re.compile(r"anon_inode:kvm-vcpu:(\d+)")
_VHOST_NET = "/dev/vhost-net"

# vCPU thread names of other VMMs (QEMU's "CPU n/KVM" is procfs.parse_vcpu_comm):
# Firecracker src/vmm/src/vstate/vcpu.rs `format!("fc_vcpu {}", index)`,
# Cloud Hypervisor vmm/src/cpu.rs `format!("vcpu{}", id)`.
_OTHER_VCPU_COMM = re.compile(r"fc_vcpu (\d+)|vcpu(\d+)")

# QEMU names an iothread "IO <id>" (iothread.c iothread_run; the monitor's own is
# "IO mon_iothread"). vhost-net workers are "vhost-<owner pid>"
# (drivers/vhost/vhost.c vhost_worker_create): kernel threads before Linux 6.4,
# user tasks in the owner's thread group since the vhost_task rework (6.4).
_IOTHREAD_PREFIX = "IO "

DEBUGFS_SAFETY_NET = 30
"""With KVM debugfs listable, a process without a VM directory has its fds read once
per this many `rescan_every` periods (every 300 ticks by default, 10 min at 2 s):
reading every fd link of every process on the host was most of this collector's
CPU, and grows with the host's processes (bench/results/measurements.md#unmanaged-vm-discovery)."""


def _vcpu_index(comm: str) -> int | None:
    """The vCPU index a thread name stands for, whatever the VMM; None otherwise."""
    found = procfs.parse_vcpu_comm(comm)
    if found is not None:
        return found[0]
    m = _OTHER_VCPU_COMM.fullmatch(comm.strip())
    if m is None:
        return None
    return int(m.group(1) or m.group(2))


@dataclass(frozen=True, slots=True)
class PidStat:
    """The fields of /proc/PID/stat kvmtop uses (proc(5))."""

    comm: str
    utime: int
    stime: int
    starttime: int


def parse_pid_stat(text: str) -> PidStat:
    """Parse /proc/PID/stat: comm (field 2), utime/stime (14, 15), starttime (22).

    The comm is in parentheses and may itself contain spaces and ')', so the fields
    are counted from the last ')' (proc(5)). utime/stime include the reaped threads
    of the process, so unlike a sum over live threads they never go backwards.

    Raises:
        ValueError: no parenthesised comm, too few fields, or non-numeric values.
    """
    open_at = text.find("(")
    close_at = text.rfind(")")
    if open_at < 0 or close_at < open_at:
        raise ValueError("/proc/PID/stat: no (comm)")
    rest = text[close_at + 1 :].split()
    if len(rest) < 20:
        raise ValueError(f"/proc/PID/stat: {len(rest) + 2} fields, expected >= 22")
    try:
        return PidStat(
            comm=text[open_at + 1 : close_at],
            utime=int(rest[11]),
            stime=int(rest[12]),
            starttime=int(rest[19]),
        )
    except ValueError:
        raise ValueError("/proc/PID/stat: non-numeric field") from None


def guest_identity(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """(name, uuid) from a VMM command line, each None when it has none.

    QEMU: `-name [guest=]NAME[,debug-threads=on]`, `-uuid UUID` (either with one or
    two dashes, value as the next word or after '='). Firecracker: `--id ID`.
    """
    options: dict[str, str] = {}
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            continue
        key, eq, value = word.lstrip("-").partition("=")
        if not eq:
            if i + 1 >= len(argv):
                continue
            value = argv[i + 1]
        options.setdefault(key, value)
    name = None
    if "name" in options:
        for part in options["name"].split(","):
            key, eq, value = part.partition("=")
            if not eq:
                name = key
                break
            if key == "guest":
                name = value
                break
    elif "id" in options:
        name = options["id"]
    return name or None, options.get("uuid") or None


@dataclass(frozen=True, slots=True)
class _Fds:
    """What a process's fd table says about KVM."""

    vm: bool
    vcpus: frozenset[int]
    vhost_net: bool


class ProcessCollector:
    """A GuestEnricher: adds unmanaged KVM guests and fills `threads` for all guests.

    Args:
        root: directory holding `proc/` and `sys/` (a fake tree in tests).
        rescan_every: ticks between two looks at the fds of a process that held no
            KVM VM (a VMM creates its VM at start-up; debugfs directories, when
            mounted, reveal a new VM at once).
        user_hz: USER_HZ of /proc/PID/stat times (default: sysconf(SC_CLK_TCK)).
    """

    name = "processes"

    def __init__(
        self, root: Path = Path("/"), *, rescan_every: int = 10, user_hz: int | None = None
    ) -> None:
        self._proc = root / "proc"
        # Per-tick paths are joined as plain strings: a pathlib join costs
        # microseconds, hundreds of times a tick (bench/results/measurements.md#procfs-reads).
        self._proc_dir = str(self._proc)
        self._debugfs = DebugfsCollector(root, mount=False)
        self._rescan_every = max(1, rescan_every)
        self._user_hz = user_hz or os.sysconf("SC_CLK_TCK")
        self._tick = 0
        self._fds: dict[int, _Fds] = {}
        """Processes whose fds were examined, by pid."""
        self._seen: set[int] = set()
        """The pids of the last tick (a pid not among them is new)."""
        self._vhost_kthreads: dict[int, tuple[int, ...]] = {}
        self._vm_dirs: dict[int, list[str]] = {}
        """KVM debugfs VM directories by pid, listed once per tick."""
        self._comms: dict[int, dict[int, str]] = {}
        """Thread names by pid and tid (see `_threads`)."""

    def paths_read(self) -> list[str]:
        """Glob patterns (relative to root) of every file this collector reads."""
        return [
            "proc/[0-9]*/fd/*",
            "proc/[0-9]*/stat",
            "proc/[0-9]*/cmdline",
            "proc/[0-9]*/exe",
            "proc/[0-9]*/comm",
            "proc/[0-9]*/task/[0-9]*/comm",
            "proc/[0-9]*/task/[0-9]*/schedstat",
            "sys/kernel/debug/kvm/[0-9]*-*/vcpu[0-9]*/pid",
        ]

    def probe(self) -> Probe:
        """Check that process fd tables can be listed (needs root for other users)."""
        try:
            os.listdir(self._proc / "self" / "fd")
            procfs.parse_task_schedstat(read_text(self._proc / "self" / "schedstat"))
        except (OSError, ValueError) as e:
            return Probe(self.name, False, f"{self._proc}: {e}")
        if os.geteuid() != 0:
            return Probe(self.name, True, "not root: only this user's VMs are found")
        return Probe(self.name, True)

    # ------------------------------------------------------------------ discovery

    def _scan_fds(self, pid: int) -> _Fds | None:
        """Classify the fds of `pid`; None when the process is gone or unreadable."""
        fd_dir = f"{self._proc_dir}/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            return None
        vm = vhost = False
        vcpus: set[int] = set()
        for fd in names:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue  # closed meanwhile
            if target == _VM_FD:
                vm = True
            elif target == _VHOST_NET:
                vhost = True
            elif m := _VCPU_FD.fullmatch(target):
                vcpus.add(int(m.group(1)))
        return _Fds(vm, frozenset(vcpus), vhost)

    def _fds_of(self, pid: int, *, look: bool) -> _Fds | None:
        """`pid`'s fd classification: read now when `look`, else the last one read
        (None when never read, or the process is gone or unreadable)."""
        if look:
            found = self._scan_fds(pid)
            if found is None:
                self._fds.pop(pid, None)
                return None
            self._fds[pid] = found
        return self._fds.get(pid)

    def _discover(self, known: set[int]) -> list[int]:
        """Pids of KVM processes not in `known`, in pid order."""
        try:
            pids = {int(n) for n in os.listdir(self._proc) if n.isdigit()}
        except OSError:
            return []
        listed = self._debugfs.vm_dirs_by_pid()
        self._vm_dirs = listed or {}
        candidates = pids - known
        candidates.discard(os.getpid())
        vms = {pid for pid in candidates & self._fds.keys() if self._fds[pid].vm}
        # A VM process is looked at every `rescan_every` ticks (its vCPUs change), one
        # a KVM debugfs directory names at once. KVM debugfs, when it can be listed,
        # names a directory after each VM's creator as the VM is created
        # (virt/kvm/kvm_main.c kvm_create_vm_debugfs, "<pid>-<fd>"): the fds of the
        # other processes need a look only as a safety net for a VM without one (the
        # kernel skips a duplicate name and a failed creation), so far less often.
        # Without it every process is looked at when first seen and every
        # `rescan_every` ticks.
        look = {pid for pid in vms if turn(self._tick, pid, self._rescan_every)}
        look |= (candidates & self._vm_dirs.keys()) - vms
        others = candidates - vms - look
        if listed is None:
            look |= others - self._seen
            period = self._rescan_every
        else:
            period = self._rescan_every * DEBUGFS_SAFETY_NET
        look |= {pid for pid in others if turn(self._tick, pid, period)}
        for pid in look:
            self._fds_of(pid, look=True)
        self._seen = pids
        for pid in self._fds.keys() - pids:  # exited processes
            del self._fds[pid]
        for cache in (self._vhost_kthreads, self._comms):
            for pid in cache.keys() - pids:
                del cache[pid]
        return sorted(pid for pid in candidates & self._fds.keys() if self._fds[pid].vm)

    # ------------------------------------------------------------------ samples

    def _schedstat(self, pid: int, tid: int) -> tuple[int, int] | None:
        try:
            run, delay, _ = procfs.parse_task_schedstat(
                read_text(f"{self._proc_dir}/{pid}/task/{tid}/schedstat")
            )
        except (OSError, ValueError):
            return None
        return run, delay

    def _threads(self, pid: int) -> dict[int, str]:
        """tid → comm of every thread of `pid` (empty when the process is gone).

        Names are cached: QEMU and the other VMMs name a thread right after creating
        it (qemu_thread_create → pthread_setname_np) and never again, so only new
        threads are read, and every name again once per `rescan_every` ticks.
        """
        task = f"{self._proc_dir}/{pid}/task"
        try:
            tids = [int(t) for t in os.listdir(task)]
        except OSError:
            self._comms.pop(pid, None)
            return {}
        fresh = (self._tick + pid) % self._rescan_every == 0
        known = {} if fresh else self._comms.get(pid, {})
        out: dict[int, str] = {}
        for tid in tids:
            if tid in known:
                out[tid] = known[tid]
                continue
            try:
                out[tid] = read_text(f"{task}/{tid}/comm").strip()
            except OSError:
                continue  # exited meanwhile
        self._comms[pid] = out
        return out

    def _unmanaged(self, pid: int) -> GuestSample | None:
        """An unmanaged guest for KVM process `pid`; None when it vanished."""
        base = self._proc / str(pid)
        try:
            stat = parse_pid_stat(read_text(base / "stat"))
            argv = [a for a in read_text(base / "cmdline").split("\0") if a]
        except (OSError, ValueError):
            return None
        try:
            exe = os.path.basename(os.readlink(base / "exe"))
        except OSError:
            exe = stat.comm
        name, uuid = guest_identity(argv)
        threads = self._threads(pid)
        tids: dict[int, int] = {}
        for vm_dir in self._vm_dirs.get(pid, ()):
            tids.update(self._debugfs.vcpu_tids(vm_dir))
        for thread, comm in threads.items():
            index = _vcpu_index(comm)
            if index is not None:
                tids.setdefault(index, thread)
        fds = self._fds.get(pid)
        indices = sorted(set(tids) | (set(fds.vcpus) if fds else set()))
        vcpus = []
        for index in indices:
            vcpu_tid = tids.get(index)
            sched = self._schedstat(pid, vcpu_tid) if vcpu_tid is not None else None
            vcpus.append(
                VcpuSample(
                    index,
                    tid=vcpu_tid,
                    sched_run_ns=sched[0] if sched else None,
                    sched_delay_ns=sched[1] if sched else None,
                )
            )
        return GuestSample(
            # No UUID on the command line: pid plus start time (clock ticks since
            # boot) names this process uniquely, across pid reuse.
            uuid=uuid or f"pid-{pid}-{stat.starttime}",
            name=name or f"{exe}-{pid}",
            state="running",
            accel="kvm",
            pid=pid,
            vcpus_current=len(indices) or None,
            vcpus_maximum=len(indices) or None,
            cpu_time_ns=(stat.utime + stat.stime) * NS_PER_S // self._user_hz,
            vcpus=tuple(vcpus),
            managed="unmanaged",
        )

    def _vhost_kernel_threads(self, pid: int) -> tuple[int, ...]:
        """Kernel threads "vhost-<pid>" (Linux < 6.4) anywhere in /proc, cached."""
        cached = self._vhost_kthreads.get(pid)
        wanted = f"vhost-{pid}"
        if cached is not None:
            try:
                if all(read_text(self._proc / str(t) / "comm").strip() == wanted for t in cached):
                    return cached
            except OSError:
                pass
        found = []
        try:
            entries = os.listdir(self._proc)
        except OSError:
            entries = []
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                if read_text(self._proc / entry / "comm").strip() == wanted:
                    found.append(int(entry))
            except OSError:
                continue
        self._vhost_kthreads[pid] = tuple(found)
        return self._vhost_kthreads[pid]

    def _with_threads(self, guest: GuestSample) -> GuestSample:
        """`guest` with its emulator, iothread and vhost threads and their schedstat."""
        pid = guest.pid
        if pid is None:
            return guest
        vcpu_tids = {v.tid for v in guest.vcpus if v.tid is not None}
        out: list[ThreadSample] = []
        vhost_seen = False
        for tid, comm in sorted(self._threads(pid).items()):
            if tid in vcpu_tids or _vcpu_index(comm) is not None:
                continue
            if tid == pid:
                kind = "emulator"
            elif comm.startswith(_IOTHREAD_PREFIX):
                kind = "iothread"
            elif comm == f"vhost-{pid}":
                kind = "vhost"
                vhost_seen = True
            else:
                continue
            sched = self._schedstat(pid, tid)
            out.append(
                ThreadSample(
                    tid,
                    kind,
                    comm,
                    run_ns=sched[0] if sched else None,
                    delay_ns=sched[1] if sched else None,
                )
            )
        fds = self._fds_of(
            pid, look=pid not in self._fds or turn(self._tick, pid, self._rescan_every)
        )
        if not vhost_seen and fds is not None and fds.vhost_net:
            for tid in self._vhost_kernel_threads(pid):
                sched = self._schedstat(tid, tid)
                out.append(
                    ThreadSample(
                        tid,
                        "vhost",
                        f"vhost-{pid}",
                        run_ns=sched[0] if sched else None,
                        delay_ns=sched[1] if sched else None,
                    )
                )
        return replace(guest, threads=tuple(out))

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        """`guests` with `threads` filled, followed by the unmanaged KVM guests."""
        known = {g.pid for g in guests if g.pid is not None}
        extra = [g for pid in self._discover(known) if (g := self._unmanaged(pid)) is not None]
        self._tick += 1
        return tuple(self._with_threads(g) for g in (*guests, *extra))
