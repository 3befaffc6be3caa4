"""`kvmtop doctor` against fake trees (one failure reason each) and once against the lab.

The fake trees are the captured ones in tests/fixtures/fs/, copied into tmp_path and
mutated; libvirt is a fake connection with the methods the collector calls.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kvmtop.collectors.base import Probe
from kvmtop.collectors.kvmdebugfs import DebugfsCollector
from kvmtop.collectors.libvirt.connect import LIBVIRT_MISSING
from kvmtop.diagnosis.checks import FAIL, OK, SKIP, WARN, Check, Environment
from kvmtop.diagnosis.doctor import Doctor, diagnose, exit_status, render_json, render_text
from kvmtop.model.sample import GuestSample
from tests.hostfacts import kvm_exit_events, kvm_modules, lockdown, schedstats
from tests.lab.fixture import Lab
from tests.records import replace

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/fixtures/fs"
NOW = 1_800_000_000.0

libvirt = pytest.importorskip("libvirt")

# --------------------------------------------------------------------------- fakes


def domain_xml(
    name: str,
    kind: str,
    *,
    memballoon: str = "virtio",
    period: int | None = 2,
    memory_gib: int = 1,
    disk: str | None = None,
) -> str:
    stats = f"<stats period='{period}'/>" if period is not None else ""
    balloon = (
        f"<memballoon model='{memballoon}'>{stats}</memballoon>"
        if memballoon != "none"
        else "<memballoon model='none'/>"
    )
    disk_xml = (
        f"<disk type='file' device='disk'><source file='{disk}'/>"
        "<target dev='vda' bus='virtio'/></disk>"
        if disk
        else ""
    )
    return (
        f"<domain type='{kind}'><name>{name}</name>"
        f"<memory unit='GiB'>{memory_gib}</memory><vcpu>1</vcpu>"
        f"<devices>{disk_xml}{balloon}</devices></domain>"
    )


@dataclass
class FakeDomain:
    """The virDomain methods the libvirt collector calls."""

    name_: str
    uuid: str
    xml: str
    stats: dict[str, Any]
    dom_id: int = 1

    def UUIDString(self) -> str:
        return self.uuid

    def name(self) -> str:
        return self.name_

    def ID(self) -> int:
        return self.dom_id

    def XMLDesc(self, _flags: int = 0) -> str:
        return self.xml


@dataclass
class FakeConnection:
    """A virConnect with fixed versions and domains."""

    domains: list[FakeDomain] = field(default_factory=list)
    lib_version: int = 9_000_000
    qemu_version: int = 7_002_000

    def getAllDomainStats(self, _stats: int, _flags: int) -> list[tuple[Any, dict[str, Any]]]:
        return [(d, dict(d.stats)) for d in self.domains]

    def isAlive(self) -> int:
        return 1

    def close(self) -> int:
        return 0

    def getURI(self) -> str:
        return "qemu:///system"

    def getType(self) -> str:
        return "QEMU"

    def getLibVersion(self) -> int:
        return self.lib_version

    def getVersion(self) -> int:
        return self.qemu_version

    def getHostname(self) -> str:
        return "fakehost"


def running(
    extra: dict[str, Any] | None = None, last_update: float | None = NOW - 1
) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "state.state": 1,
        "state.reason": 1,
        "vcpu.current": 1,
        "vcpu.maximum": 1,
        "vcpu.0.state": 1,
        "vcpu.0.time": 10**9,
        "vcpu.0.delay": 10**6,
        "balloon.current": 1 << 20,
        "balloon.maximum": 1 << 20,
    }
    if last_update is not None:
        stats["balloon.last-update"] = int(last_update)
    stats.update(extra or {})
    return stats


KVM_STATS = {"vcpu.0.exits.sum": 1000, "vcpu.0.halt_exits.sum": 100}


def uuid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def healthy() -> list[FakeDomain]:
    """One KVM guest with binary stats, live balloon stats; one more like it."""
    return [
        FakeDomain("kvm-1", uuid(1), domain_xml("kvm-1", "kvm"), running(KVM_STATS)),
    ]


def env(root: Path, conn: FakeConnection | None = None, **kw: Any) -> Environment:
    conn = conn or FakeConnection(healthy())
    defaults: dict[str, Any] = {
        "euid": 0,
        "measure_s": 0,
        "now": lambda: NOW,
        "libvirt_open": lambda _uri: conn,
    }
    defaults.update(kw)
    return Environment(root=root, **defaults)


def by_id(checks: Sequence[Check]) -> dict[str, Check]:
    return {c.id: c for c in checks}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The captured lab host tree, plus THP, halt polling and perf settings."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "lab-running", root, symlinks=True)
    write(root, "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    write(root, "sys/module/kvm/parameters/halt_poll_ns", "200000\n")
    write(root, "proc/sys/kernel/perf_event_paranoid", "2\n")
    return root


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_checks(doctor: Doctor) -> dict[str, Check]:
    return by_id(list(doctor.checks()))


# --------------------------------------------------------------------------- host


def test_healthy_tree_has_no_failure(tree: Path) -> None:
    checks = diagnose(env(tree))
    found = by_id(checks)
    assert found["host"].status == OK and "2 CPUs" in found["host"].detail
    assert found["libvirt"].status == OK and "libvirt 9.0.0" in found["libvirt"].detail
    assert found["libvirt.delay"].status == OK
    assert found["libvirt.vm_group"].status == OK
    assert found["guest.balloon:kvm-1"].status == OK
    assert found["advice.thp"].status == OK
    assert exit_status(checks) == 0


def test_not_root(tree: Path) -> None:
    found = by_id(diagnose(env(tree, euid=1000)))
    assert found["privileges"].status == WARN
    assert "uid 1000" in found["privileges"].detail
    assert found["perf_event_paranoid"].status == WARN
    assert "perf_event_paranoid=-1" in (found["perf_event_paranoid"].fix or "")


def test_perf_event_paranoid_allows_tracepoints(tree: Path) -> None:
    write(tree, "proc/sys/kernel/perf_event_paranoid", "-1\n")
    assert by_id(diagnose(env(tree, euid=1000)))["perf_event_paranoid"].status == OK


def test_host_proc_unusable_is_required(tmp_path: Path) -> None:
    checks = diagnose(env(tmp_path))
    host = by_id(checks)["host"]
    assert host.status == FAIL and host.required
    assert "/proc/stat" in host.detail
    assert exit_status(checks) == 1


def test_schedstat_absent(tree: Path) -> None:
    assert not (tree / "proc/schedstat").exists()  # the lab kernel has no CONFIG_SCHEDSTATS
    check = by_id(diagnose(env(tree)))["schedstat"]
    assert check.status == WARN
    assert "CONFIG_SCHEDSTATS" in check.detail and "CONFIG_SCHEDSTATS=y" in (check.fix or "")


def test_schedstat_present(tree: Path) -> None:
    cpu = " ".join(["0"] * 6 + ["5000", "700", "9"])
    write(tree, "proc/schedstat", f"version 15\ntimestamp 1\ncpu0 {cpu}\n")
    assert by_id(diagnose(env(tree)))["schedstat"].status == OK


def test_psi_absent(tree: Path) -> None:
    shutil.rmtree(tree / "proc/pressure")
    check = by_id(diagnose(env(tree)))["psi"]
    assert check.status == WARN and "psi=1" in (check.fix or "")


# --------------------------------------------------------------------------- libvirt


def test_libvirt_python_missing(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kvmtop.collectors.libvirt.collector.import_libvirt", lambda: None)
    checks = diagnose(env(tree))
    check = by_id(checks)["libvirt"]
    assert (check.status, check.detail) == (WARN, LIBVIRT_MISSING)
    assert "kvmtop[libvirt]" in (check.fix or "")
    assert exit_status(checks) == 0
    explicit = diagnose(env(tree, uri_explicit=True))
    assert by_id(explicit)["libvirt"].status == FAIL
    assert exit_status(explicit) == 1


def test_libvirt_daemon_unreachable(tree: Path) -> None:
    def refuse(_uri: str | None) -> Any:
        raise libvirt.libvirtError(
            "Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory"
        )

    checks = diagnose(env(tree, libvirt_open=refuse, uri_explicit=True))
    check = by_id(checks)["libvirt"]
    assert check.status == FAIL and "daemon not running" in check.detail
    assert "libvirtd" in (check.fix or "")
    assert exit_status(checks) == 1
    assert not [c for c in checks if c.id.startswith("guest")]


@pytest.mark.parametrize(
    ("version", "delay", "vm_group"),
    [(7_001_000, WARN, WARN), (8_000_000, OK, WARN), (8_009_000, OK, OK)],
)
def test_libvirt_versions(tree: Path, version: int, delay: str, vm_group: str) -> None:
    found = by_id(diagnose(env(tree, FakeConnection(healthy(), lib_version=version))))
    assert found["libvirt.delay"].status == delay
    assert found["libvirt.vm_group"].status == vm_group
    if delay == WARN:
        assert "7.2.0" in found["libvirt.delay"].detail


def test_qemu_without_query_stats(tree: Path) -> None:
    found = by_id(diagnose(env(tree, FakeConnection(healthy(), qemu_version=7_000_000))))
    check = found["libvirt.vm_group"]
    assert check.status == WARN and "query-stats" in check.detail


# --------------------------------------------------------------------------- guests


def test_balloon_period_unset(tree: Path) -> None:
    dom = FakeDomain(
        "lazy",
        uuid(2),
        domain_xml("lazy", "kvm", period=None),
        running(KVM_STATS, last_update=None),
    )
    check = by_id(diagnose(env(tree, FakeConnection([dom]))))["guest.balloon:lazy"]
    assert check.status == WARN and "period unset" in check.detail
    assert "virsh dommemstat lazy --period 5 --live --config" in (check.fix or "")


def test_balloon_last_update_not_advancing(tree: Path) -> None:
    dom = FakeDomain(
        "stale", uuid(3), domain_xml("stale", "kvm"), running(KVM_STATS, last_update=NOW - 600)
    )
    check = by_id(diagnose(env(tree, FakeConnection([dom]))))["guest.balloon:stale"]
    assert check.status == WARN and "not advancing" in check.detail
    assert "600 s ago" in check.detail


def test_balloon_never_reported(tree: Path) -> None:
    dom = FakeDomain(
        "mute", uuid(4), domain_xml("mute", "kvm"), running(KVM_STATS, last_update=None)
    )
    check = by_id(diagnose(env(tree, FakeConnection([dom]))))["guest.balloon:mute"]
    assert check.status == WARN and "never reported" in check.detail


def test_no_balloon_device(tree: Path) -> None:
    dom = FakeDomain(
        "probe",
        uuid(5),
        domain_xml("probe", "kvm", memballoon="none"),
        running(KVM_STATS, last_update=None),
    )
    check = by_id(diagnose(env(tree, FakeConnection([dom]))))["guest.balloon:probe"]
    assert check.status == WARN and "model='none'" in check.detail


def test_kvm_binary_stats_absent(tree: Path) -> None:
    dom = FakeDomain("old", uuid(6), domain_xml("old", "kvm"), running())
    check = by_id(diagnose(env(tree, FakeConnection([dom]))))["guest.kvm_stats:old"]
    assert check.status == WARN and "vcpu.N.exits.sum" in check.detail


def test_tcg_guest(tree: Path) -> None:
    dom = FakeDomain("emu", uuid(7), domain_xml("emu", "qemu"), running())
    found = by_id(diagnose(env(tree, FakeConnection([dom]))))
    assert found["guest.accel:emu"].status == WARN
    assert "TCG" in found["guest.accel:emu"].detail
    assert "guest.kvm_stats:emu" not in found
    assert "1 tcg" in found["guests"].detail


def test_shut_off_guests_are_not_judged(tree: Path) -> None:
    dom = FakeDomain("off", uuid(8), domain_xml("off", "qemu"), {"state.state": 5}, dom_id=-1)
    found = by_id(diagnose(env(tree, FakeConnection([dom]))))
    assert "1 defined, 0 running" in found["guests"].detail
    assert not [i for i in found if i.startswith("guest.") and "off" in i]


# --------------------------------------------------------------------------- KVM sources


def test_debugfs_not_mounted(tree: Path) -> None:
    check = by_id(diagnose(env(tree)))["debugfs"]
    assert check.status == WARN and "not mounted" in check.detail
    assert "mount -t debugfs none /sys/kernel/debug" in (check.fix or "")


def test_debugfs_locked_down(tree: Path) -> None:
    kvm = tree / "sys/kernel/debug/kvm"
    for name, value in (("exits", "5"), ("halt_exits", "1"), ("pages_4k", "7")):
        write(kvm, name, value + "\n")
    write(tree, "sys/kernel/security/lockdown", "none [integrity] confidentiality\n")

    def lockdown(path: str) -> str:
        # fs/debugfs/file.c: a writable (0644, cumulative) stat is refused with EPERM.
        if os.path.basename(path) in ("exits", "halt_exits"):
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        return Path(path).read_text()

    doctor = Doctor(env(tree))
    doctor.debugfs = DebugfsCollector(tree, mount=False, reader=lockdown)
    check = run_checks(doctor)["debugfs"]
    assert check.status == WARN
    assert "lockdown: integrity" in check.detail and "exits" in check.detail
    assert "pages_4k" in check.detail
    assert "cannot be lifted at run time" in (check.fix or "")


def test_debugfs_readable(tree: Path) -> None:
    write(tree, "sys/kernel/debug/kvm/exits", "5\n")
    assert by_id(diagnose(env(tree)))["debugfs"].status == OK


def test_tracefs_missing(tree: Path) -> None:
    found = by_id(diagnose(env(tree)))
    assert found["tracepoints"].status == WARN
    assert "mount -t tracefs none" in (found["tracepoints"].fix or "")
    assert found["kvm_exit"].status == SKIP


@dataclass
class FakeTracepoints:
    """The tracepoint collector's surface: counts kvm_exit as `per_tick` per read."""

    per_tick: int
    reads: int = 0
    attached: list[str] = field(default_factory=list)

    def probe(self) -> Probe:
        return Probe("tracepoints", True, None, {"counters_per_vcpu": "51", "isa": "?"})

    def attach(self, key: str, tids: Sequence[int] = ()) -> None:
        assert tids, "vCPU threads must be known before attaching"
        self.attached.append(key)

    def detach(self, key: str) -> None:
        self.attached.remove(key)

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        self.reads += 1
        return tuple(
            replace(g, exit_reasons={"kvm_exit:total": self.per_tick * self.reads}) for g in guests
        )


