"""HostCollector against trees captured from the project's machine.

tests/fixtures/fs/host-idle is the idle machine (kernel 6.18, 2 CPUs, no
/proc/schedstat, PSI present). Tests that need another state copy it into tmp_path
and change only what the scenario names.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

import pytest

from kvmtop.collectors import host as host_mod
from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.host import HostCollector, read_text
from kvmtop.model.sample import PressureSample

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fs"
IDLE = FIXTURES / "host-idle"
LAB = FIXTURES / "lab-running"
USER_HZ = os.sysconf("SC_CLK_TCK")

# /proc/schedstat from the LKML post quoted in test_procfs (this machine has none).
SCHEDSTAT = (
    "version 15\n"
    "timestamp 4486170100\n"
    "cpu0 0 0 0 0 0 0 59501267037720 16902762382193 1319621004\n"
    "cpu1 0 0 0 0 0 0 56045879920164 16758983055410 1318489275\n"
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private, mutable copy of the host-idle capture."""
    dest = tmp_path / "root"
    shutil.copytree(IDLE, dest, symlinks=True)
    return dest


def collector(root: Path) -> HostCollector:
    return HostCollector(root, clock=lambda: 42)


def test_idle_host() -> None:
    s = collector(IDLE).collect()
    assert (s.mono_ns, s.hostname, s.kernel, s.ncpu) == (42, "vm", "6.18.44-fc-v782", 2)
    assert s.cpu is not None
    assert s.cpu.user_ns == 12077 * 10**9 // USER_HZ
    assert s.cpu.steal_ns == 269 * 10**9 // USER_HZ  # this host is itself a guest
    assert s.run_delay_ns is None and s.run_time_ns is None
    assert s.mem_total_bytes == 24683656 * 1024
    assert s.swap_total_bytes == 0
    assert s.vmstat == {
        "pswpin": 0,
        "pswpout": 0,
        "pgfault": 2881082,
        "pgmajfault": 1375,
        "oom_kill": 0,
    }
    assert set(s.pressure) == {"cpu", "memory", "io"}
    assert s.pressure["io"] == PressureSample(4772474000, 0.03, 0.16, 4459534000, 0.03, 0.15)
    assert s.loadavg == (0.46, 0.27, 0.13)
    assert [(c.cpu, c.processed) for c in s.softnet] == [(0, 0x0A), (1, 0x1399)]
    assert s.self_cpu_ns is not None and s.self_cpu_ns > 0
    assert s.self_rss_bytes is not None and s.self_rss_bytes > 0


def test_idle_block_devices() -> None:
    """Unused loop0-7 and zram0 are dropped; vda (virtio-blk) says rotational=1 here."""
    (vda,) = collector(IDLE).collect().blockdevs
    assert (vda.name, vda.reads, vda.flushes, vda.is_partition) == ("vda", 39450, 1668, False)
    assert vda.rotational is True


def test_idle_net_devices() -> None:
    nets = {n.name: n for n in collector(IDLE).collect().netdevs}
    kinds = {name: n.kind for name, n in nets.items()}
    assert kinds == {"lo": "loopback", "ifb0": "virtual", "ifb1": "virtual", "eth0": "physical"}
    eth0 = nets["eth0"]
    assert (eth0.rx_bytes, eth0.operstate, eth0.master) == (160719185, "up", None)
    assert eth0.speed_mbps is None  # virtio-net reports -1
    assert nets["ifb0"].operstate == "down"


def test_probe_lists_gaps() -> None:
    p = collector(IDLE).probe()
    assert p.available and p.name == "host"
    assert p.reason == (
        "/proc/schedstat absent: kernel built without CONFIG_SCHEDSTATS; "
        "host run-queue delay unavailable"
    )
    assert p.detail["kernel"] == "6.18.44-fc-v782"


def test_schedstat_present(tree: Path) -> None:
    (tree / "proc/schedstat").write_text(SCHEDSTAT)
    c = collector(tree)
    s = c.collect()
    assert s.run_time_ns == 59501267037720 + 56045879920164
    assert s.run_delay_ns == 16902762382193 + 16758983055410
    assert c.probe().reason is None


def test_psi_absent(tree: Path) -> None:
    shutil.rmtree(tree / "proc/pressure")
    c = collector(tree)
    assert c.collect().pressure == {}
    reason = c.probe().reason or ""
    assert "/proc/pressure absent: kernel without PSI" in reason
    assert "/proc/schedstat absent" in reason


def test_cpu_pressure_without_full(tree: Path) -> None:
    """Before Linux 5.13 /proc/pressure/cpu has only the `some` line."""
    cpu = tree / "proc/pressure/cpu"
    cpu.write_text(cpu.read_text().splitlines()[0] + "\n")
    p = collector(tree).collect().pressure["cpu"]
    assert p.some_total_ns == 7769054000 and p.full_total_ns is None


