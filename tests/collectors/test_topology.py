"""TopologyCollector: guest disk → host disk, vCPU affinity, VM cgroup throttling.

Real captures from the project's machine:
- fs/lab-topology: the running lab (images on the root filesystem = whole disk vda,
  cgroup v1 cpu hierarchy, libvirt without systemd). The image files are not in the
  capture, so `stat` is replaced by one returning the st_dev the README records.
- fs/loop-partition: a real partition (loop0p1, 259:0) holding an ext4 filesystem.

This machine has no device-mapper, no md and no bonding driver, and its cgroup CPU
controller is v1. The dm-over-md, btrfs and systemd/cgroup-v2 cases are therefore
fake trees that mirror the kernel's documented layouts: Documentation/ABI/stable/
sysfs-block (`/sys/block/<disk>/<part>/`, `dev`, `partition`, `slaves/`),
Documentation/admin-guide/cgroup-v2.rst (cpu.stat `throttled_usec`) and libvirt's
systemd layout (`machine.slice/machine-qemu\\x2d<id>\\x2d<name>.scope/libvirt/...`).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmtop.collectors.base import turn
from kvmtop.collectors.cgroups import QUIET_EVERY, vm_cgroup_dir
from kvmtop.collectors.mountinfo import parse_mountinfo
from kvmtop.collectors.sched import SchedCollector
from kvmtop.collectors.topology import (
    AFFINITY_EVERY,
    BlockTopology,
    TopologyCollector,
    parse_cpu_list,
    status_affinity,
)
from kvmtop.model.sample import DiskSample, GuestSample, VcpuSample

FS = Path(__file__).resolve().parents[1] / "fixtures" / "fs"
LAB = FS / "lab-topology"
LOOP = FS / "loop-partition"
LAB_DISKS = "/var/lib/kvmtop-lab/disks"


def fake_stat(table: dict[str, tuple[int, int, int]]) -> Callable[[str], os.stat_result]:
    """`os.stat` over a table path → (st_mode, st_dev, st_rdev); paths are absolute
    after the root prefix is removed by the caller's table keys."""

    def _stat(path: str) -> os.stat_result:
        for suffix, (mode, dev, rdev) in table.items():
            if path.endswith(suffix):
                return os.stat_result((mode, 0, dev, 1, 0, 0, 0, 0, 0, 0), {"st_rdev": rdev})
        raise FileNotFoundError(2, "No such file or directory", path)

    return _stat


FILE = stat.S_IFREG | 0o644
BLOCK = stat.S_IFBLK | 0o660


def lab_pids() -> dict[str, int]:
    """Guest name → QEMU pid, from the capture's README."""
    text = (LAB / "README.md").read_text()
    return {m[2]: int(m[1]) for m in re.finditer(r"^- pid (\d+): (\S+)$", text, re.M)}