class GrowingConnection(FakeConnection):
    """KVM's exit counter grows by 1000 per stats call."""

    calls = 0

    def getAllDomainStats(self, stats: int, flags: int) -> list[tuple[Any, dict[str, Any]]]:
        self.calls += 1
        out = super().getAllDomainStats(stats, flags)
        for _, values in out:
            values["vcpu.0.exits.sum"] = 1000 * self.calls
        return out


def kvm_guest_with_threads(tree: Path) -> FakeConnection:
    """A running KVM guest whose QEMU process (pid 11985 in the tree) has vCPU threads."""
    write(tree, "run/libvirt/qemu/kvm-1.pid", "11985")
    return GrowingConnection(healthy())


@pytest.mark.parametrize(("per_tick", "status"), [(0, WARN), (40, OK)])
def test_kvm_exit_silence_is_measured(tree: Path, per_tick: int, status: str) -> None:
    doctor = Doctor(env(tree, kvm_guest_with_threads(tree), measure_s=0.01))
    fake = FakeTracepoints(per_tick)
    doctor.tracepoints = fake  # type: ignore[assignment]
    check = run_checks(doctor)["kvm_exit"]
    assert check.status == status, check
    assert fake.attached == []
    if status == WARN:
        assert "silent" in check.detail and "1000 exits" in check.detail
    else:
        assert "40 events" in check.detail


