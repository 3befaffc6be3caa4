"""Pure parsers for the procfs files the host and sched collectors read.

Layer: collectors, but without I/O: every function takes the text of one file and
returns values in kvmtop's units (ns, bytes). Each tolerates fields appended by newer
kernels and raises `ValueError` with a message naming the file on malformed input.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from kvmtop.model.sample import (
    BlockDevSample,
    CpuTimes,
    NetDevSample,
    PressureSample,
    SoftnetSample,
)
from kvmtop.model.units import NS_PER_MS, NS_PER_S, NS_PER_US

SECTOR_BYTES = 512
"""/proc/diskstats counts 512-byte sectors whatever the device's sector size."""

VMSTAT_KEYS = frozenset({"pgfault", "pgmajfault", "pswpin", "pswpout", "oom_kill"})
"""The /proc/vmstat counters kvmtop keeps (`oom_kill` exists since Linux 4.13)."""

SCHEDSTAT_MIN_VERSION = 15
"""Oldest /proc/schedstat layout understood (Documentation/scheduler/sched-stats.rst)."""


def _ints(fields: list[str], what: str, base: int = 10) -> list[int]:
    try:
        return [int(f, base) for f in fields]
    except ValueError:
        raise ValueError(f"{what}: non-numeric field in {' '.join(fields)!r}") from None


def _int(field: str, what: str) -> int:
    try:
        return int(field)
    except ValueError:
        raise ValueError(f"{what}: non-numeric field in {field!r}") from None