def lab_guest(name: str, pid: int, dom_id: int = 4) -> GuestSample:
    """A running lab guest with its disk source as in the lab's domain XML."""
    if name.startswith("lab-probe-"):
        path = f"/var/lib/kvmtop-lab/images/{name.removeprefix('lab-')}.img"
    else:
        path = f"{LAB_DISKS}/{name}.qcow2"
    return GuestSample(
        uuid=f"uuid-{name}",
        name=name,
        dom_id=dom_id,
        state="running",
        pid=pid,
        vcpus_current=1,
        vcpus=(VcpuSample(0),),
        disks=(DiskSample("vda", path=path),),
    )


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-1\n", (0, 1)), ("0,2-3,8", (0, 2, 3, 8)), ("5", (5,)), ("", ())],
)
def test_parse_cpu_list(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("bad", ["3-1", "a", "1-x"])
def test_parse_cpu_list_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_list(bad)


def test_status_affinity_from_the_lab() -> None:
    pid = lab_pids()["lab-idle"]
    status = next((LAB / f"proc/{pid}/task").iterdir()) / "status"
    assert status_affinity(status.read_text()) == (0, 1)
    assert status_affinity("Name:\tx\nState:\tR\n") is None


def test_mountinfo_escapes_and_cgroup_mounts() -> None:
    mounts = parse_mountinfo((LAB / "proc/self/mountinfo").read_text())
    cpu = next(m for m in mounts if m.fstype == "cgroup" and "cpu" in m.options)
    assert (cpu.mountpoint, cpu.root) == ("/sys/fs/cgroup/cpu", "/")
    assert next(m for m in mounts if m.fstype == "cgroup2").mountpoint == "/sys/fs/cgroup/unified"
    line = r"40 1 0:45 / /mnt/vm\040images rw - btrfs /dev/vdd1 rw,space_cache=v2"
    (m,) = parse_mountinfo(line)
    assert (m.dev, m.mountpoint, m.source) == ("0:45", "/mnt/vm images", "/dev/vdd1")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/machine/qemu-4-lab-idle.libvirt-qemu/emulator",
            ("/machine/qemu-4-lab-idle.libvirt-qemu", True),
        ),
        (
            "/machine.slice/machine-qemu\\x2d3\\x2dweb.scope/libvirt/emulator",
            ("/machine.slice/machine-qemu\\x2d3\\x2dweb.scope", True),
        ),
        (
            "/user.slice/user-1000.slice/qemu.scope",
            ("/user.slice/user-1000.slice/qemu.scope", False),
        ),
        ("/emulator", ("/", True)),
    ],
)
def test_vm_cgroup_dir(path: str, expected: tuple[str, bool]) -> None:
    assert vm_cgroup_dir(path) == expected


# --------------------------------------------------------------------------- disks


def test_lab_images_resolve_to_the_root_disk() -> None:
    """The lab's images live on / = vda (st_dev 254:0, `stat -c %D` printed fe00)."""
    vda = os.makedev(254, 0)
    blocks = BlockTopology(LAB, fake_stat({".qcow2": (FILE, vda, 0), ".img": (FILE, vda, 0)}))
    assert blocks.resolve(f"{LAB_DISKS}/lab-idle.qcow2") == ("vda", None)
    assert blocks.resolve("/var/lib/kvmtop-lab/images/probe-hlt.img") == ("vda", None)


def test_file_on_a_real_partition_resolves_to_its_disk() -> None:
    part = os.makedev(259, 0)  # loop0p1; the README records `stat -c %D` = 10300
    blocks = BlockTopology(
        LOOP,
        fake_stat({"guest.qcow2": (FILE, part, 0), "/dev/loop0p1": (BLOCK, 6, part)}),
    )
    assert blocks.resolve("/tmp/kvmtop-topo/mnt/guest.qcow2") == ("loop0", None)
    # A block-device image is its own device (st_rdev), not the /dev filesystem's.
    assert blocks.resolve("/dev/loop0p1") == ("loop0", None)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("rbd:pool/image", "network storage inside QEMU (rbd:pool/image): no host block device"),
        ("pool/volume", "network storage inside QEMU (pool/volume): no host block device"),
        (None, "no source (empty drive)"),
        ("/missing.qcow2", "/missing.qcow2: No such file or directory"),
    ],
)
def test_no_host_disk_has_a_reason(path: str | None, reason: str) -> None:
    assert BlockTopology(LAB, fake_stat({})).resolve(path) == (None, reason)


def write(root: Path, rel: str, text: str) -> None:
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def slave(root: Path, holder: str, name: str, target: str) -> None:
    d = root / "sys/block" / holder / "slaves"
    d.mkdir(parents=True, exist_ok=True)
    (d / name).symlink_to(target)