# --------------------------------------------------------------------------- advice


def test_overcommit_and_memory_reserve(tree: Path) -> None:
    doms = [
        FakeDomain(
            f"big-{i}",
            uuid(10 + i),
            domain_xml(f"big-{i}", "kvm", memory_gib=12),
            running(KVM_STATS),
        )
        for i in range(3)
    ]
    found = by_id(diagnose(env(tree, FakeConnection(doms))))
    ratio = found["advice.vcpu_ratio"]
    assert ratio.status == WARN and ratio.detail.startswith("1.5 (3 vCPUs")
    reserve = found["advice.memory_reserve"]
    assert reserve.status == WARN and "virsh setmaxmem" in (reserve.fix or "")
    poll = found["advice.halt_poll"]
    assert poll.status == WARN and "overcommitted" in poll.detail
    assert "halt_poll_ns=0" in (poll.fix or "")


def test_halt_polling_that_mostly_fails(tree: Path) -> None:
    stats = running(
        {
            **KVM_STATS,
            "vcpu.0.halt_poll_fail_ns.sum": 50 * 10**9,
            "vcpu.0.halt_poll_success_ns.sum": 10**9,
        }
    )
    conn = FakeConnection([FakeDomain("poller", uuid(20), domain_xml("poller", "kvm"), stats)])
    check = by_id(diagnose(env(tree, conn)))["advice.halt_poll"]
    assert check.status == WARN and "mostly fails" in check.detail
    assert "echo 100000 > /sys/module/kvm/parameters/halt_poll_ns" in (check.fix or "")