def parse_proc_stat(text: str, user_hz: int) -> tuple[CpuTimes, int]:
    """Parse the aggregate `cpu` line of /proc/stat and count the `cpuN` lines.

    Args:
        text: content of /proc/stat.
        user_hz: the tick rate of the file's values (`os.sysconf("SC_CLK_TCK")`).

    Returns:
        The host CPU times in ns and the number of online CPUs.

    Raises:
        ValueError: no `cpu` line, fewer than 8 values, or non-numeric values.
    """
    times: CpuTimes | None = None
    ncpu = 0
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        label, *fields = line.split()
        if label != "cpu":
            ncpu += 1
            continue
        # proc(5): user nice system idle iowait irq softirq steal guest guest_nice, in
        # USER_HZ ticks; steal since 2.6.11, guest 2.6.24, guest_nice 2.6.33.
        if len(fields) < 8:
            raise ValueError(f"/proc/stat: cpu line has {len(fields)} values, expected >= 8")
        ns = [v * NS_PER_S // user_hz for v in _ints(fields[:10], "/proc/stat")]
        times = CpuTimes(*ns)
    if times is None:
        raise ValueError("/proc/stat: no aggregate 'cpu' line")
    return times, ncpu


def parse_schedstat(text: str) -> tuple[int, int]:
    """Sum run time and run-queue wait over the `cpuN` lines of /proc/schedstat.

    Field 7 of a cpu line is the time tasks spent running on it and field 8 the time
    they spent waiting on its run queue, both ns in versions 15 and later
    (Documentation/scheduler/sched-stats.rst; the file needs CONFIG_SCHEDSTATS).

    Returns:
        (run_ns, delay_ns) summed over CPUs.

    Raises:
        ValueError: missing or too old `version`, no cpu line, or malformed values.
    """
    version: int | None = None
    run_ns = delay_ns = 0
    cpus = 0
    for line in text.splitlines():
        label, _, rest = line.partition(" ")
        if label == "version":
            version = _int(rest, "/proc/schedstat version")
            if version < SCHEDSTAT_MIN_VERSION:
                raise ValueError(f"/proc/schedstat: unsupported version {version}")
        elif label.startswith("cpu"):
            fields = rest.split()
            if len(fields) < 9:
                raise ValueError(f"/proc/schedstat: {label} has {len(fields)} fields, need 9")
            run, delay = _ints(fields[6:8], "/proc/schedstat")
            run_ns += run
            delay_ns += delay
            cpus += 1
    if version is None:
        raise ValueError("/proc/schedstat: no version line")
    if cpus == 0:
        raise ValueError("/proc/schedstat: no cpu lines")
    return run_ns, delay_ns


def parse_pressure(text: str) -> PressureSample:
    """Parse one /proc/pressure/{cpu,memory,io} file (Documentation/accounting/psi.rst).

    `total=` is µs and becomes ns. The `full` line is optional: /proc/pressure/cpu has
    it only since Linux 5.13.

    Raises:
        ValueError: no `some` line, or a malformed line.
    """
    parsed: dict[str, tuple[float, float, int]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind not in ("some", "full"):
            continue
        values = {k: v for k, _, v in (p.partition("=") for p in rest.split())}
        try:
            parsed[kind] = (
                float(values["avg10"]),
                float(values["avg60"]),
                int(values["total"]) * NS_PER_US,
            )
        except (KeyError, ValueError):
            raise ValueError(f"/proc/pressure: malformed line {line!r}") from None
    if "some" not in parsed:
        raise ValueError("/proc/pressure: no 'some' line")
    some10, some60, some_total = parsed["some"]
    full = parsed.get("full")
    return PressureSample(
        some_total_ns=some_total,
        some_avg10=some10,
        some_avg60=some60,
        full_total_ns=full[2] if full else None,
        full_avg10=full[0] if full else None,
        full_avg60=full[1] if full else None,
    )


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse /proc/meminfo into bytes for every `kB` line.

    Lines without a unit (HugePages_Total and other page counts) are left out so every
    value returned is bytes.

    Raises:
        ValueError: a malformed line, or no `kB` line at all.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or not fields:
            raise ValueError(f"/proc/meminfo: malformed line {line!r}")
        if len(fields) == 2 and fields[1] == "kB":
            out[key] = _int(fields[0], "/proc/meminfo") * 1024
    if not out:
        raise ValueError("/proc/meminfo: no 'kB' values")
    return out


def parse_vmstat(text: str, keys: Collection[str] = VMSTAT_KEYS) -> dict[str, int]:
    """Parse the selected counters of /proc/vmstat; keys the kernel lacks are absent.

    Raises:
        ValueError: a line that is not `name value`, or a non-numeric selected value.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"/proc/vmstat: malformed line {line!r}")
        if fields[0] in keys:
            out[fields[0]] = _int(fields[1], "/proc/vmstat")
    return out


def parse_diskstats(text: str) -> list[BlockDevSample]:
    """Parse /proc/diskstats (Documentation/admin-guide/iostats.rst).

    Rows have 14 fields, 18 since Linux 4.18 (discard) and 20 since 5.5 (flush).
    Sectors become bytes, milliseconds become ns. `rotational` and `is_partition` are
    left at their defaults: they come from sysfs.

    Raises:
        ValueError: a row with fewer than 14 fields or non-numeric values.
    """
    out: list[BlockDevSample] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 14:
            raise ValueError(f"/proc/diskstats: row has {len(fields)} fields, expected >= 14")
        v = _ints(fields[3:], "/proc/diskstats")
        flushes = len(v) >= 17
        out.append(
            BlockDevSample(
                name=fields[2],
                reads=v[0],
                read_bytes=v[2] * SECTOR_BYTES,
                read_time_ns=v[3] * NS_PER_MS,
                writes=v[4],
                write_bytes=v[6] * SECTOR_BYTES,
                write_time_ns=v[7] * NS_PER_MS,
                in_flight=v[8],
                io_ticks_ns=v[9] * NS_PER_MS,
                weighted_ns=v[10] * NS_PER_MS,
                flushes=v[15] if flushes else None,
                flush_time_ns=v[16] * NS_PER_MS if flushes else None,
            )
        )
    return out


def parse_net_dev(text: str) -> list[NetDevSample]:
    """Parse /proc/net/dev (net/core/net-procfs.c dev_seq_printf_stats).

    Each row is `name:` then 8 receive and 8 transmit counters. Interface names cannot
    contain ':' (net/core/dev.c dev_valid_name), and wide counters may touch the colon.
    `kind`, `master`, `speed_mbps` and `operstate` come from sysfs and stay default.

    Raises:
        ValueError: a row without a colon, with fewer than 16 counters, or non-numeric.
    """
    out: list[NetDevSample] = []
    for line in text.splitlines():
        if "|" in line or not line.strip():
            continue  # the two header lines
        name, sep, rest = line.partition(":")
        v = _ints(rest.split(), "/proc/net/dev")
        if not sep or len(v) < 16:
            raise ValueError(f"/proc/net/dev: malformed row {line!r}")
        out.append(
            NetDevSample(
                name=name.strip(),
                rx_bytes=v[0],
                rx_packets=v[1],
                rx_errs=v[2],
                rx_drop=v[3],
                rx_fifo=v[4],
                tx_bytes=v[8],
                tx_packets=v[9],
                tx_errs=v[10],
                tx_drop=v[11],
            )
        )
    return out


def parse_softnet_stat(text: str) -> list[SoftnetSample]:
    """Parse /proc/net/softnet_stat: one hex row per online CPU.

    Columns 1-3 are processed, dropped (backlog full) and time_squeeze. Since Linux
    5.10 column 13 is the CPU id (rows skip offline CPUs, commit 7d58e6555870); 6.4
    appended two queue-length columns after it (commit 59da2d7b0e99), so the id is
    not always the last column. Older kernels have no id: the row number is used.

    Raises:
        ValueError: a row with fewer than 3 columns or non-hex values.
    """
    out: list[SoftnetSample] = []
    for row, line in enumerate(text.splitlines()):
        fields = line.split()
        if len(fields) < 3:
            raise ValueError(f"/proc/net/softnet_stat: row has {len(fields)} columns")
        v = _ints(fields, "/proc/net/softnet_stat", 16)
        cpu = v[12] if len(v) >= 13 else row
        out.append(SoftnetSample(cpu=cpu, processed=v[0], dropped=v[1], time_squeeze=v[2]))
    return out


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """Parse the three load averages from /proc/loadavg (proc(5)).

    Raises:
        ValueError: fewer than 3 fields or non-numeric values.
    """
    fields = text.split()
    try:
        return float(fields[0]), float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        raise ValueError(f"/proc/loadavg: malformed {text.strip()!r}") from None


def parse_task_schedstat(text: str) -> tuple[int, int, int]:
    """Parse /proc/PID/task/TID/schedstat: run ns, run-queue wait ns, timeslices.

    The wait (field 2) is what KVM reports to the guest as steal
    (Documentation/scheduler/sched-stats.rst; needs CONFIG_SCHED_INFO).

    Raises:
        ValueError: fewer than 3 fields or non-numeric values.
    """
    fields = text.split()
    if len(fields) < 3:
        raise ValueError(f"schedstat: {len(fields)} fields, expected 3")
    run, wait, slices = _ints(fields[:3], "schedstat")
    return run, wait, slices


# QEMU names vCPU threads "CPU %d/KVM" (accel/kvm/kvm-accel-ops.c) and, with
# multi-threaded TCG, "CPU %d/TCG" (accel/tcg/tcg-accel-ops-mttcg.c) when
# -name debug-threads=on (libvirt sets it). Round-robin TCG runs every vCPU in one
# thread named "ALL CPUs/TCG", which maps to no single vCPU.
_VCPU_COMM = re.compile(r"CPU (\d+)/(KVM|TCG)")


def parse_vcpu_comm(text: str) -> tuple[int, str] | None:
    """Recognise a QEMU vCPU thread from its `comm`.

    Returns:
        (vCPU index, "kvm" or "tcg"), or None for any other thread.
    """
    m = _VCPU_COMM.fullmatch(text.strip())
    if m is None:
        return None
    return int(m.group(1)), m.group(2).lower()