@pytest.fixture
def stacked(tmp_path: Path) -> Path:
    """dm-0 (LVM LV "vg-images") on md0 (RAID1 of vdb1 and vdc1); dm-1 on vdd1 alone;
    cciss!c0d0 (sysfs spelling of cciss/c0d0); /proc/self/mountinfo with a btrfs on
    vdd2, a tmpfs and NFS."""
    for disk, major, minor in (("vdb", 252, 16), ("vdc", 252, 32), ("vdd", 252, 48)):
        write(tmp_path, f"sys/block/{disk}/dev", f"{major}:{minor}\n")
        for n in (1, 2):
            write(tmp_path, f"sys/block/{disk}/{disk}{n}/dev", f"{major}:{minor + n}\n")
            write(tmp_path, f"sys/block/{disk}/{disk}{n}/partition", f"{n}\n")
    write(tmp_path, "sys/block/md0/dev", "9:0\n")
    write(tmp_path, "sys/block/md0/md/level", "raid1\n")
    slave(tmp_path, "md0", "vdb1", "../../vdb/vdb1")
    slave(tmp_path, "md0", "vdc1", "../../vdc/vdc1")
    write(tmp_path, "sys/block/dm-0/dev", "253:0\n")
    write(tmp_path, "sys/block/dm-0/dm/name", "vg-images\n")
    slave(tmp_path, "dm-0", "md0", "../../md0")
    write(tmp_path, "sys/block/dm-1/dev", "253:1\n")
    slave(tmp_path, "dm-1", "vdd1", "../../vdd/vdd1")
    write(tmp_path, "sys/block/cciss!c0d0/dev", "104:0\n")
    write(
        tmp_path,
        "proc/self/mountinfo",
        "30 1 0:45 /images /var/lib/libvirt/images rw - btrfs /dev/vdd2 rw\n"
        "31 1 0:46 / /dev/shm rw - tmpfs tmpfs rw\n"
        "32 1 0:47 / /mnt/nfs rw - nfs4 filer:/export rw\n",
    )
    return tmp_path


def test_stacked_devices(stacked: Path) -> None:
    blocks = BlockTopology(
        stacked,
        fake_stat(
            {
                "/raid/a.qcow2": (FILE, os.makedev(253, 0), 0),
                "/lvm/b.qcow2": (FILE, os.makedev(253, 1), 0),
                "/md/c.raw": (FILE, os.makedev(9, 0), 0),
                "/dev/md0": (BLOCK, 6, os.makedev(9, 0)),
                "/cciss/d.raw": (FILE, os.makedev(104, 0), 0),
                "/var/lib/libvirt/images/e.qcow2": (FILE, os.makedev(0, 45), 0),
                "/dev/vdd2": (BLOCK, 6, os.makedev(252, 50)),
                "/dev/shm/f.raw": (FILE, os.makedev(0, 46), 0),
                "/mnt/nfs/g.qcow2": (FILE, os.makedev(0, 47), 0),
                "/mnt/fuse/h.qcow2": (FILE, os.makedev(0, 99), 0),
            }
        ),
    )
    # Several physical disks under dm-0 (through md0): the topmost device.
    assert blocks.resolve("/raid/a.qcow2") == ("dm-0", None)
    assert blocks.resolve("/md/c.raw") == ("md0", None)
    assert blocks.resolve("/dev/md0") == ("md0", None)
    # One physical disk under dm-1 (its partition vdd1): that disk.
    assert blocks.resolve("/lvm/b.qcow2") == ("vdd", None)
    # sysfs spells '/' as '!'; /proc/diskstats does not.
    assert blocks.resolve("/cciss/d.raw") == ("cciss/c0d0", None)
    # Anonymous device numbers: btrfs names its device in mountinfo, others have none.
    assert blocks.resolve("/var/lib/libvirt/images/e.qcow2") == ("vdd", None)
    assert blocks.resolve("/dev/shm/f.raw") == (
        None,
        "/dev/shm/f.raw is on tmpfs (tmpfs): no host block device",
    )
    assert blocks.resolve("/mnt/nfs/g.qcow2") == (
        None,
        "/mnt/nfs/g.qcow2 is on nfs4 (filer:/export): no host block device",
    )
    assert blocks.resolve("/mnt/fuse/h.qcow2") == (
        None,
        "/mnt/fuse/h.qcow2: device 0:99 is in no mount of /proc/self/mountinfo",
    )