def test_halt_polling_absent(tree: Path) -> None:
    shutil.rmtree(tree / "sys/module/kvm")
    assert by_id(diagnose(env(tree)))["advice.halt_poll"].status == SKIP


@pytest.mark.parametrize(
    ("enabled", "status"), [("always madvise [never]", WARN), ("[always] madvise never", OK)]
)
def test_transparent_huge_pages(tree: Path, enabled: str, status: str) -> None:
    write(tree, "sys/kernel/mm/transparent_hugepage/enabled", enabled + "\n")
    check = by_id(diagnose(env(tree)))["advice.thp"]
    assert check.status == status
    if status == WARN:
        assert "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled" in (check.fix or "")


def fake_disk(root: Path, scheduler: str, rotational: str, partition: bool) -> None:
    """sys/block/vda of the captured tree as device 252:0, with a partition vda1 252:1."""
    write(root, "sys/block/vda/dev", "252:0\n")
    write(root, "sys/block/vda/queue/scheduler", scheduler + "\n")
    write(root, "sys/block/vda/queue/rotational", rotational + "\n")
    if partition:
        write(root, "sys/block/vda/vda1/dev", "252:1\n")
        write(root, "sys/block/vda/vda1/partition", "1\n")


def stat_on(minor: int) -> Any:
    """An os.stat for which every regular file lives on device 252:`minor`."""

    def fake(path: str) -> os.stat_result:
        real = os.stat(path)
        fields = list(real)
        fields[2] = os.makedev(252, minor)  # st_dev
        return os.stat_result(fields)

    return fake


