"""Where each guest lands on the host: disk → host disk, vCPU → CPUs, VM → cgroup.

Layer: collectors (I/O only). A `GuestEnricher` named "topology" that fills:

- `DiskSample.host_dev`: the host disk under each guest disk's source (see
  `BlockTopology`), resolved once per (uuid, dom_id, path) and cached: a file does
  not move to another filesystem while the guest runs, and a restart (new dom_id)
  resolves again.
- `VcpuSample.affinity`: `Cpus_allowed_list` of the vCPU thread's
  /proc/PID/task/TID/status, read every tick (pinning changes at run time with
  `virsh vcpupin`). It needs the thread id that `SchedCollector` finds, so this
  enricher must run after "sched" in the sampler's enricher list.
- `GuestSample.cpu_nr_periods`, `cpu_nr_throttled`, `cpu_throttled_ns`: CFS bandwidth
  counters of the VM's cgroup (see `vm_cgroup_dir`), read every tick. The cgroup
  directories are found once per (uuid, dom_id, pid, vCPU count).

Never imports textual.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat as stat_mod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from msgspec.structs import replace

from kvmtop.collectors.base import Probe
from kvmtop.collectors.host import read_text
from kvmtop.model.sample import DiskSample, GuestSample, VcpuSample
from kvmtop.model.units import NS_PER_US

# How deep below the VM's cgroup to look for cpu.stat files: libvirt's own layout is
# <vm>/{emulator,vcpuN,iothreadN} (1 level), under systemd <scope>/libvirt/... (2).
_CGROUP_DEPTH = 2


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


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of /proc/PID/mountinfo (proc(5)).

    Attributes:
        dev: "MAJ:MIN", the st_dev of files on this filesystem.
        root: the directory of the filesystem mounted here ("/" for the whole fs).
        mountpoint: where it is mounted.
        fstype: filesystem type ("ext4", "btrfs", "cgroup", "cgroup2", ...).
        source: mount source ("/dev/sda2", "tmpfs", "server:/export", ...).
        options: per-superblock options ("rw,cpu,cpuacct" for a cgroup v1 hierarchy).
    """

    dev: str
    root: str
    mountpoint: str
    fstype: str
    source: str
    options: tuple[str, ...]


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    r"""Undo mountinfo's octal escapes of space, tab, newline and backslash
    (fs/proc_namespace.c show_mountinfo → mangle(): "\040" for a space)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/PID/mountinfo: "id parent MAJ:MIN root mountpoint opts
    [optional...] - fstype source superopts". Malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 6 or len(rest) < 2:
            continue
        out.append(
            Mount(
                dev=fields[2],
                root=_unescape(fields[3]),
                mountpoint=_unescape(fields[4]),
                fstype=rest[0],
                source=_unescape(rest[1]),
                options=tuple(rest[2].split(",")) if len(rest) > 2 else (),
            )
        )
    return out


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


# --------------------------------------------------------------------------- cgroups


@dataclass(frozen=True, slots=True)
class _Cgroup:
    """The cpu.stat files of one VM, found for one (pid, vCPU count)."""

    pid: int
    vcpus: int | None
    files: tuple[str, ...]
    """The VM directory's cpu.stat first, then its descendants'."""


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
        self._cgroups = CgroupLocator(root)
        self._disks: dict[tuple[str, int | None, str | None], tuple[str | None, str | None]] = {}
        self._vm_groups: dict[str, _Cgroup | None] = {}
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
        where = self._cgroups.describe()
        reason = None if where else "no cgroup CPU controller mounted: CFS throttling unavailable"
        return Probe(self.name, True, reason, detail={"cpu_cgroup": where or "none"})

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        """The guests with host disks, vCPU affinity and cgroup throttling filled."""
        gaps: list[str] = []
        out = []
        disk_keys: set[tuple[str, int | None, str | None]] = set()
        for g in guests:
            disks = tuple(self._disk(g, d, disk_keys, gaps) for d in g.disks)
            if g.pid is None or g.state != "running":
                out.append(replace(g, disks=disks))
                continue
            vcpus = tuple(self._affinity(g.pid, v) for v in g.vcpus)
            periods, throttled, throttled_ns = self._throttling(g, g.pid, gaps)
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
        live = {g.uuid for g in guests}
        for uuid in self._vm_groups.keys() - live:
            del self._vm_groups[uuid]
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

    def _affinity(self, pid: int, v: VcpuSample) -> VcpuSample:
        if v.tid is None:
            return v
        try:
            cpus = status_affinity(read_text(f"{self._base}/proc/{pid}/task/{v.tid}/status"))
        except (OSError, ValueError):
            return v  # the thread exited, or a status we cannot read
        return replace(v, affinity=cpus)

    def _throttling(
        self, g: GuestSample, pid: int, gaps: list[str]
    ) -> tuple[int | None, int | None, int | None]:
        """Σ CFS bandwidth counters over the VM's cgroups (see `CgroupLocator`)."""
        cached = self._vm_groups.get(g.uuid)
        if cached is None or cached.pid != pid or cached.vcpus != g.vcpus_current:
            cached = self._vm_groups[g.uuid] = self._locate(pid, g.vcpus_current)
        if cached is None:
            gaps.append(f"{g.name}: no cgroup with the CPU controller; throttling unknown")
            return None, None, None
        totals = {"nr_periods": 0, "nr_throttled": 0, "throttled_ns": 0}
        seen = False
        for path in cached.files:
            try:
                values = parse_cpu_stat(read_text(path))
            except OSError:
                if path == cached.files[0]:  # the VM's cgroup is gone: find it again
                    del self._vm_groups[g.uuid]
                    return None, None, None
                continue  # a vCPU group removed (unplug): rescanned on the count change
            if "nr_periods" not in values:
                continue  # v2 without the cpu controller enabled: only usage_usec
            seen = True
            totals["nr_periods"] += values["nr_periods"]
            totals["nr_throttled"] += values.get("nr_throttled", 0)
            totals["throttled_ns"] += values.get(
                "throttled_time", values.get("throttled_usec", 0) * NS_PER_US
            )
        if not seen:
            gaps.append(f"{g.name}: cpu.stat without CFS bandwidth counters")
            return None, None, None
        return totals["nr_periods"], totals["nr_throttled"], totals["throttled_ns"]

    def _locate(self, pid: int, vcpus: int | None) -> _Cgroup | None:
        try:
            text = read_text(f"{self._base}/proc/{pid}/cgroup")
        except OSError:
            return None
        found = self._cgroups.cpu_dir(text)
        if found is None:
            return None
        directory, libvirt = found
        return _Cgroup(pid, vcpus, _cpu_stat_files(directory, libvirt))