def test_device_added_after_the_first_scan(stacked: Path) -> None:
    blocks = BlockTopology(stacked, fake_stat({"/new/x.raw": (FILE, os.makedev(8, 0), 0)}))
    assert blocks.resolve("/new/x.raw") == (None, "/new/x.raw: block device 8:0 not in /sys/block")
    write(stacked, "sys/block/sda/dev", "8:0\n")
    assert blocks.resolve("/new/x.raw") == ("sda", None)


# --------------------------------------------------------------------------- enricher


def test_lab_guests_enriched() -> None:
    """Lab capture: host disk vda, affinity 0-1, cgroup v1 counters (no quota: 0)."""
    vda = os.makedev(254, 0)
    pids = lab_pids()
    guests = tuple(lab_guest(name, pid) for name, pid in pids.items() if name.startswith("lab-"))
    guests = SchedCollector(LAB).enrich(guests)
    topo = TopologyCollector(LAB, stat=fake_stat({".qcow2": (FILE, vda, 0)}))
    probe = topo.probe()
    assert probe.available and probe.detail["cpu_cgroup"] == "cgroup v1 at /sys/fs/cgroup/cpu"
    out = {g.name: g for g in topo.enrich(guests)}
    idle = out["lab-idle"]
    assert idle.disks[0].host_dev == "vda"
    assert idle.vcpus[0].tid is not None and idle.vcpus[0].affinity == (0, 1)
    assert (idle.cpu_nr_periods, idle.cpu_nr_throttled, idle.cpu_throttled_ns) == (0, 0, 0)
    # The probes' images are .img files the fake stat does not know: a reason, not a guess.
    assert out["lab-probe-hlt"].disks[0].host_dev is None
    assert any("lab-probe-hlt vda:" in gap for gap in topo.last_gaps)


def test_throttling_summed_over_vm_groups_and_pinning(tmp_path: Path) -> None:
    """A quota on vcpu0 (libvirt <cputune><quota>) and <global_quota> on the VM: the
    sums of nr_periods, nr_throttled and throttled_time (v1, ns); vcpupin to CPU 1."""
    root = tmp_path / "root"
    shutil.copytree(LAB, root, symlinks=True)
    pid = lab_pids()["lab-idle"]
    vm = next((root / "sys/fs/cgroup/cpu/machine").glob("qemu-*-lab-idle.libvirt-qemu"))
    (vm / "cpu.stat").write_text("nr_periods 100\nnr_throttled 4\nthrottled_time 7000000\n")
    (vm / "vcpu0/cpu.stat").write_text(
        "nr_periods 50\nnr_throttled 20\nthrottled_time 900000000\nnr_bursts 0\n"
    )
    (guest,) = SchedCollector(root).enrich((lab_guest("lab-idle", pid),))
    tid = guest.vcpus[0].tid
    status = root / f"proc/{pid}/task/{tid}/status"
    status.write_text(
        status.read_text().replace("Cpus_allowed_list:\t0-1", "Cpus_allowed_list:\t1")
    )
    (out,) = TopologyCollector(root, stat=fake_stat({})).enrich((guest,))
    assert (out.cpu_nr_periods, out.cpu_nr_throttled, out.cpu_throttled_ns) == (
        150,
        24,
        907_000_000,
    )
    assert out.vcpus[0].affinity == (1,)


