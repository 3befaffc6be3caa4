"""KVM debugfs collector on fake trees: readable, lockdown (EPERM on 0644 files), missing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from kvmtop.collectors.host import read_text
from kvmtop.collectors.kvmdebugfs import LOCKDOWN_REASON, RELIST_EVERY, DebugfsCollector
from kvmtop.model.sample import GuestSample, VcpuSample
from tests.hostfacts import DEBUGFS, ensure_mounted

# Stat names and modes as listed on the 6.18 test machine (0644 cumulative/peak,
# 0444 instant), a subset.
CUMULATIVE = {"exits": 5000, "halt_exits": 40, "io_exits": 3600, "halt_poll_fail_ns": 900}
INSTANT = {"blocking": 1, "pages_4k": 12, "guest_mode": 0}
HIST = {"halt_wait_hist": 3}


def make_tree(root: Path, pid: int = 4242, vcpu_tids: dict[int, int] | None = None) -> Path:
    kvm = root / "sys/kernel/debug/kvm"
    kvm.mkdir(parents=True)
    vm = kvm / f"{pid}-11"
    vm.mkdir()
    for directory in (kvm, vm):
        for name, value in {**CUMULATIVE, **INSTANT, **HIST}.items():
            (directory / name).write_text(f"{value}\n")
    (vm / "mmu_rmaps_stat").write_text("Rmap_Count:\t0\t1\n")
    for index, tid in (vcpu_tids or {0: pid + 1}).items():
        (vm / f"vcpu{index}").mkdir()
        (vm / f"vcpu{index}" / "pid").write_text(f"{tid}\n")
        (vm / f"vcpu{index}" / "tsc-offset").write_text("-123\n")
    return vm


def lockdown_reader(path: str) -> str:
    """Refuse what lockdown refuses: every 0644 stat (root ignores modes, so simulate)."""
    name = os.path.basename(path)
    if name in CUMULATIVE or name in HIST or name == "mmu_rmaps_stat":
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)
    return read_text(path)


def test_readable_tree(tmp_path: Path) -> None:
    make_tree(tmp_path, vcpu_tids={0: 4243, 1: 4244})
    c = DebugfsCollector(tmp_path, mount=False)
    probe = c.probe()
    assert probe.available and probe.reason is None
    guest = GuestSample(uuid="u", name="g", pid=4242, vcpus=(VcpuSample(0),))
    (out,) = c.enrich([guest])
    assert out.debugfs == {**CUMULATIVE, **INSTANT}  # histograms and tables left out
    assert c.file_status["mmu_rmaps_stat"] == "unparsable"
    assert [(v.index, v.tid) for v in out.vcpus] == [(0, 4243), (1, 4244)]


def test_lockdown_tree(tmp_path: Path) -> None:
    make_tree(tmp_path)
    c = DebugfsCollector(tmp_path, mount=False, reader=lockdown_reader)
    probe = c.probe()
    assert probe.available and probe.reason == LOCKDOWN_REASON
    assert probe.detail["readable"] == "blocking, guest_mode, pages_4k"
    assert "exits" in probe.detail["refused"]
    (out,) = c.enrich([GuestSample(uuid="u", name="g", pid=4242)])
    assert out.debugfs == INSTANT
    assert c.file_status["exits"] == "EPERM"
    assert out.vcpus[0].tid == 4243  # vcpuN/pid is 0444: readable under lockdown


def test_refused_files_are_not_retried(tmp_path: Path) -> None:
    make_tree(tmp_path)
    asked: list[str] = []

    def counting(path: str) -> str:
        asked.append(os.path.basename(path))
        return lockdown_reader(path)

    c = DebugfsCollector(tmp_path, mount=False, reader=counting)
    c.probe()
    asked.clear()
    c.enrich([GuestSample(uuid="u", name="g", pid=4242)])
    assert "exits" not in asked and "blocking" in asked


def test_existing_vcpu_tid_is_kept(tmp_path: Path) -> None:
    make_tree(tmp_path, vcpu_tids={0: 999})
    c = DebugfsCollector(tmp_path, mount=False)
    guest = GuestSample(uuid="u", name="g", pid=4242, vcpus=(VcpuSample(0, tid=777),))
    (out,) = c.enrich([guest])
    assert out.vcpus[0].tid == 777


def test_vcpu_pid_zero_before_first_run(tmp_path: Path) -> None:
    make_tree(tmp_path, vcpu_tids={0: 0})
    (out,) = DebugfsCollector(tmp_path, mount=False).enrich(
        [GuestSample(uuid="u", name="g", pid=4242)]
    )
    assert out.vcpus == ()


def test_a_vm_directory_is_listed_again_only_when_due(tmp_path: Path) -> None:
    """The listing of a VM directory is kept: a stat file that appears later is read
    once the guest's vCPU count changes (a hot-plug adds a `vcpuN/`) or after
    `RELIST_EVERY` ticks; a vCPU whose pid file still says 0 is read again every
    tick until it ran."""
    vm = make_tree(tmp_path, vcpu_tids={0: 4243, 1: 0})
    c = DebugfsCollector(tmp_path, mount=False)
    one = GuestSample(uuid="u", name="g", pid=4242, vcpus_current=1)
    (out,) = c.enrich([one])
    assert [(v.index, v.tid) for v in out.vcpus] == [(0, 4243)]
    (vm / "vcpu1" / "pid").write_text("4244\n")  # vCPU 1 ran
    (vm / "remote_tlb_flush").write_text("7\n")
    (out,) = c.enrich([one])
    assert [(v.index, v.tid) for v in out.vcpus] == [(0, 4243), (1, 4244)]
    assert "remote_tlb_flush" not in out.debugfs  # the listing is kept
    (out,) = c.enrich([GuestSample(uuid="u", name="g", pid=4242, vcpus_current=2)])
    assert out.debugfs["remote_tlb_flush"] == 7  # the vCPU count changed: listed again
    (vm / "pages_2m").write_text("3\n")
    two = GuestSample(uuid="u", name="g", pid=4242, vcpus_current=2)
    seen = [c.enrich([two])[0].debugfs.get("pages_2m") for _ in range(RELIST_EVERY)]
    assert seen[0] is None and seen[-1] == 3


def test_guests_without_vm_dir_are_unchanged(tmp_path: Path) -> None:
    make_tree(tmp_path)
    c = DebugfsCollector(tmp_path, mount=False)
    tcg = GuestSample(uuid="t", name="tcg", pid=1, accel="tcg")
    remote = GuestSample(uuid="r", name="remote")
    assert c.enrich([tcg, remote]) == (tcg, remote)


def test_two_vms_in_one_process_are_summed(tmp_path: Path) -> None:
    make_tree(tmp_path)
    second = tmp_path / "sys/kernel/debug/kvm/4242-12"
    second.mkdir()
    (second / "exits").write_text("7\n")
    (out,) = DebugfsCollector(tmp_path, mount=False).enrich(
        [GuestSample(uuid="u", name="g", pid=4242)]
    )
    assert out.debugfs["exits"] == CUMULATIVE["exits"] + 7


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("nothing", "debugfs not mounted"),
        ("debugfs-only", "kvm module not loaded"),
    ],
)
def test_missing(tmp_path: Path, setup: str, reason: str) -> None:
    if setup == "debugfs-only":
        (tmp_path / "sys/kernel/debug/tracing").mkdir(parents=True)
    probe = DebugfsCollector(tmp_path, mount=True).probe()  # never mounts under a fake root
    assert not probe.available and probe.reason and reason in probe.reason


def test_all_refused_is_unavailable(tmp_path: Path) -> None:
    make_tree(tmp_path)

    def refuse_all(path: str) -> str:
        raise PermissionError(errno.EPERM, "Operation not permitted", path)

    probe = DebugfsCollector(tmp_path, mount=False, reader=refuse_all).probe()
    assert not probe.available and probe.reason == LOCKDOWN_REASON


def test_live_probe_on_this_host() -> None:
    """Whatever this host allows is classified file by file, never read as 0."""
    ensure_mounted(DEBUGFS)
    c = DebugfsCollector()
    probe = c.probe()
    statuses = set(c.file_status.values())
    assert statuses <= {"ok", "EPERM", "unparsable"}
    if "EPERM" in statuses:
        assert probe.reason == LOCKDOWN_REASON and "blocking" in probe.detail["readable"]


# The debugfs tree of the nested lab's SVM host (L1 under TCG, kvm_amd, lockdown
# `none`), captured by tests/fixtures/capture-nested with the `kvm` scenario running:
# tests/fixtures/fs/nested-svm/README.md lists the QEMU pids.
NESTED_SVM = Path(__file__).resolve().parents[1] / "fixtures" / "fs" / "nested-svm"


def test_captured_svm_host_tree_reads_every_cumulative_stat() -> None:
    c = DebugfsCollector(NESTED_SVM, mount=False)
    probe = c.probe()
    assert probe.available and probe.reason is None
    pio = GuestSample(uuid="p", name="lab-probe-pio", pid=376, vcpus=(VcpuSample(0),))
    idle = GuestSample(uuid="i", name="lab-idle", pid=404, vcpus=(VcpuSample(0),))
    out_pio, out_idle = c.enrich([pio, idle])
    assert "EPERM" not in c.file_status.values()
    d = out_pio.debugfs
    assert (d["exits"], d["io_exits"], d["halt_exits"]) == (514671, 478801, 22279)
    # The pio20 probe: 20 port writes and one hlt per PIT tick, so IO exits dominate.
    assert d["io_exits"] / d["exits"] > 0.9
    assert d["halt_exits"] * 20 == pytest.approx(d["io_exits"], rel=0.1)
    assert [(v.index, v.tid) for v in out_pio.vcpus] == [(0, 383)]
    # The idle Linux guest under KVM: halts most, polls some (halt_poll_ns 200000).
    i = out_idle.debugfs
    assert i["halt_exits"] == 21490 and i["halt_attempted_poll"] == 117
    assert i["halt_successful_poll"] <= i["halt_attempted_poll"]
    assert i["halt_wait_ns"] > 0 and out_idle.vcpus[0].tid == 415