@pytest.mark.parametrize(
    ("scheduler", "rotational", "partition", "status", "better"),
    [
        ("mq-deadline kyber [bfq] none", "0", False, WARN, "none"),
        ("mq-deadline kyber bfq [none]", "1", True, WARN, "mq-deadline"),
        ("[mq-deadline] kyber bfq none", "0", True, OK, None),
    ],
)
def test_io_scheduler_of_backing_device(
    tree: Path,
    scheduler: str,
    rotational: str,
    partition: bool,
    status: str,
    better: str | None,
) -> None:
    write(tree, "var/lib/images/web.qcow2", "qcow2")
    fake_disk(tree, scheduler, rotational, partition)
    dom = FakeDomain(
        "web",
        uuid(30),
        domain_xml("web", "kvm", disk="/var/lib/images/web.qcow2"),
        running(KVM_STATS),
    )
    checks = diagnose(env(tree, FakeConnection([dom]), stat=stat_on(1 if partition else 0)))
    check = by_id(checks)["advice.io_scheduler:vda"]
    assert check.status == status, check
    assert "web:vda" in check.detail
    if better:
        assert f"echo {better} > /sys/block/vda/queue/scheduler" in (check.fix or "")


def test_network_storage_has_no_scheduler_advice(tree: Path) -> None:
    xml = domain_xml("ceph", "kvm").replace(
        "<devices>",
        "<devices><disk type='network' device='disk'><source protocol='rbd' "
        "name='pool/vol'/><target dev='vda' bus='virtio'/></disk>",
    )
    dom = FakeDomain("ceph", uuid(31), xml, running(KVM_STATS))
    found = by_id(diagnose(env(tree, FakeConnection([dom]))))
    assert not [i for i in found if i.startswith("advice.io_scheduler")]


# --------------------------------------------------------------------------- output


def test_text_groups_and_fixes(tree: Path) -> None:
    out = io.StringIO()
    render_text(diagnose(env(tree, euid=1000)), out)
    text = out.getvalue()
    assert text.index("WARN (") < text.index("OK (")
    assert "  ! privileges: not root (uid 1000)" in text
    assert "      fix: run as root" in text


