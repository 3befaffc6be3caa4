"""Unmanaged KVM guest discovery and helper-thread accounting on fake /proc trees, and
live with a plain QEMU started by the test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmtop.collectors.processes import (
    DEBUGFS_SAFETY_NET,
    ProcessCollector,
    guest_identity,
    parse_pid_stat,
)
from kvmtop.config import Settings
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.sample import GuestSample, VcpuSample
from kvmtop.wiring import build_pipeline, build_sampler
from tests.hostfacts import debugfs_counters_readable, kvm_exit_events

try:
    from tests.lab.fixture import lab
except ImportError:

    @pytest.fixture
    def lab() -> object:
        """Stand-in until tests/lab/fixture.py exists."""
        pytest.skip("lab fixture tests/lab/fixture.py not available")


HZ = 100


def stat_line(pid: int, comm: str, utime: int, stime: int, start: int) -> str:
    # proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime ...
    return (
        f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 10 0 0 0 {utime} {stime} 0 0 20 0 "
        f"4 0 {start} 1000 100 18446744073709551615\n"
    )


class FakeProc:
    """A fake /proc (and KVM debugfs) under tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        (self.proc / "self/fd").mkdir(parents=True)
        (self.proc / "self/schedstat").write_text("1 2 3\n")

    def process(
        self,
        pid: int,
        comm: str,
        *,
        argv: tuple[str, ...] = (),
        exe: str = "/usr/bin/qemu-system-x86_64",
        fds: tuple[str, ...] = (),
        threads: dict[int, str] | None = None,
        times: tuple[int, int] = (150, 50),
        start: int = 777,
    ) -> None:
        d = self.proc / str(pid)
        (d / "fd").mkdir(parents=True)
        for n, target in enumerate(("/dev/null", *fds)):
            os.symlink(target, d / "fd" / str(n))
        if exe:  # kernel threads have no exe link
            os.symlink(exe, d / "exe")
        (d / "stat").write_text(stat_line(pid, comm, *times, start))
        (d / "cmdline").write_text("".join(f"{a}\0" for a in argv))
        (d / "comm").write_text(comm + "\n")
        for tid, name in {pid: comm, **(threads or {})}.items():
            t = d / "task" / str(tid)
            t.mkdir(parents=True)
            (t / "comm").write_text(name + "\n")
            (t / "schedstat").write_text(f"{tid * 1000} {tid * 10} 5\n")

    def vm_dir(self, pid: int, vcpu_tids: dict[int, int]) -> None:
        d = self.root / "sys/kernel/debug/kvm" / f"{pid}-9"
        for index, tid in vcpu_tids.items():
            (d / f"vcpu{index}").mkdir(parents=True)
            (d / f"vcpu{index}/pid").write_text(f"{tid}\n")


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    f = FakeProc(tmp_path)
    # libvirt's guest: KVM too, but reported by libvirt, so not "unmanaged".
    f.process(
        100,
        "qemu-system-x86",
        fds=("anon_inode:kvm-vm", "anon_inode:kvm-vcpu:0", "/dev/vhost-net"),
        threads={
            101: "CPU 0/KVM",
            102: "IO iothread1",
            103: "IO mon_iothread",
            104: "worker",
            105: "vhost-100",
        },
    )
    # Plain QEMU with names for its threads.
    f.process(
        200,
        "qemu-system-x86",
        argv=(
            "qemu-system-x86_64",
            "-enable-kvm",
            "-name",
            "guest=web,debug-threads=on",
            "-uuid",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        ),
        fds=("anon_inode:kvm-vm", "anon_inode:kvm-vcpu:0", "anon_inode:kvm-vcpu:1"),
        threads={201: "CPU 0/KVM", 202: "CPU 1/KVM", 203: "IO iothread0", 204: "call_rcu"},
    )
    # Firecracker.
    f.process(
        300,
        "firecracker",
        argv=("firecracker", "--id", "fc1", "--api-sock", "/run/fc.sock"),
        exe="/usr/local/bin/firecracker",
        fds=("anon_inode:kvm-vm", "anon_inode:kvm-vcpu:0"),
        threads={301: "fc_api", 302: "fc_vcpu 0"},
    )
    # Plain QEMU without thread names: vCPU tids from debugfs vcpuN/pid.
    f.process(
        400,
        "qemu-system-x86",
        argv=("qemu-system-x86_64", "-enable-kvm", "-m", "16"),
        fds=("anon_inode:kvm-vm", "anon_inode:kvm-vcpu:0"),
        threads={401: "qemu-system-x86", 402: "qemu-system-x86"},
        start=4242,
    )
    # KVM debugfs names a directory after each VM's creator, whoever it is.
    for pid, vcpu_tids in ((100, {0: 101}), (200, {0: 201, 1: 202}), (300, {0: 302})):
        f.vm_dir(pid, vcpu_tids)
    f.vm_dir(400, {0: 402})
    # Not KVM at all.
    f.process(500, "bash", argv=("bash",), exe="/usr/bin/bash")
    return f


