"""Where each guest lands on the host: disk → host disk, vCPU → CPUs, VM → cgroup.

Layer: collectors (I/O only). A `GuestEnricher` named "topology" that fills:

- `DiskSample.host_dev`: the host disk under each guest disk's source (see
  `BlockTopology`), resolved once per (uuid, dom_id, path) and cached: a file does
  not move to another filesystem while the guest runs, and a restart (new dom_id)
  resolves again.
- `VcpuSample.affinity`: `Cpus_allowed_list` of the vCPU thread's
  /proc/PID/task/TID/status, read when the thread is first seen and then every
  `AFFINITY_EVERY` ticks, the threads' turns spread over that period (pinning
  changes at run time with `virsh vcpupin`, so a pin shows within that many ticks).
  It needs the thread id that `SchedCollector` finds, so this enricher must run
  after "sched" in the sampler's enricher list.
- `GuestSample.cpu_nr_periods`, `cpu_nr_throttled`, `cpu_throttled_ns`: CFS bandwidth
  counters of the VM's cgroups (`kvmtop.collectors.cgroups.VmThrottling`): every
  tick from the groups that run under a quota, every `QUIET_EVERY` ticks from the
  others. The cgroup directories are found once per (uuid, pid, vCPU count).

Never imports textual.
"""

from __future__ import annotations

import contextlib
import os
import stat as stat_mod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from msgspec.structs import replace

from kvmtop.collectors.base import Probe, turn
from kvmtop.collectors.cgroups import VmThrottling
from kvmtop.collectors.host import read_text
from kvmtop.collectors.mountinfo import Mount, parse_mountinfo
from kvmtop.model.sample import DiskSample, GuestSample, VcpuSample

# --------------------------------------------------------------------------- parsers


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """Parse a kernel CPU list ("0-3,8,10-11"; lib/bitmap-str.c bitmap_parselist
    format, as in Cpus_allowed_list and cpuset.cpus) into sorted CPU numbers.

    Raises:
        ValueError: a malformed range.
    """
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, sep, last = part.partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise ValueError(f"CPU list: malformed range {part!r}") from None
        if hi < lo:
            raise ValueError(f"CPU list: descending range {part!r}")
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


AFFINITY_EVERY = 5
"""Ticks between two reads of a vCPU thread's affinity: the kernel formats the whole
status file (59 lines on Linux 6.1, fs/proc/array.c proc_pid_status) for the one line read,
more than the schedstat read steal needs every tick, while pins change by hand and
rarely (bench/results/measurements.md, "vCPU affinity")."""


def status_affinity(text: str) -> tuple[int, ...] | None:
    """The `Cpus_allowed_list` of a /proc/PID/task/TID/status (proc(5), since 2.6.26),
    or None when the line is absent.

    Raises:
        ValueError: the list is malformed.
    """
    key = "\nCpus_allowed_list:"
    start = text.find(key)
    if start < 0:
        return None
    start += len(key)
    end = text.find("\n", start)
    return parse_cpu_list(text[start : end if end >= 0 else len(text)])


# --------------------------------------------------------------------------- disks


@dataclass(frozen=True, slots=True)
class _BlockDev:
    """A block device known to sysfs: its name and, for a partition, its disk."""

    name: str
    disk: str | None


