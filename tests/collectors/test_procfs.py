"""String-only tests of the procfs parsers.

Inputs are lines captured on the project's machine (kernel 6.18, see
tests/fixtures/fs/host-idle/README.md). Older kernel layouts are the same real rows
cut to the column count those kernels print. /proc/schedstat does not exist on that
machine (no CONFIG_SCHEDSTATS): its sample is the Xeon E5-2690 v2 excerpt posted to
LKML ("What about /proc/schedstat?", version 15).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from kvmtop.collectors import procfs
from kvmtop.model.sample import (
    BlockDevSample,
    CpuTimes,
    NetDevSample,
    PressureSample,
    SoftnetSample,
)

STAT = (
    "cpu  12077 0 3757 76218 570 0 164 269 0 0\n"
    "cpu0 3417 0 1513 41358 53 0 50 132 0 0\n"
    "cpu1 8660 0 2243 34860 516 0 113 136 0 0\n"
    "intr 155122 0 0 0\n"
    "ctxt 265959\n"
)
SCHEDSTAT = (
    "version 15\n"
    "timestamp 4486170100\n"
    "cpu0 0 0 0 0 0 0 59501267037720 16902762382193 1319621004\n"
    "domain0 00,00100001 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    "cpu1 0 0 0 0 0 0 56045879920164 16758983055410 1318489275\n"
    "domain0 00,00200002 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
)
PSI_IO = (
    "some avg10=0.03 avg60=0.16 avg300=0.40 total=4772474\n"
    "full avg10=0.03 avg60=0.15 avg300=0.37 total=4459534\n"
)
VDA_ROW = (
    " 254       0 vda 39450 8353 2933978 14627 11605 20405 2174712 13542 0 9656 30374"
    " 6082 106 194352 1433 1668 770"
)
NET_DEV = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets"
    " errs drop fifo colls carrier compressed\n"
    "    lo:    3293      31    0    0    0     0          0         0     3293      31"
    "    0    0    0     0       0          0\n"
    "  eth0: 160719185    4996    0    0    0     0          0         0   253243    2990"
    "    0    0    0     0       0          0\n"
)
SOFTNET_ROW1 = (
    "00001399 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000"
    " 00000000 00000000 00000000 00000001 00000000 00000000"
)


def _first_cut(line: str, n: int) -> str:
    return " ".join(line.split()[:n])


def _cpu(**kw: int) -> CpuTimes:
    base = dict.fromkeys(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), 0)
    base.update(kw)
    return CpuTimes(**{f"{k}_ns": v for k, v in base.items()})


def _vda(**kw: Any) -> BlockDevSample:
    fields: dict[str, Any] = dict(
        name="vda",
        reads=39450,
        read_bytes=2933978 * 512,
        read_time_ns=14627 * 10**6,
        writes=11605,
        write_bytes=2174712 * 512,
        write_time_ns=13542 * 10**6,
        in_flight=0,
        io_ticks_ns=9656 * 10**6,
        weighted_ns=30374 * 10**6,
        flushes=1668,
        flush_time_ns=770 * 10**6,
    )
    fields.update(kw)
    return BlockDevSample(**fields)


Parser = Callable[[str], object]

GOOD: list[tuple[str, Parser, str, object]] = [
    (
        "stat 6.18",
        partial(procfs.parse_proc_stat, user_hz=100),
        STAT,
        (
            _cpu(
                user=120_770_000_000,
                system=37_570_000_000,
                idle=762_180_000_000,
                iowait=5_700_000_000,
                softirq=1_640_000_000,
                steal=2_690_000_000,
            ),
            2,
        ),
    ),
    (
        "stat 2.6.11 (8 values) and USER_HZ 1024",
        partial(procfs.parse_proc_stat, user_hz=1024),
        "cpu  1024 0 2048 0 0 0 0 1\ncpu0 1024 0 2048 0 0 0 0 1\n",
        (_cpu(user=10**9, system=2 * 10**9, steal=10**9 // 1024), 1),
    ),
    (
        "stat with an appended future column",
        partial(procfs.parse_proc_stat, user_hz=100),
        "cpu  1 0 0 0 0 0 0 0 0 0 7\n",
        (_cpu(user=10_000_000), 0),
    ),
    (
        "schedstat v15",
        procfs.parse_schedstat,
        SCHEDSTAT,
        (59501267037720 + 56045879920164, 16902762382193 + 16758983055410),
    ),
    (
        "schedstat v17 cpu lines unchanged",
        procfs.parse_schedstat,
        SCHEDSTAT.replace("version 15", "version 17"),
        (59501267037720 + 56045879920164, 16902762382193 + 16758983055410),
    ),
    (
        "pressure io",
        procfs.parse_pressure,
        PSI_IO,
        PressureSample(4772474000, 0.03, 0.16, 4459534000, 0.03, 0.15),
    ),
    (
        "pressure cpu before 5.13 (no full line)",
        procfs.parse_pressure,
        PSI_IO.splitlines()[0],
        PressureSample(4772474000, 0.03, 0.16),
    ),
    (
        "pressure with an unknown key",
        procfs.parse_pressure,
        "some avg10=0.00 avg60=0.00 avg300=0.00 avg900=1.0 total=0\n",
        PressureSample(0, 0.0, 0.0),
    ),
    (
        "meminfo kB lines only",
        procfs.parse_meminfo,
        "MemTotal:       24683656 kB\nMemFree:        23795672 kB\nHugePages_Total:       0\n",
        {"MemTotal": 24683656 * 1024, "MemFree": 23795672 * 1024},
    ),
    (
        "vmstat selected keys",
        procfs.parse_vmstat,
        "nr_free_pages 947881\npswpin 0\npswpout 0\npgfault 2881082\npgmajfault 1375\n",
        {"pswpin": 0, "pswpout": 0, "pgfault": 2881082, "pgmajfault": 1375},
    ),
    ("diskstats 5.5+ (20 fields)", procfs.parse_diskstats, VDA_ROW + "\n", [_vda()]),
    (
        "diskstats 4.18 (18 fields, discard)",
        procfs.parse_diskstats,
        _first_cut(VDA_ROW, 18),
        [_vda(flushes=None, flush_time_ns=None)],
    ),
    (
        "diskstats before 4.18 (14 fields)",
        procfs.parse_diskstats,
        _first_cut(VDA_ROW, 14),
        [_vda(flushes=None, flush_time_ns=None)],
    ),
    (
        "net/dev",
        procfs.parse_net_dev,
        NET_DEV,
        [
            NetDevSample("lo", 3293, 31, 0, 0, 3293, 31, 0, 0),
            NetDevSample("eth0", 160719185, 4996, 0, 0, 253243, 2990, 0, 0),
        ],
    ),
    (
        "net/dev counter touching the colon",
        procfs.parse_net_dev,
        "eth0:160719185 4996 0 1 2 0 0 0 253243 2990 0 3 0 0 0 0\n",
        [NetDevSample("eth0", 160719185, 4996, 0, 1, 253243, 2990, 0, 3, rx_fifo=2)],
    ),
    (
        "softnet 6.4+ (15 columns, cpu id in column 13)",
        procfs.parse_softnet_stat,
        SOFTNET_ROW1,
        [SoftnetSample(cpu=1, processed=0x1399, dropped=0, time_squeeze=0)],
    ),
    (
        "softnet 5.10 (13 columns, cpu id last)",
        procfs.parse_softnet_stat,
        _first_cut(SOFTNET_ROW1, 13),
        [SoftnetSample(cpu=1, processed=0x1399, dropped=0, time_squeeze=0)],
    ),
    (
        "softnet before 5.10 (11 columns, row number)",
        procfs.parse_softnet_stat,
        _first_cut(SOFTNET_ROW1, 11) + "\n" + _first_cut(SOFTNET_ROW1, 11),
        [
            SoftnetSample(cpu=0, processed=0x1399, dropped=0, time_squeeze=0),
            SoftnetSample(cpu=1, processed=0x1399, dropped=0, time_squeeze=0),
        ],
    ),
    ("loadavg", procfs.parse_loadavg, "0.46 0.27 0.13 1/90 9871\n", (0.46, 0.27, 0.13)),
    ("task schedstat", procfs.parse_task_schedstat, "171115608 0 3\n", (171115608, 0, 3)),
    ("vcpu comm KVM", procfs.parse_vcpu_comm, "CPU 3/KVM\n", (3, "kvm")),
    ("vcpu comm TCG", procfs.parse_vcpu_comm, "CPU 0/TCG\n", (0, "tcg")),
    ("round-robin TCG thread", procfs.parse_vcpu_comm, "ALL CPUs/TCG\n", None),
    ("other QEMU thread", procfs.parse_vcpu_comm, "qemu-system-x86\n", None),
    ("comm lookalike", procfs.parse_vcpu_comm, "CPU 3/KVMX\n", None),
]

BAD: list[tuple[str, Parser, str, str]] = [
    ("stat empty", partial(procfs.parse_proc_stat, user_hz=100), "", "no aggregate 'cpu'"),
    ("stat short", partial(procfs.parse_proc_stat, user_hz=100), "cpu 1 2 3\n", ">= 8"),
    (
        "stat text",
        partial(procfs.parse_proc_stat, user_hz=100),
        "cpu a b c d e f g h\n",
        "non-numeric",
    ),
    ("schedstat old", procfs.parse_schedstat, "version 14\ncpu0 1\n", "unsupported version 14"),
    ("schedstat no version", procfs.parse_schedstat, SCHEDSTAT.split("\n", 1)[1], "no version"),
    ("schedstat no cpu", procfs.parse_schedstat, "version 15\ntimestamp 1\n", "no cpu lines"),
    ("schedstat short cpu", procfs.parse_schedstat, "version 15\ncpu0 1 2\n", "need 9"),
    ("pressure empty", procfs.parse_pressure, "", "no 'some'"),
    ("pressure no total", procfs.parse_pressure, "some avg10=0.00 avg60=0.00\n", "malformed"),
    ("pressure text", procfs.parse_pressure, "some avg10=x avg60=0 total=0\n", "malformed"),
    ("meminfo garbage", procfs.parse_meminfo, "garbage\n", "malformed"),
    ("meminfo no kB", procfs.parse_meminfo, "HugePages_Total:       0\n", "no 'kB'"),
    ("meminfo text", procfs.parse_meminfo, "MemTotal: lots kB\n", "non-numeric"),
    ("vmstat garbage", procfs.parse_vmstat, "pgfault\n", "malformed"),
    ("vmstat text", procfs.parse_vmstat, "pgfault many\n", "non-numeric"),
    ("diskstats short", procfs.parse_diskstats, _first_cut(VDA_ROW, 13), ">= 14"),
    ("diskstats text", procfs.parse_diskstats, VDA_ROW.replace("39450", "x"), "non-numeric"),
    ("net/dev no colon", procfs.parse_net_dev, "eth0 1 2 3\n", "malformed"),
    ("net/dev short", procfs.parse_net_dev, "eth0: 1 2 3\n", "malformed"),
    ("softnet short", procfs.parse_softnet_stat, "0000000a 00000000\n", "2 columns"),
    ("softnet not hex", procfs.parse_softnet_stat, "0000000g 0 0\n", "non-numeric"),
    ("loadavg empty", procfs.parse_loadavg, "", "malformed"),
    ("task schedstat short", procfs.parse_task_schedstat, "1 2\n", "expected 3"),
    ("task schedstat text", procfs.parse_task_schedstat, "a b c\n", "non-numeric"),
]


@pytest.mark.parametrize(
    ("parse", "text", "expected"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD]
)
def test_parses(parse: Parser, text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("parse", "text", "match"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_rejects_garbage(parse: Parser, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse(text)


def test_stat_counts_online_cpus_only() -> None:
    """ncpu is the number of cpuN lines, the CPUs online when the file was read."""
    _, ncpu = procfs.parse_proc_stat(STAT.replace("cpu1 ", "intr_x "), 100)
    assert ncpu == 1


def test_vmstat_custom_keys() -> None:
    assert procfs.parse_vmstat("pgfault 5\nnr_free_pages 7\n", {"nr_free_pages"}) == {
        "nr_free_pages": 7
    }