def test_discovers_unmanaged_guests_and_skips_libvirt_ones(fake: FakeProc) -> None:
    libvirt = GuestSample(uuid="lv", name="lv", pid=100, vcpus=(VcpuSample(0, tid=101),))
    out = ProcessCollector(fake.root, user_hz=HZ).enrich([libvirt])
    assert [g.pid for g in out] == [100, 200, 300, 400]
    assert out[0].managed == "libvirt"
    by_pid = {g.pid: g for g in out[1:]}
    assert all(g.managed == "unmanaged" and g.accel == "kvm" for g in by_pid.values())
    assert all(g.state == "running" for g in by_pid.values())

    web = by_pid[200]
    assert (web.name, web.uuid) == ("web", "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    assert [(v.index, v.tid, v.sched_run_ns, v.sched_delay_ns) for v in web.vcpus] == [
        (0, 201, 201_000, 2010),
        (1, 202, 202_000, 2020),
    ]
    assert web.cpu_time_ns == (150 + 50) * 10_000_000  # USER_HZ ticks → ns
    assert web.vcpus_current == 2

    fc = by_pid[300]
    assert (fc.name, fc.uuid) == ("fc1", "pid-300-777")
    assert [(v.index, v.tid) for v in fc.vcpus] == [(0, 302)]

    plain = by_pid[400]
    assert (plain.name, plain.uuid) == ("qemu-system-x86_64-400", "pid-400-4242")
    assert [(v.index, v.tid) for v in plain.vcpus] == [(0, 402)]


def test_threads_of_every_guest(fake: FakeProc) -> None:
    libvirt = GuestSample(uuid="lv", name="lv", pid=100, vcpus=(VcpuSample(0, tid=101),))
    out = {g.pid: g for g in ProcessCollector(fake.root).enrich([libvirt])}
    assert [(t.tid, t.kind, t.name) for t in out[100].threads] == [
        (100, "emulator", "qemu-system-x86"),
        (102, "iothread", "IO iothread1"),
        (103, "iothread", "IO mon_iothread"),
        (105, "vhost", "vhost-100"),  # vhost_task (Linux >= 6.4): inside the process
    ]
    assert out[100].threads[1].run_ns == 102_000 and out[100].threads[1].delay_ns == 1020
    # vCPU threads are not helper threads, named or not.
    assert [t.tid for t in out[400].threads] == [400]
    assert [t.kind for t in out[300].threads] == ["emulator"]


def test_vhost_kernel_thread_before_vhost_task(fake: FakeProc) -> None:
    """Before Linux 6.4 the vhost worker is a kernel thread found by name."""
    shutil.rmtree(fake.proc / "100/task/105")
    fake.process(900, "vhost-100", exe="", times=(0, 0))
    g = GuestSample(uuid="lv", name="lv", pid=100, vcpus=(VcpuSample(0, tid=101),))
    (out, *_rest) = ProcessCollector(fake.root).enrich([g])
    vhost = [t for t in out.threads if t.kind == "vhost"]
    assert [(t.tid, t.name, t.run_ns) for t in vhost] == [(900, "vhost-100", 900_000)]


def test_guest_without_pid_and_vanished_process(fake: FakeProc) -> None:
    remote = GuestSample(uuid="r", name="remote")
    gone = GuestSample(uuid="g", name="gone", pid=999)
    out = ProcessCollector(fake.root).enrich([remote, gone])
    assert out[0] == remote and out[1].threads == ()


