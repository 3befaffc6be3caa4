"""Host baseline collector: CPU, run-queue delay, PSI, memory, disks, NICs, softnet.

Layer: collectors (I/O only). Reads procfs and sysfs under `root` and returns one
`HostSample` of raw cumulative counters; parsing lives in `procfs`. kvmtop's own CPU
time and RSS come from psutil. Root qdisc counters and shaping rates (no procfs/sysfs
file has them) come from one rtnetlink RTM_GETQDISC dump per tick (`rtnetlink`): far
cheaper in CPU than forking `tc -s -j qdisc show`, so it stays on the fast tier. Each
interface whose root qdisc is htb adds a class dump, cheaper still
(bench/results/measurements.md#rtnetlink-qdisc-dump-vs-tc).
Never imports textual.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import psutil
from msgspec.structs import replace

from kvmtop.collectors import procfs, rtnetlink
from kvmtop.collectors.base import CollectorError, Probe, probe_read
from kvmtop.collectors.rtnetlink import QdiscStats
from kvmtop.model.sample import BlockDevSample, HostSample, NetDevSample, PressureSample
from kvmtop.model.units import BITS_PER_MBIT, NS_PER_S

T = TypeVar("T")

PSI_RESOURCES = ("cpu", "memory", "io")

# Block devices that exist by the dozen without being used: drivers/block/loop.c
# ("loop%d"), drivers/block/brd.c ("ram%d"), drivers/block/zram ("zram%d").
_IDLE_VIRTUAL_DISKS = ("loop", "ram", "zram")

# include/uapi/linux/if_arp.h, as /sys/class/net/<if>/type prints them
_ARPHRD_ETHER = "1"
_ARPHRD_LOOPBACK = "772"

_ABSENT = {
    "proc/schedstat": "kernel built without CONFIG_SCHEDSTATS; host run-queue delay unavailable",
    "proc/pressure": "kernel without PSI (CONFIG_PSI, Linux 4.20+) or booted with psi=0; "
    "host pressure unavailable",
    "proc/net/softnet_stat": "softnet drops and time_squeeze unavailable",
}


def selected_word(text: str) -> str | None:
    """The `[selected]` word of a sysfs choice file, e.g. "mq-deadline" from
    "none [mq-deadline] kyber bfq" (block/elevator.c elv_iosched_show) or "madvise"
    from "always [madvise] never" (mm/huge_memory.c). A file offering one choice
    prints it without brackets ("none" for a queue without an elevator); None when
    nothing is selected."""
    words = text.split()
    for word in words:
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return words[0] if len(words) == 1 else None


def read_text(path: str | Path) -> str:
    """Read a whole procfs or sysfs file.

    Raw `os.open`/`os.read` costs a fraction of `Path.read_text` on these files, which
    matters for hundreds of per-thread reads per tick; callers in hot loops pass `str`
    paths for the same reason (a pathlib join costs too; figures:
    bench/results/measurements.md#procfs-reads). procfs and sysfs report size 0, so read
    to EOF.

    Raises:
        OSError: the file is absent, unreadable or a directory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


class HostCollector:
    """Reads the host baseline counters under `root`.

    Partial gaps (no /proc/schedstat, no PSI, an unreadable file) leave the matching
    `HostSample` fields None and are listed in `last_gaps` and in `probe().reason`;
    only an unusable /proc/stat fails the whole collection.
    """

    name = "host"

    def __init__(
        self,
        root: Path = Path("/"),
        clock: Callable[[], int] = time.monotonic_ns,
        qdiscs: Callable[[], Mapping[int, QdiscStats]] | None = None,
    ):
        """Create the collector.

        Args:
            root: directory holding `proc/` and `sys/` (a fake tree in tests).
            clock: monotonic clock in ns, stamped right after the reads.
            qdiscs: root qdisc counters and shaping rates by ifindex. None means
                this host's own rtnetlink dumps when `root` is "/", and none for a
                fake tree (netlink cannot be faked by files; tests pass a function
                over a captured dump).
        """
        self._root = root
        self._base = str(root).rstrip("/")
        self._clock = clock
        if qdiscs is None and self._base == "":
            qdiscs = rtnetlink.root_qdiscs
        self._qdiscs = qdiscs
        self._ifindex: dict[str, int | None] = {}
        self._user_hz = os.sysconf("SC_CLK_TCK")
        self._self = psutil.Process()
        self._ident: tuple[str, str] | None = None
        self._net_kind: dict[str, str] = {}
        self._block_info: dict[str, tuple[bool, bool | None]] = {}
        self.last_gaps: tuple[str, ...] = ()
        """What the last `collect()` could not read, one human sentence each."""

    # ------------------------------------------------------------------ public

    def paths_read(self) -> list[str]:
        """Glob patterns (relative to `root`) of every file this collector reads."""
        net = "sys/class/net/*/"
        return [
            "proc/stat",
            "proc/schedstat",
            *(f"proc/pressure/{res}" for res in PSI_RESOURCES),
            "proc/meminfo",
            "proc/vmstat",
            "proc/diskstats",
            "proc/net/dev",
            "proc/net/softnet_stat",
            "proc/loadavg",
            "proc/sys/kernel/hostname",
            "proc/sys/kernel/osrelease",
            *(
                net + leaf
                for leaf in (
                    "type",
                    "ifindex",
                    "iflink",
                    "uevent",
                    "speed",
                    "operstate",
                    "master",
                    "device",
                    "bridge",
                    "bonding",
                    "tun_flags",
                    "lower_*",
                )
            ),
            "sys/class/block/*/partition",
            "sys/block/*/queue/rotational",
            "sys/block/*/queue/scheduler",
            "sys/kernel/mm/transparent_hugepage/enabled",
        ]

    def probe(self) -> Probe:
        """Try one collection and say what works.

        `available` is False only when /proc/stat cannot be used; `reason` lists the
        partial gaps otherwise.
        """
        return probe_read(self, self.collect, self._detail)

    def _detail(self, sample: HostSample) -> dict[str, str]:
        """The probe's facts for the sources view."""
        return {
            "root": str(self._root),
            "kernel": sample.kernel,
            "user_hz": str(self._user_hz),
            "ncpu": str(sample.ncpu),
        }

    def collect(self) -> HostSample:
        """Read every host source once.

        Raises:
            CollectorError: /proc/stat is unreadable or malformed.
        """
        gaps: list[str] = []
        try:
            cpu, ncpu = procfs.parse_proc_stat(self._read("proc/stat"), self._user_hz)
        except OSError as e:
            raise CollectorError(f"/proc/stat unreadable: {e.strerror}") from e
        except ValueError as e:
            raise CollectorError(str(e)) from e

        sched = self._part("proc/schedstat", procfs.parse_schedstat, gaps)
        mem = self._part("proc/meminfo", procfs.parse_meminfo, gaps) or {}
        vmstat = self._part("proc/vmstat", procfs.parse_vmstat, gaps) or {}
        disks = self._part("proc/diskstats", procfs.parse_diskstats, gaps) or []
        nics = self._part("proc/net/dev", procfs.parse_net_dev, gaps) or []
        softnet = self._part("proc/net/softnet_stat", procfs.parse_softnet_stat, gaps) or []
        loadavg = self._part("proc/loadavg", procfs.parse_loadavg, gaps)
        pressure = self._pressure(gaps)
        hostname, kernel = self._identity(gaps)
        self_cpu_ns, self_rss = self._self_usage(gaps)
        blockdevs = self._block_devices(disks)
        netdevs = self._net_devices(nics, self._root_qdiscs(gaps))
        thp = self._sysfs("sys/kernel/mm/transparent_hugepage/enabled")
        mono_ns = self._clock()

        self.last_gaps = tuple(gaps)
        return HostSample(
            mono_ns=mono_ns,
            hostname=hostname,
            kernel=kernel,
            ncpu=ncpu,
            cpu=cpu,
            run_delay_ns=sched[1] if sched else None,
            run_time_ns=sched[0] if sched else None,
            mem_total_bytes=mem.get("MemTotal"),
            mem_available_bytes=mem.get("MemAvailable"),
            mem_free_bytes=mem.get("MemFree"),
            swap_total_bytes=mem.get("SwapTotal"),
            swap_free_bytes=mem.get("SwapFree"),
            vmstat=vmstat,
            pressure=pressure,
            blockdevs=blockdevs,
            netdevs=netdevs,
            softnet=tuple(softnet),
            loadavg=loadavg,
            self_cpu_ns=self_cpu_ns,
            self_rss_bytes=self_rss,
            # Absent without CONFIG_TRANSPARENT_HUGEPAGE.
            thp_enabled=selected_word(thp) if thp is not None else None,
        )

    # ------------------------------------------------------------------ sources

    def _read(self, rel: str) -> str:
        return read_text(self._path(rel))

    def _path(self, rel: str) -> str:
        return f"{self._base}/{rel}"

    def _part(self, rel: str, parse: Callable[[str], T], gaps: list[str]) -> T | None:
        """Read and parse one optional file; on failure note why and return None."""
        try:
            return parse(self._read(rel))
        except FileNotFoundError:
            gaps.append(f"/{rel} absent: {_ABSENT.get(rel, 'not provided by this kernel')}")
        except OSError as e:
            gaps.append(f"/{rel} unreadable: {e.strerror}")
        except ValueError as e:
            gaps.append(str(e))
        return None

    def _pressure(self, gaps: list[str]) -> dict[str, PressureSample]:
        if not os.path.isdir(self._path("proc/pressure")):
            gaps.append(f"/proc/pressure absent: {_ABSENT['proc/pressure']}")
            return {}
        out: dict[str, PressureSample] = {}
        for res in PSI_RESOURCES:
            sample = self._part(f"proc/pressure/{res}", procfs.parse_pressure, gaps)
            if sample is not None:
                out[res] = sample
        return out

    def _identity(self, gaps: list[str]) -> tuple[str, str]:
        """Hostname and kernel release (proc(5) /proc/sys/kernel/*, as uname(2))."""
        if self._ident is None:
            hostname = self._part("proc/sys/kernel/hostname", str.strip, gaps)
            kernel = self._part("proc/sys/kernel/osrelease", str.strip, gaps)
            if hostname is None or kernel is None:
                return hostname or "", kernel or ""
            self._ident = (hostname, kernel)
        return self._ident

    def _self_usage(self, gaps: list[str]) -> tuple[int | None, int | None]:
        """kvmtop's own CPU time and RSS (psutil; cumulative, never cpu_percent())."""
        try:
            t = self._self.cpu_times()  # /proc/self/stat
            rss = self._self.memory_info().rss  # /proc/self/statm
        except psutil.Error as e:
            gaps.append(f"own CPU/RSS unavailable: {e}")
            return None, None
        return round((t.user + t.system) * NS_PER_S), rss

    # ------------------------------------------------------------------ sysfs

    def _sysfs(self, rel: str) -> str | None:
        try:
            return self._read(rel).strip()
        except OSError:
            return None

    def _root_qdiscs(self, gaps: list[str]) -> Mapping[int, QdiscStats]:
        """Root qdisc counters and shaping rates by ifindex; empty (and a gap) when
        netlink fails."""
        if self._qdiscs is None:
            return {}
        try:
            return self._qdiscs()
        except (OSError, ValueError) as e:
            gaps.append(
                "root qdisc counters and shaping rates unavailable (rtnetlink RTM_GETQDISC, "
                f"RTM_GETTCLASS): {e}"
            )
            return {}

    def _block_devices(self, rows: list[BlockDevSample]) -> tuple[BlockDevSample, ...]:
        """Drop never-used loop/ram/zram rows; add partition and rotational flags and,
        for whole disks, the selected I/O scheduler (read every tick: it can be
        switched at run time by writing the file)."""
        out = []
        seen = set()
        for row in rows:
            if row.name.startswith(_IDLE_VIRTUAL_DISKS) and row.reads == row.writes == 0:
                continue
            seen.add(row.name)
            info = self._block_info.get(row.name)
            if info is None:
                info = self._block_info[row.name] = self._block_flags(row.name)
            sched = None
            if not info[0]:
                raw = self._sysfs(f"sys/block/{row.name.replace('/', '!')}/queue/scheduler")
                sched = selected_word(raw) if raw is not None else None
            out.append(replace(row, is_partition=info[0], rotational=info[1], scheduler=sched))
        for gone in self._block_info.keys() - seen:
            del self._block_info[gone]
        return tuple(out)

    def _block_flags(self, name: str) -> tuple[bool, bool | None]:
        # sysfs spells '/' in block names as '!' (block/genhd.c, e.g. cciss!c0d0).
        sysname = name.replace("/", "!")
        is_part = os.path.lexists(self._path(f"sys/class/block/{sysname}/partition"))
        rot = self._sysfs(f"sys/block/{sysname}/queue/rotational")
        return is_part, (rot == "1") if rot in ("0", "1") else None

    def _net_devices(
        self, rows: list[NetDevSample], qdiscs: Mapping[int, QdiscStats]
    ) -> tuple[NetDevSample, ...]:
        out = []
        for row in rows:
            base = f"sys/class/net/{row.name}/"
            kind = self._net_kind.get(row.name)
            if kind is None:
                kind = self._net_kind[row.name] = self._classify(row.name)
                raw_index = self._sysfs(base + "ifindex")
                self._ifindex[row.name] = (
                    int(raw_index) if raw_index and raw_index.isdigit() else None
                )
            index = self._ifindex.get(row.name)
            qdisc = qdiscs.get(index) if index is not None else None
            shaped_mbps, shaped_by = (
                (qdisc.shaped_bps / BITS_PER_MBIT, qdisc.kind)
                if qdisc is not None and qdisc.shaped_bps is not None
                else (None, None)
            )
            try:
                master: str | None = os.path.basename(os.readlink(self._path(base + "master")))
            except OSError:
                master = None
            speed = None
            if kind in ("physical", "bond"):
                # Mb/s; -1 or EINVAL when unknown or link down (ethtool(8)).
                raw = self._sysfs(base + "speed")
                if raw is not None and raw.lstrip("-").isdigit() and int(raw) > 0:
                    speed = int(raw)
            out.append(
                replace(
                    row,
                    kind=kind,
                    master=master,
                    speed_mbps=speed,
                    operstate=self._sysfs(base + "operstate"),
                    qdisc_drops=qdisc.drops if qdisc is not None else None,
                    qdisc_backlog_bytes=qdisc.backlog_bytes if qdisc is not None else None,
                    shaped_mbps=shaped_mbps,
                    shaped_by=shaped_by,
                )
            )
        for gone in self._net_kind.keys() - {r.name for r in rows}:
            del self._net_kind[gone]
            self._ifindex.pop(gone, None)
        return tuple(out)

    def _classify(self, name: str) -> str:
        """Interface kind from sysfs alone (no netlink, so fake trees work).

        OVS internal ports cannot be told apart here: the kernel datapath's carry only
        IFF_OPENVSWITCH in priv_flags (net/openvswitch/vport-internal_dev.c), the
        userspace datapath's are taps; the vswitch collector knows them from OVSDB.
        """
        base = f"sys/class/net/{name}/"
        d = self._path(base)
        arphrd = self._sysfs(base + "type")
        if arphrd == _ARPHRD_LOOPBACK:
            return "loopback"
        # ovs-vswitchd names the kernel datapath, and so its local port, "ovs-system".
        if name == "ovs-system":
            return "ovs"
        if os.path.isdir(d + "bridge"):  # net/bridge/br_sysfs_br.c
            return "bridge"
        if os.path.isdir(d + "bonding"):  # drivers/net/bonding/bond_sysfs.c
            return "bond"
        if os.path.lexists(d + "tun_flags"):  # drivers/net/tun.c, tun and tap alike
            return "tap"
        if os.path.lexists(d + "device"):  # a bus device behind it: a real NIC
            return "physical"
        # A veth is an Ethernet device whose iflink is its peer's ifindex
        # (drivers/net/veth.c veth_get_iflink), with no DEVTYPE in uevent (vxlan,
        # geneve, wlan, vlan set one) and, unlike vlan/macvlan/ipvlan, no lower_*
        # adjacency link (net/core/dev.c netdev_upper_dev_link).
        iflink = self._sysfs(base + "iflink")
        if (
            arphrd == _ARPHRD_ETHER
            and iflink not in (None, "0", self._sysfs(base + "ifindex"))
            and "DEVTYPE=" not in (self._sysfs(base + "uevent") or "")
            and not any(n.startswith("lower_") for n in _listdir(d))
        ):
            return "veth"
        return "virtual"


def _listdir(d: str) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []
