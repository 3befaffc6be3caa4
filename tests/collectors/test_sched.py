"""SchedCollector against the QEMU threads captured from the running lab.

tests/fixtures/fs/lab-running/README.md lists the 12 lab guests and their QEMU pids:
lab-probe-hlt (pid 11985) is a real KVM guest whose vCPU thread is 11991
"CPU 0/KVM"; lab-idle (pid 12049) runs under TCG, vCPU thread 12057 "CPU 0/TCG".
Each lab guest has one vCPU. Mutating tests work on a copy in tmp_path.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

import pytest

from kvmtop.collectors import sched as sched_mod
from kvmtop.collectors.host import read_text
from kvmtop.collectors.sched import SchedCollector
from kvmtop.model.sample import GuestSample, VcpuSample

LAB = Path(__file__).resolve().parents[1] / "fixtures" / "fs" / "lab-running"
HLT = GuestSample(uuid="u-hlt", name="lab-probe-hlt", pid=11985, vcpus_current=1)
IDLE = GuestSample(uuid="u-idle", name="lab-idle", pid=12049, vcpus_current=1)
HLT_VCPU = (11991, 6874421007, 45527105358)
IDLE_VCPU = (12057, 17170794015, 98634535179)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private, mutable copy of the lab-running capture."""
    dest = tmp_path / "root"
    shutil.copytree(LAB, dest, symlinks=True)
    return dest


def sched_of(g: GuestSample) -> list[tuple[int | None, int | None, int | None]]:
    return [(v.tid, v.sched_run_ns, v.sched_delay_ns) for v in g.vcpus]


def test_fills_vcpus_and_accel() -> None:
    c = SchedCollector(LAB)
    hlt, idle = c.enrich([HLT, IDLE])
    assert c.last_gaps == ()
    assert (hlt.accel, sched_of(hlt)) == ("kvm", [HLT_VCPU])
    assert (idle.accel, sched_of(idle)) == ("tcg", [IDLE_VCPU])
    assert hlt.vcpus[0].index == 0


def test_every_lab_guest_has_its_vcpu() -> None:
    pids = sorted(int(p.name) for p in (LAB / "proc").iterdir() if p.name.isdigit())
    guests = [GuestSample(uuid=str(p), name=str(p), pid=p) for p in pids]
    out = SchedCollector(LAB).enrich(guests)
    assert len(pids) == 12
    assert all(len(g.vcpus) == 1 and g.vcpus[0].sched_delay_ns for g in out)
    assert [g.accel for g in out].count("kvm") == 3  # the lab-probe-* guests


def test_keeps_libvirt_fields_and_known_accel() -> None:
    given = GuestSample(
        uuid="u",
        name="lab-idle",
        pid=12049,
        accel="kvm",
        vcpus=(VcpuSample(0, state=1, time_ns=5, delay_ns=6), VcpuSample(1, time_ns=7)),
    )
    (out,) = SchedCollector(LAB).enrich([given])
    assert out.accel == "kvm"  # a known accel is never overridden
    v0, v1 = out.vcpus
    assert (v0.state, v0.time_ns, v0.delay_ns) == (1, 5, 6)
    assert (v0.tid, v0.sched_run_ns, v0.sched_delay_ns) == IDLE_VCPU
    assert v1 == VcpuSample(1, time_ns=7)  # no such thread: untouched


def test_guest_without_pid_is_untouched() -> None:
    g = GuestSample(uuid="remote", name="elsewhere")
    assert SchedCollector(LAB).enrich([g]) == (g,)


def test_vanished_process_is_not_an_error(tree: Path) -> None:
    c = SchedCollector(tree)
    c.enrich([HLT, IDLE])
    shutil.rmtree(tree / "proc/12049")
    hlt, idle = c.enrich([HLT, IDLE])
    assert idle == IDLE
    assert sched_of(hlt) == [HLT_VCPU]


def test_vanished_thread_triggers_rescan(tree: Path) -> None:
    """A restarted vCPU thread (same pid, new tid) is found again."""
    c = SchedCollector(tree)
    c.enrich([IDLE])
    task = tree / "proc/12049/task"
    os.rename(task / "12057", task / "99999")
    (idle,) = c.enrich([IDLE])
    assert sched_of(idle) == [(99999, *IDLE_VCPU[1:])]


def test_cached_map_is_reused(tree: Path) -> None:
    """While the threads live, comm is not read again (renaming a thread is ignored)."""
    c = SchedCollector(tree)
    c.enrich([IDLE])
    (tree / "proc/12049/task/12057/comm").write_text("renamed\n")
    (idle,) = c.enrich([IDLE])
    assert sched_of(idle) == [IDLE_VCPU]


def test_vcpu_count_change_triggers_rescan(tree: Path) -> None:
    c = SchedCollector(tree)
    c.enrich([IDLE])
    (tree / "proc/12049/task/12057/comm").write_text("renamed\n")
    hotplugged = GuestSample(uuid="u-idle", name="lab-idle", pid=12049, vcpus_current=2)
    (idle,) = c.enrich([hotplugged])
    assert idle.vcpus == ()  # rescanned: no thread is named like a vCPU any more
    assert c.last_gaps == (
        "lab-idle (pid 12049): no thread named 'CPU n/KVM' or 'CPU n/TCG' (QEMU needs "
        "-name debug-threads=on; single-threaded TCG has none); per-vCPU schedstat unavailable",
    )


def test_new_pid_is_scanned() -> None:
    c = SchedCollector(LAB)
    c.enrich([IDLE])
    moved = GuestSample(uuid="u-idle", name="lab-idle", pid=11985)
    (out,) = c.enrich([moved])
    assert sched_of(out) == [HLT_VCPU]


def test_garbage_schedstat_leaves_fields_none(tree: Path) -> None:
    (tree / "proc/12049/task/12057/schedstat").write_text("garbage\n")
    (idle,) = SchedCollector(tree).enrich([IDLE])
    assert idle == IDLE


def test_probe() -> None:
    p = SchedCollector(LAB).probe()
    assert p.available and p.name == "sched" and p.reason is None


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("delete", "kernel built without CONFIG_SCHED_INFO"),
        ("directory", "unreadable: Is a directory"),
        ("garbage", "schedstat: 1 fields"),
    ],
)
def test_probe_failures(tree: Path, damage: str, reason: str) -> None:
    path = tree / "proc/self/schedstat"
    path.unlink()
    if damage == "directory":
        path.mkdir()
    elif damage == "garbage":
        path.write_text("garbage\n")
    p = SchedCollector(tree).probe()
    assert not p.available and p.reason and reason in p.reason


def test_every_file_read_is_in_paths_read(monkeypatch: pytest.MonkeyPatch) -> None:
    c = SchedCollector(LAB)
    seen: list[str] = []

    def spy(path: Path) -> str:
        seen.append(os.path.relpath(path, LAB))
        return read_text(path)

    monkeypatch.setattr(sched_mod, "read_text", spy)
    c.probe()
    c.enrich([HLT, IDLE])
    assert seen
    assert [p for p in seen if not any(fnmatch.fnmatchcase(p, g) for g in c.paths_read())] == []