def test_non_kvm_processes_are_rescanned_later(fake: FakeProc) -> None:
    shutil.rmtree(fake.root / "sys/kernel/debug/kvm")  # without debugfs, fds tell
    c = ProcessCollector(fake.root, rescan_every=3)
    assert 600 not in {g.pid for g in c.enrich([])}
    fake.process(600, "qemu-kvm", fds=())
    c.enrich([])  # 600 is new: scanned, no VM yet
    for n in range(3):
        (fake.proc / "600/fd" / str(10 + n)).symlink_to("anon_inode:kvm-vm")
        pids = {g.pid for g in c.enrich([])}
    assert 600 in pids  # picked up within rescan_every ticks


def test_with_debugfs_listable_other_processes_fds_are_a_rare_safety_net(
    fake: FakeProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KVM debugfs lists every VM as it is created, so with it listable a process
    without a VM directory has its fds read once per DEBUGFS_SAFETY_NET periods (not
    at first sight either), and a VM without a directory (the kernel may skip one) is
    still found, within that period."""
    fake.process(601, "qemu-kvm", fds=("anon_inode:kvm-vm",))  # no debugfs directory
    fake.process(700, "bash")
    period, ticks = 2 * DEBUGFS_SAFETY_NET, 4 * 2 * DEBUGFS_SAFETY_NET

    def run() -> tuple[Counter[int], int]:
        """fd reads by pid over `ticks`, and the first tick that found 601."""
        c = ProcessCollector(fake.root, rescan_every=2)
        looked: Counter[int] = Counter()
        scan = c._scan_fds
        monkeypatch.setattr(c, "_scan_fds", lambda pid: looked.update([pid]) or scan(pid))
        found = [t for t in range(ticks) if 601 in {g.pid for g in c.enrich([])}]
        return looked, found[0]

    debugfs = fake.root / "sys/kernel/debug/kvm"
    debugfs.rename(fake.root / "kvm-debugfs")
    looked, found_at = run()  # no debugfs: every process every rescan_every ticks
    assert looked[700] == ticks // 2 and found_at == 0
    (fake.root / "kvm-debugfs").rename(debugfs)  # listable, without 601
    looked, found_at = run()
    assert looked[700] == ticks // period and 0 < found_at <= period


def test_debugfs_dir_reveals_a_vm_at_once(fake: FakeProc) -> None:
    c = ProcessCollector(fake.root, rescan_every=1000)
    fake.process(600, "qemu-kvm")
    c.enrich([])  # scanned once: no VM
    os.symlink("anon_inode:kvm-vm", fake.proc / "600/fd/7")
    fake.vm_dir(600, {0: 600})
    assert 600 in {g.pid for g in c.enrich([])}


@pytest.mark.parametrize(
    ("argv", "name", "uuid"),
    [
        (["qemu", "-name", "foo"], "foo", None),
        (["qemu", "-name", "guest=foo,debug-threads=on"], "foo", None),
        (["qemu", "-name", "foo,debug-threads=on", "-uuid", "u-1"], "foo", "u-1"),
        (["qemu", "--name=bar", "--uuid=u-2"], "bar", "u-2"),
        (["qemu", "-name", "debug-threads=on"], None, None),
        (["firecracker", "--id", "vm7"], "vm7", None),
        (["cloud-hypervisor", "--kernel", "vmlinux"], None, None),
        (["qemu", "-name"], None, None),
    ],
)
def test_guest_identity(argv: list[str], name: str | None, uuid: str | None) -> None:
    assert guest_identity(argv) == (name, uuid)


def test_pid_stat_with_awkward_comm() -> None:
    s = parse_pid_stat(stat_line(7, "a) (b c", 11, 22, 33))
    assert (s.comm, s.utime, s.stime, s.starttime) == ("a) (b c", 11, 22, 33)
    with pytest.raises(ValueError):
        parse_pid_stat("7 (x) S 1 2")


def test_probe(fake: FakeProc, tmp_path: Path) -> None:
    assert ProcessCollector(fake.root).probe().available
    assert not ProcessCollector(tmp_path / "nowhere").probe().available


# --------------------------------------------------------------------------- live


def probe_image(tmp_path: Path) -> Path:
    """A copy of the lab's port-I/O probe boot image (a copy: QEMU write-locks it)."""
    state = Path(os.environ.get("KVMTOP_LAB_DIR", "/var/lib/kvmtop-lab"))
    image = state / "images" / "probe-pio.img"
    if not image.exists():
        pytest.skip(f"{image} not built (tests/lab/lab build)")
    copy = tmp_path / "probe-pio.img"
    shutil.copyfile(image, copy)
    return copy


@pytest.fixture
def plain_qemu(lab: object, tmp_path: Path) -> Iterator[int]:
    """`qemu-system-x86_64 -enable-kvm` running the probe, no libvirt; always killed."""
    if shutil.which("qemu-system-x86_64") is None or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("needs qemu-system-x86_64 and /dev/kvm")
    image = probe_image(tmp_path)
    proc = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-enable-kvm",
            "-nographic",
            "-m",
            "16",
            "-drive",
            f"file={image},format=raw",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(3)  # SeaBIOS boots the sector in about 1 s
        if proc.poll() is not None:
            pytest.fail(f"qemu exited with {proc.returncode}")
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def libvirt_guests() -> list[GuestSample]:
    """The lab's libvirt guests as libvirt would report them (by pid)."""
    return [
        GuestSample(uuid=p.stem, name=p.stem, pid=int(p.read_text()))
        for p in Path("/run/libvirt/qemu").glob("*.pid")
    ]


BOOT_TIMEOUT_S = 90
"""SeaBIOS takes about 1 s on an idle host, far longer on the loaded 2-CPU lab."""


@pytest.mark.lab
@pytest.mark.nested
def test_lab_unmanaged_qemu_is_discovered_with_cpu_steal_and_exits(plain_qemu: int) -> None:
    """A QEMU libvirt does not manage, seen through kvmtop's own sampler and pipeline
    (its exits traced by name, as the detail screen does): found from its KVM fds, CPU
    and steal from schedstat, and its exits counted wherever this host lets anyone
    count them. The test reads itself whether debugfs counters are readable (no
    lockdown) and whether kvm:kvm_exit fires; where neither holds (PVM under lockdown)
    the total is unknown and only the tracepoints that fire count the port writes."""
    exits_countable = debugfs_counters_readable() or kvm_exit_events() > 0
    name = f"qemu-system-x86_64-{plain_qemu}"
    settings = Settings(interval_s=1.0)
    sampler = build_sampler(settings)
    sampler.trace([name])
    pipeline = build_pipeline(settings)
    frames: list[GuestRates] = []
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    try:
        # Until the probe runs its loop (hlt woken by the timer, then port writes;
        # SeaBIOS itself does port I/O, but in bursts), then three more frames.
        while len(frames) < 3:
            assert time.monotonic() < deadline, "probe never reached its port-I/O loop"
            snap = pipeline.push(sampler.sample(), mode="live")
            guest = next((g for g in snap.guests if g.pid == plain_qemu), None)
            assert guest is not None or snap.seq <= 1, "the unmanaged QEMU was not found"
            looping = guest is not None and guest.tracepoint_rates.get("kvm_pio:total", 0) > 1000
            if looping or frames:
                assert guest is not None
                frames.append(guest)
            time.sleep(1.0)
    finally:
        sampler.close()
    rates = frames[-1]
    assert rates.managed == "unmanaged" and rates.name == name
    assert rates.cpu_pct is not None and rates.cpu_pct > 0
    assert rates.vcpu[0].cpu_pct is not None and rates.vcpu[0].steal_pct is not None
    assert rates.steal_source == "schedstat"
    pio = rates.tracepoint_rates["kvm_pio:total"]
    if exits_countable:
        # Every port write is an exit: the counters (debugfs, or kvm_exit) see at least
        # the writes the kvm_pio tracepoint counted over the same interval.
        assert rates.exits_per_s is not None, rates.na
        assert rates.exits_per_s >= 0.9 * pio > 0, (rates.exits_per_s, pio)
    else:
        assert rates.exits_per_s is None
        assert rates.tracepoint_rates["kvm_pio:total"] > 1000
        assert rates.tracepoint_rates["kvm_userspace_exit:IO"] > 1000