@pytest.mark.parametrize("damage", ["delete", "directory", "garbage"])
def test_proc_stat_unusable_fails_collection(tree: Path, damage: str) -> None:
    stat = tree / "proc/stat"
    stat.unlink()
    if damage == "directory":
        stat.mkdir()
    elif damage == "garbage":
        stat.write_text("garbage\n")
    c = collector(tree)
    with pytest.raises(CollectorError, match="/proc/stat"):
        c.collect()
    p = c.probe()
    assert not p.available and p.reason and "/proc/stat" in p.reason


def test_unreadable_file_gives_none_and_reason(tree: Path) -> None:
    meminfo = tree / "proc/meminfo"
    meminfo.unlink()
    meminfo.mkdir()  # as root, chmod cannot make a file unreadable
    c = collector(tree)
    s = c.collect()
    assert s.mem_total_bytes is None and s.mem_available_bytes is None
    assert "/proc/meminfo unreadable: Is a directory" in c.last_gaps


def test_garbage_file_gives_empty_and_reason(tree: Path) -> None:
    (tree / "proc/diskstats").write_text("garbage\n")
    (tree / "proc/loadavg").write_text("")
    c = collector(tree)
    s = c.collect()
    assert s.blockdevs == () and s.loadavg is None
    assert any(g.startswith("/proc/diskstats: row has 1 fields") for g in c.last_gaps)
    assert any(g.startswith("/proc/loadavg: malformed") for g in c.last_gaps)
    assert s.cpu is not None  # the rest still arrives


def test_counters_pass_through_a_reset(tree: Path) -> None:
    """Raw counters are returned as read; a reset is the model's business."""
    c = collector(tree)
    before = c.collect()
    stat = tree / "proc/stat"
    stat.write_text(stat.read_text().replace("cpu  12077 ", "cpu  5 ", 1))
    after = c.collect()
    assert before.cpu and after.cpu
    assert after.cpu.user_ns == 5 * 10**9 // USER_HZ < before.cpu.user_ns


def test_partition_and_used_loop_are_kept(tree: Path) -> None:
    (tree / "sys/class/block/vda").mkdir(parents=True)
    (tree / "sys/class/block/vda/partition").write_text("1\n")
    disk = tree / "proc/diskstats"
    disk.write_text(disk.read_text().replace(" loop1 0 0 0 0 ", " loop1 7 0 56 1 ", 1))
    devs = {d.name: d for d in collector(tree).collect().blockdevs}
    assert set(devs) == {"vda", "loop1"}
    assert devs["vda"].is_partition and not devs["loop1"].is_partition
    assert devs["loop1"].reads == 7 and devs["loop1"].rotational is False


@pytest.mark.parametrize(
    ("marker", "kind"),
    [("bridge", "bridge"), ("bonding", "bond"), ("tun_flags", "tap")],
)
def test_interface_kind_markers(tree: Path, marker: str, kind: str) -> None:
    """The sysfs entry each driver creates decides the kind (ifb0 is otherwise virtual)."""
    path = tree / "sys/class/net/ifb0" / marker
    if marker == "tun_flags":
        path.write_text("0x1002\n")
    else:
        path.mkdir()
    nets = {n.name: n.kind for n in collector(tree).collect().netdevs}
    assert nets["ifb0"] == kind


def test_master_and_bond_speed(tree: Path) -> None:
    base = tree / "sys/class/net"
    (base / "ifb0/bonding").mkdir()
    (base / "ifb0/speed").write_text("10000\n")
    os.symlink("../ifb0", base / "eth0/master")
    nets = {n.name: n for n in collector(tree).collect().netdevs}
    assert nets["eth0"].master == "ifb0"
    assert nets["ifb0"].speed_mbps == 10000


def test_every_file_read_is_in_paths_read(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the capture script copies (paths_read) covers what collect() opens."""
    c = collector(tree)
    (tree / "proc/schedstat").write_text(SCHEDSTAT)
    seen: list[str] = []

    def spy(path: Path) -> str:
        seen.append(os.path.relpath(path, tree))
        return read_text(path)

    monkeypatch.setattr(host_mod, "read_text", spy)
    c.collect()
    patterns = c.paths_read()
    assert seen
    missing = [p for p in seen if not any(fnmatch.fnmatchcase(p, g) for g in patterns)]
    assert missing == []


def test_lab_host_interfaces() -> None:
    """The running lab: Linux bridge, taps, veth uplinks, OVS with the userspace datapath."""
    nets = {n.name: n for n in collector(LAB).collect().netdevs}
    assert nets["labbr0"].kind == "bridge"
    assert (nets["labup0"].kind, nets["labup0"].master) == ("veth", "labbr0")
    assert (nets["labov0"].kind, nets["labov0"].master) == ("veth", None)
    bridged = [f"vnet{i}" for i in range(8)]
    assert all((nets[t].kind, nets[t].master) == ("tap", "labbr0") for t in bridged)
    # The OVS guest's tap and OVS's own ports: userspace datapath, no kernel master.
    for name in ("vnet8", "labovs0", "ovs-netdev"):
        assert (nets[name].kind, nets[name].master) == ("tap", None)
    assert nets["vnet2"].tx_drop == 27289  # lab-net's RX drops (guest POV) at capture
    assert nets["eth0"].kind == "physical"