class BlockTopology:
    """Resolves a path to the whole host disk that holds it, through sysfs.

    Rule (Documentation/ABI/stable/sysfs-block, sysfs-dev):
    1. The device: `st_rdev` for a block-device image, else the filesystem's
       `st_dev`. A device with major 0 is anonymous (btrfs subvolumes, overlayfs,
       tmpfs, NFS, FUSE): the mount with that MAJ:MIN in mountinfo names its source;
       a /dev/ source is stat'ed for its `st_rdev` (btrfs), anything else has no
       host disk.
    2. MAJ:MIN → name from `sys/block/<disk>/dev` and, for partitions,
       `sys/block/<disk>/<part>/dev` (a partition's directory is a child of its
       disk's: block/partitions/core.c add_partition). A partition resolves to its
       disk.
    3. A stacked device (dm, md, bcache: non-empty `sys/block/<dev>/slaves/`) is
       followed down its slaves, partitions to their disks, to the physical disks.
       When they are one disk, that disk is the answer (LVM or dm-crypt on one
       disk: its /proc/diskstats row is the storage baseline). When they are
       several (RAID, a volume spanning disks), the answer is the topmost stacked
       device ("md0", "dm-0"): its row accounts the array's I/O as the filesystem
       issued it, where no single member does.
    Names are /proc/diskstats names (sysfs spells '/' as '!': block/genhd.c), so
    they match `BlockDevSample.name`. A loop device is not followed to its
    backing file.

    The MAJ:MIN table is read once and again only when a lookup misses (a device
    added since).
    """

    def __init__(self, root: Path, stat: Callable[[str], os.stat_result] = os.stat):
        """Create the resolver.

        Args:
            root: directory holding `sys/` and `proc/`; paths are looked up under it.
            stat: `os.stat`; tests pass a function returning captured device numbers.
        """
        self._base = str(root).rstrip("/")
        self._stat = stat
        self._by_dev: dict[str, _BlockDev] = {}
        self._by_name: dict[str, _BlockDev] = {}
        self._mounts: list[Mount] | None = None

    def resolve(self, path: str | None) -> tuple[str | None, str | None]:
        """(host disk, None), or (None, why not) for a guest disk source.

        `path` as libvirt reports it: an absolute file or device path, or for
        network storage inside QEMU "pool/volume" / "protocol:name".
        """
        if not path:
            return None, "no source (empty drive)"
        if not path.startswith("/"):
            return None, f"network storage inside QEMU ({path}): no host block device"
        try:
            st = self._stat(self._base + path)
        except OSError as e:
            return None, f"{path}: {e.strerror}"
        dev = st.st_rdev if stat_mod.S_ISBLK(st.st_mode) else st.st_dev
        if os.major(dev) == 0:
            return self._anonymous(path, dev)
        return self._disk_of(f"{os.major(dev)}:{os.minor(dev)}", path)

    def _anonymous(self, path: str, dev: int) -> tuple[str | None, str | None]:
        """A file on a filesystem without its own block device number."""
        key = f"{os.major(dev)}:{os.minor(dev)}"
        mount = next((m for m in self._mount_table() if m.dev == key), None)
        if mount is None:  # mounted since the table was read?
            self._mounts = None
            mount = next((m for m in self._mount_table() if m.dev == key), None)
        if mount is None:
            return None, f"{path}: device {key} is in no mount of /proc/self/mountinfo"
        if not mount.source.startswith("/dev/"):
            return None, f"{path} is on {mount.fstype} ({mount.source}): no host block device"
        try:
            st = self._stat(self._base + mount.source)
        except OSError as e:
            return None, f"{path}: {mount.source}: {e.strerror}"
        if not stat_mod.S_ISBLK(st.st_mode):
            return None, f"{path}: {mount.source} is not a block device"
        return self._disk_of(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}", path)

    def _disk_of(self, majmin: str, path: str) -> tuple[str | None, str | None]:
        dev = self._by_dev.get(majmin)
        if dev is None:
            self._scan()
            dev = self._by_dev.get(majmin)
        if dev is None:
            return None, f"{path}: block device {majmin} not in /sys/block"
        top = dev.disk or dev.name
        leaves = sorted(set(self._leaves(top, set())))
        name = leaves[0] if len(leaves) == 1 else top
        return name.replace("!", "/"), None

    def _leaves(self, name: str, seen: set[str]) -> list[str]:
        """The physical disks under `name` (itself when it has no slaves)."""
        if name in seen:  # a cycle cannot happen in sysfs; stop anyway
            return []
        seen.add(name)
        try:
            slaves = os.listdir(f"{self._base}/sys/block/{name}/slaves")
        except OSError:
            slaves = []
        if not slaves:
            return [name]
        out = []
        for slave in slaves:
            dev = self._by_name.get(slave)
            out.extend(self._leaves(dev.disk if dev is not None and dev.disk else slave, seen))
        return out

    def _scan(self) -> None:
        """Read the MAJ:MIN of every disk and partition under sys/block."""
        by_dev: dict[str, _BlockDev] = {}
        block = f"{self._base}/sys/block"
        try:
            disks = os.listdir(block)
        except OSError:
            disks = []
        for disk in disks:
            entry = _BlockDev(disk, None)
            self._add(by_dev, f"{block}/{disk}/dev", entry)
            try:
                children = os.listdir(f"{block}/{disk}")
            except OSError:
                continue
            for child in children:
                if os.path.exists(f"{block}/{disk}/{child}/partition"):
                    self._add(by_dev, f"{block}/{disk}/{child}/dev", _BlockDev(child, disk))
        self._by_dev = by_dev
        self._by_name = {d.name: d for d in by_dev.values()}

    @staticmethod
    def _add(table: dict[str, _BlockDev], dev_file: str, entry: _BlockDev) -> None:
        with contextlib.suppress(OSError):  # the device went away during the scan
            table[read_text(dev_file).strip()] = entry

    def _mount_table(self) -> list[Mount]:
        if self._mounts is None:
            try:
                self._mounts = parse_mountinfo(read_text(f"{self._base}/proc/self/mountinfo"))
            except OSError:
                self._mounts = []
        return self._mounts


# --------------------------------------------------------------------------- enricher