def test_a_pin_changed_at_run_time_shows_within_affinity_every_ticks(tmp_path: Path) -> None:
    """A vCPU thread's affinity is read when the thread is first seen, then once per
    `AFFINITY_EVERY` ticks: a `virsh vcpupin` shows within that many ticks, and a new
    thread (the guest restarted) is read at once."""
    root = tmp_path / "root"
    shutil.copytree(LAB, root, symlinks=True)
    pid = lab_pids()["lab-idle"]
    (guest,) = SchedCollector(root).enrich((lab_guest("lab-idle", pid),))
    tid = guest.vcpus[0].tid
    assert tid is not None
    status = root / f"proc/{pid}/task/{tid}/status"
    topo = TopologyCollector(root, stat=fake_stat({}))

    def affinity(g: GuestSample = guest) -> tuple[int, ...] | None:
        (out,) = topo.enrich((g,))
        return out.vcpus[0].affinity

    assert affinity() == (0, 1)
    status.write_text(
        status.read_text().replace("Cpus_allowed_list:\t0-1", "Cpus_allowed_list:\t1")
    )
    seen = [affinity() for _ in range(AFFINITY_EVERY)]
    # Ticks 2, 3, ...: the thread's turn comes at the first one `turn` names.
    due = next(i for i in range(AFFINITY_EVERY) if turn(i + 2, tid, AFFINITY_EVERY))
    assert due > 0, "the fixture's thread is due at once: the test shows no spread"
    assert seen == [(0, 1)] * due + [(1,)] * (AFFINITY_EVERY - due)
    # The same thread id in another process (a restarted guest) is read at once.
    other = root / f"proc/{pid + 1}/task/{tid}"
    other.mkdir(parents=True)
    (other / "status").write_text("Name:\tqemu\nCpus_allowed_list:\t0\n")
    moved = GuestSample(
        guest.uuid,
        guest.name,
        dom_id=guest.dom_id,
        state="running",
        pid=pid + 1,
        vcpus=guest.vcpus,
    )
    assert affinity(moved) == (0,)