def test_json_output(tmp_path: Path) -> None:
    out = io.StringIO()
    checks = diagnose(env(tmp_path))
    render_json(checks, out)
    doc = json.loads(out.getvalue())
    assert doc["exit_status"] == 1
    assert doc["summary"][FAIL] >= 1
    host = next(c for c in doc["checks"] if c["id"] == "host")
    assert host == {
        "id": "host",
        "status": "fail",
        "title": "host /proc",
        "detail": host["detail"],
        "fix": host["fix"],
        "required": True,
    }


# --------------------------------------------------------------------------- lab

DOCTOR_ENTRY = (
    "import argparse, sys\n"
    "from kvmtop.config import Settings\n"
    "from kvmtop.commands.doctor import add_arguments, run\n"
    "parser = argparse.ArgumentParser()\n"
    "add_arguments(parser)\n"
    "sys.exit(run(parser.parse_args(sys.argv[1:]), Settings()))\n"
)


@pytest.mark.lab
@pytest.mark.nested
def test_lab_doctor_on_this_host(lab: Lab) -> None:
    """Doctor's verdicts follow this host's facts, each read by the test itself: kernel
    lockdown, /proc/schedstat, whether kvm:kvm_exit fires, the loaded KVM modules, each
    guest's accelerator and the vCPU:pCPU ratio. On this project's PVM machines that
    means a lockdown warning and a silent kvm_exit naming kvm_pvm; on an SVM or VMX host
    (the nested lab's L1) debugfs and kvm_exit are fine and nothing speaks of PVM."""
    locked = lockdown() != "none"
    fires = kvm_exit_events() > 0
    modules = kvm_modules()
    proc = subprocess.run(
        [sys.executable, "-c", DOCTOR_ENTRY, "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    checks = json.loads(proc.stdout)["checks"]
    found = {c["id"]: c for c in checks}
    assert found["host"]["status"] == OK
    major, minor, micro = (libvirt.getVersion() // 10**n % 1000 for n in (6, 3, 0))
    assert found["libvirt"]["status"] == OK
    assert f"libvirt {major}.{minor}.{micro}" in found["libvirt"]["detail"]
    assert found["libvirt.delay"]["status"] == OK
    assert found["libvirt.vm_group"]["status"] == OK
    if schedstats():
        assert found["schedstat"]["status"] == OK
    else:
        assert found["schedstat"]["status"] == WARN
        assert "CONFIG_SCHEDSTATS" in found["schedstat"]["detail"]
    assert found["psi"]["status"] == OK
    debugfs = found["debugfs"]
    if locked:
        assert debugfs["status"] == WARN and "lockdown" in debugfs["detail"]
        assert "exits" in debugfs["detail"]
    else:
        assert debugfs["status"] == OK, debugfs
        assert "lockdown" not in debugfs["detail"]
    for g in lab.guests.values():
        accel = found.get(f"guest.accel:{g.name}")
        if g.is_kvm:
            assert accel is None, accel
        else:
            assert accel is not None and "TCG" in accel["detail"]
        if g.kind == "probe":
            assert "model='none'" in found[f"guest.balloon:{g.name}"]["detail"]
    kvm_exit = found["kvm_exit"]
    if fires:
        assert kvm_exit["status"] == OK, kvm_exit
        assert " events on " in kvm_exit["detail"]
    else:
        assert kvm_exit["status"] == WARN and kvm_exit["detail"].startswith("silent: 0 events")
        assert all(m in (kvm_exit["fix"] or "") for m in modules), (modules, kvm_exit)
    if "kvm_pvm" not in modules:
        assert not any("pvm" in f"{c['detail']} {c['fix'] or ''}".lower() for c in checks)
    vcpus = sum(g.vcpus for g in lab.guests.values())
    expected = WARN if vcpus / (os.cpu_count() or 1) > 1.2 else OK
    assert found["advice.vcpu_ratio"]["status"] == expected
    # Halt polling is judged on this host's own kvm module parameter.
    assert found["advice.halt_poll"]["status"] in (OK, WARN)
    assert "halt_poll_ns=" in found["advice.halt_poll"]["detail"]