class TopologyCollector:
    """Fills host disk, vCPU affinity and VM cgroup throttling (module docstring).

    Must run after `SchedCollector` (it reads `VcpuSample.tid`).
    """

    name = "topology"

    def __init__(self, root: Path = Path("/"), *, stat: Callable[[str], os.stat_result] = os.stat):
        """Create the enricher.

        Args:
            root: directory holding `proc/` and `sys/` (a fake tree in tests).
            stat: `os.stat`; tests pass one that returns captured device numbers.
        """
        self._base = str(root).rstrip("/")
        self._blocks = BlockTopology(root, stat)
        self._throttling = VmThrottling(root)
        self._disks: dict[tuple[str, int | None, str | None], tuple[str | None, str | None]] = {}
        self._affinities: dict[tuple[int, int], tuple[int, ...] | None] = {}
        """(pid, tid) → the thread's affinity last read (None: unreadable)."""
        self._tick = 0
        self.last_gaps: tuple[str, ...] = ()
        """Disks without a host device and guests without cgroup counters, last tick."""

    def paths_read(self) -> list[str]:
        """Glob patterns (relative to root) of every file this collector reads."""
        cgroup_roots = ("sys/fs/cgroup", "sys/fs/cgroup/cpu", "sys/fs/cgroup/cpu,cpuacct")
        groups = (
            "machine/*",
            "machine/*/*",
            "machine.slice/*",
            "machine.slice/*/*",
            "machine.slice/*/*/*",
        )
        return [
            "proc/self/mountinfo",
            "sys/block/*/dev",
            "sys/block/*/*/partition",
            "sys/block/*/*/dev",
            "sys/block/*/slaves/*",
            "proc/[0-9]*/cgroup",
            "proc/[0-9]*/task/[0-9]*/status",
            *(f"{r}/{g}/cpu.stat" for r in cgroup_roots for g in groups),
        ]

    def probe(self) -> Probe:
        """Available wherever sysfs is; says where the CPU controller was found."""
        if not os.path.isdir(f"{self._base}/sys/block"):
            return Probe(self.name, False, "/sys/block absent: sysfs not mounted")
        where = self._throttling.locator.describe()
        reason = None if where else "no cgroup CPU controller mounted: CFS throttling unavailable"
        return Probe(self.name, True, reason, detail={"cpu_cgroup": where or "none"})

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        """The guests with host disks, vCPU affinity and cgroup throttling filled."""
        gaps: list[str] = []
        out = []
        disk_keys: set[tuple[str, int | None, str | None]] = set()
        threads: set[tuple[int, int]] = set()
        self._tick += 1
        for g in guests:
            disks = tuple(self._disk(g, d, disk_keys, gaps) for d in g.disks)
            if g.pid is None or g.state != "running":
                out.append(replace(g, disks=disks))
                continue
            vcpus = tuple(self._affinity(g.pid, v, threads) for v in g.vcpus)
            periods, throttled, throttled_ns = self._throttling.counters(
                g.uuid, g.name, g.pid, g.vcpus_current, gaps
            )
            out.append(
                replace(
                    g,
                    disks=disks,
                    vcpus=vcpus,
                    cpu_nr_periods=periods,
                    cpu_nr_throttled=throttled,
                    cpu_throttled_ns=throttled_ns,
                )
            )
        for key in self._disks.keys() - disk_keys:
            del self._disks[key]
        for thread in self._affinities.keys() - threads:
            del self._affinities[thread]
        self._throttling.tick({g.uuid for g in guests})
        self.last_gaps = tuple(gaps)
        return tuple(out)

    def _disk(
        self,
        g: GuestSample,
        d: DiskSample,
        keys: set[tuple[str, int | None, str | None]],
        gaps: list[str],
    ) -> DiskSample:
        key = (g.uuid, g.dom_id, d.path)
        keys.add(key)
        found = self._disks.get(key)
        if found is None:
            found = self._disks[key] = self._blocks.resolve(d.path)
        host_dev, reason = found
        if reason is not None:
            gaps.append(f"{g.name} {d.target}: {reason}")
        return replace(d, host_dev=host_dev) if host_dev != d.host_dev else d

    def _affinity(self, pid: int, v: VcpuSample, threads: set[tuple[int, int]]) -> VcpuSample:
        """`v` with its thread's affinity: read when the thread is new or its turn
        came (`AFFINITY_EVERY`), else the one read last; `threads` collects the
        (pid, tid) seen this tick."""
        if v.tid is None:
            return v
        key = (pid, v.tid)
        threads.add(key)
        if key in self._affinities and not turn(self._tick, v.tid, AFFINITY_EVERY):
            cpus = self._affinities[key]
        else:
            try:
                text = read_text(f"{self._base}/proc/{pid}/task/{v.tid}/status")
                cpus = status_affinity(text)
            except (OSError, ValueError):
                cpus = None  # the thread exited, or a status we cannot read
            self._affinities[key] = cpus
        return v if cpus is None else replace(v, affinity=cpus)