def systemd_v2_tree(root: Path, pid: int, quota_dirs: dict[str, str]) -> None:
    """A cgroup v2 host with systemd: the VM scope with libvirt's nested layout."""
    scope = "machine.slice/machine-qemu\\x2d3\\x2dweb.scope"
    write(root, "proc/self/mountinfo", "25 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    write(root, f"proc/{pid}/cgroup", f"0::/{scope}/libvirt/emulator\n")
    base = f"sys/fs/cgroup/{scope}"
    write(
        root, f"{base}/cpu.stat", "usage_usec 10\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"
    )
    for sub in ("libvirt", "libvirt/emulator", "libvirt/vcpu0", "libvirt/vcpu1"):
        text = quota_dirs.get(sub, "usage_usec 5\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n")
        write(root, f"{base}/{sub}/cpu.stat", text)
    write(root, "sys/block/vda/dev", "254:0\n")


def test_cgroup_v2_systemd_layout(tmp_path: Path) -> None:
    throttled = "usage_usec 9\nnr_periods 30\nnr_throttled 12\nthrottled_usec 2500\n"
    systemd_v2_tree(tmp_path, 4242, {"libvirt/vcpu0": throttled, "libvirt/vcpu1": throttled})
    guest = GuestSample("u", "web", dom_id=3, state="running", pid=4242, vcpus_current=2)
    topo = TopologyCollector(tmp_path, stat=fake_stat({}))
    assert topo.probe().detail["cpu_cgroup"] == "cgroup v2 at /sys/fs/cgroup"
    (out,) = topo.enrich((guest,))
    assert (out.cpu_nr_periods, out.cpu_nr_throttled, out.cpu_throttled_ns) == (60, 24, 5_000_000)


def test_groups_without_a_quota_are_read_rarely_and_a_new_quota_shows(tmp_path: Path) -> None:
    """A group that never ran under a quota (nr_periods 0) is read once per
    `QUIET_EVERY` ticks: a quota set on vcpu1 later shows within that many ticks, with
    every period and throttled period it counted meanwhile; from then on that group
    is read every tick, while vcpu0 (under a quota from the start) always is."""
    throttled = "usage_usec 9\nnr_periods 30\nnr_throttled 12\nthrottled_usec 2500\n"
    systemd_v2_tree(tmp_path, 4242, {"libvirt/vcpu0": throttled})
    vcpu0 = tmp_path / "sys/fs/cgroup/machine.slice/machine-qemu\\x2d3\\x2dweb.scope/libvirt/vcpu0"
    vcpu1 = vcpu0.parent / "vcpu1"
    guest = GuestSample("u", "web", dom_id=3, state="running", pid=4242, vcpus_current=2)
    topo = TopologyCollector(tmp_path, stat=fake_stat({}))

    def counters() -> tuple[int | None, int | None]:
        (out,) = topo.enrich((guest,))
        return out.cpu_nr_periods, out.cpu_nr_throttled

    assert counters() == (30, 12)
    vcpu1.joinpath("cpu.stat").write_text("nr_periods 8\nnr_throttled 2\nthrottled_usec 1\n")
    vcpu0.joinpath("cpu.stat").write_text("nr_periods 40\nnr_throttled 13\nthrottled_usec 9\n")
    seen = [counters() for _ in range(QUIET_EVERY)]
    # vcpu0 at once; vcpu1 not at once (it is read rarely), but within QUIET_EVERY.
    assert seen[0] == (40, 13)
    assert seen[-1] == (48, 15)
    vcpu1.joinpath("cpu.stat").write_text("nr_periods 9\nnr_throttled 3\nthrottled_usec 1\n")
    assert counters() == (49, 16)  # vcpu1 has periods now: read every tick


def test_cgroup_v2_without_cpu_controller(tmp_path: Path) -> None:
    """cpu.stat without the cpu controller has only usage: throttling unknown."""
    systemd_v2_tree(tmp_path, 4242, {})
    for f in (tmp_path / "sys/fs/cgroup").rglob("cpu.stat"):
        f.write_text("usage_usec 5\nuser_usec 3\nsystem_usec 2\n")
    topo = TopologyCollector(tmp_path, stat=fake_stat({}))
    guest = GuestSample("u", "web", dom_id=3, state="running", pid=4242, vcpus_current=2)
    (out,) = topo.enrich((guest,))
    assert out.cpu_nr_periods is None and out.cpu_throttled_ns is None
    assert topo.last_gaps == ("web: cpu.stat without CFS bandwidth counters",)


def test_unmanaged_process_uses_only_its_own_cgroup(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/mountinfo", "25 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    write(tmp_path, "proc/77/cgroup", "0::/user.slice/qemu.scope\n")
    write(
        tmp_path,
        "sys/fs/cgroup/user.slice/qemu.scope/cpu.stat",
        "nr_periods 5\nnr_throttled 1\nthrottled_usec 3\n",
    )
    write(tmp_path, "sys/fs/cgroup/user.slice/qemu.scope/other/cpu.stat", "nr_periods 500\n")
    guest = GuestSample("u", "plain", state="running", pid=77, managed="unmanaged")
    (out,) = TopologyCollector(tmp_path, stat=fake_stat({})).enrich((guest,))
    assert (out.cpu_nr_periods, out.cpu_nr_throttled, out.cpu_throttled_ns) == (5, 1, 3000)


def test_resolution_cached_per_domain_start() -> None:
    calls: list[str] = []
    vda = fake_stat({".qcow2": (FILE, os.makedev(254, 0), 0)})

    def counting(path: str) -> os.stat_result:
        calls.append(path)
        return vda(path)

    pid = lab_pids()["lab-idle"]
    topo = TopologyCollector(LAB, stat=counting)
    for _ in range(3):
        topo.enrich((lab_guest("lab-idle", pid, dom_id=4),))
    assert len(calls) == 1
    topo.enrich((lab_guest("lab-idle", pid, dom_id=9),))  # restarted: resolve again
    assert len(calls) == 2


def test_vanished_process_keeps_guest_facts() -> None:
    guest = lab_guest("lab-gone", 999_999)
    topo = TopologyCollector(LAB, stat=fake_stat({".qcow2": (FILE, os.makedev(254, 0), 0)}))
    (out,) = topo.enrich((guest,))
    assert out.disks[0].host_dev == "vda"
    assert out.cpu_nr_periods is None
    assert out.vcpus == guest.vcpus
