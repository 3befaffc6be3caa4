"""KVM internals in the model: exits by reason and their source, silent kvm_exit,
halt-polling verdict, helper-thread rates, and their batch JSON."""

from __future__ import annotations

from typing import Any

import pytest

from kvmtop.model.as_json import guest_json
from kvmtop.model.rates.guest import NA_NOT_KVM, derive_guest
from kvmtop.model.rates.kvm import (
    EXIT_SOURCE_BINARY,
    EXIT_SOURCE_DEBUGFS,
    EXIT_SOURCE_TRACEPOINTS,
    NA_KVM_EXIT_SILENT,
    NA_NO_EXIT_SPLIT,
    kvm_exit_silent,
)
from kvmtop.model.sample import GuestSample, ThreadSample, VcpuSample
from kvmtop.model.units import NS_PER_S


def guest(
    t: float,
    *,
    binary: dict[str, float] | None = None,
    debugfs: dict[str, float] | None = None,
    trace: dict[str, float] | None = None,
    threads: tuple[tuple[int, str, float, float], ...] = (),
    accel: str = "kvm",
) -> GuestSample:
    """A guest whose counters grew at the given per-second rates for `t` seconds."""
    kvm = {f"{k}.sum": int(v * t) for k, v in (binary or {}).items()}
    return GuestSample(
        uuid="u",
        name="g",
        state="running",
        accel=accel,
        pid=100,
        vcpus=(VcpuSample(0, kvm=kvm),),
        debugfs={k: int(v * t) for k, v in (debugfs or {}).items()},
        exit_reasons={k: int(v * t) for k, v in (trace or {}).items()},
        threads=tuple(
            ThreadSample(
                tid,
                kind,
                f"{kind}-{tid}",
                run_ns=int(run * NS_PER_S * t),
                delay_ns=int(d * NS_PER_S * t),
            )
            for tid, kind, run, d in threads
        ),
    )


def rates(**kw: Any) -> Any:
    return derive_guest(guest(10, **kw), guest(12, **kw), 2.0, 0.0)


# PVM lab probe: 200 port writes per PIT tick; io_exits stays 0, kvm_exit silent.
PVM_BINARY = {
    "exits": 3660,
    "halt_exits": 18,
    "io_exits": 0,
    "insn_emulation": 18900,
    "irq_window_exits": 2,
}
PVM_TRACE = {
    "kvm_exit:total": 0,
    "kvm_pio:total": 3640,
    "kvm_userspace_exit:IO": 3640,
    "kvm_userspace_exit:HLT": 0,
    "kvm_emulate_insn:total": 18900,
}


def test_silent_kvm_exit_falls_back_to_categories_and_tracepoints() -> None:
    g = rates(binary=PVM_BINARY, trace=PVM_TRACE)
    assert g.exits_per_s == pytest.approx(3660)
    assert g.exit_source == EXIT_SOURCE_BINARY
    assert g.na["exits_by_reason"] == NA_KVM_EXIT_SILENT
    # io_exits from kvm_pio (its binary stat stays 0); nothing left over for "other";
    # insn_emulation is not one per exit, so it is no part of the split.
    split = g.exits_by_reason
    assert split == pytest.approx({"halt_exits": 18, "irq_window_exits": 2, "io_exits": 3640})
    assert max(split, key=split.get) == "io_exits"
    assert g.exit_categories["insn_emulation"] == pytest.approx(18900)
    # Tracepoint rates: what moved, and every total (a silent one shows as 0).
    assert g.tracepoint_rates == pytest.approx(
        {
            "kvm_exit:total": 0,
            "kvm_pio:total": 3640,
            "kvm_userspace_exit:IO": 3640,
            "kvm_emulate_insn:total": 18900,
        }
    )


def test_without_tracing_the_remainder_is_other() -> None:
    g = rates(binary=PVM_BINARY)
    assert g.exits_by_reason == pytest.approx(
        {"halt_exits": 18, "irq_window_exits": 2, "other": 3640}
    )
    assert "exits_by_reason" not in g.na and g.tracepoint_rates == {}


def test_tracepoints_split_by_hardware_reason() -> None:
    g = rates(
        binary={"exits": 1000, "halt_exits": 600},
        trace={
            "kvm_exit:total": 1000,
            "kvm_exit:HLT": 600,
            "kvm_exit:IO_INSTRUCTION": 390,
            "kvm_exit:CPUID": 0,
        },
    )
    assert g.exit_source == EXIT_SOURCE_TRACEPOINTS
    # 10/s matched no reason filter (flagged exits): shown as "other", zeros left out.
    assert g.exits_by_reason == pytest.approx({"HLT": 600, "IO_INSTRUCTION": 390, "other": 10})
    assert g.exits_per_s == pytest.approx(1000)  # still the binary stat
    assert "exits_by_reason" not in g.na


def test_tracepoints_only_give_the_total_too() -> None:
    g = rates(trace={"kvm_exit:total": 500, "kvm_exit:HLT": 500})
    assert g.exits_per_s == pytest.approx(500)
    assert (g.exit_source, g.exits_by_reason) == (EXIT_SOURCE_TRACEPOINTS, {"HLT": 500.0})


def test_debugfs_source() -> None:
    g = rates(debugfs={"exits": 300, "halt_exits": 100, "io_exits": 150, "blocking": 0})
    assert g.exit_source == EXIT_SOURCE_DEBUGFS
    assert g.exits_per_s == pytest.approx(300)
    assert g.exits_by_reason == pytest.approx({"halt_exits": 100, "io_exits": 150, "other": 50})


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({}, NA_NO_EXIT_SPLIT),
        ({"debugfs": {"blocking": 1, "pages_4k": 3}}, NA_NO_EXIT_SPLIT),  # lockdown
        ({"accel": "tcg"}, NA_NOT_KVM),
    ],
)
def test_no_source_splits_exits(kw: dict[str, Any], reason: str) -> None:
    g = rates(**kw)
    assert g.exits_by_reason is None and g.exit_source is None
    assert g.na["exits_by_reason"] == reason


def test_first_sample_has_no_split() -> None:
    g = derive_guest(None, guest(10, binary=PVM_BINARY, trace=PVM_TRACE), 0.0, 0.0)
    assert g.exits_by_reason is None and g.tracepoint_rates == {}


@pytest.mark.parametrize(
    ("kvm_exit", "exits", "silent"),
    [(0, 3600, True), (3600, 3600, False), (0, 0, False), (None, 5, None), (0, None, None)],
)
def test_kvm_exit_silent(kvm_exit: float | None, exits: float | None, silent: bool | None) -> None:
    assert kvm_exit_silent(kvm_exit, exits) is silent


@pytest.mark.parametrize(
    ("ok_ns", "fail_ns", "pct", "hint"),
    [
        (0, 0, 0.0, False),
        (50_000_000, 10_000_000, 6.0, False),  # polling pays off
        (1_000_000, 50_000_000, 5.1, True),  # 5 % of a core wasted
        (0, 5_000_000, 0.5, False),  # fails, but below HALT_POLL_HINT_MIN_PCT
    ],
)
def test_halt_poll(ok_ns: int, fail_ns: int, pct: float, hint: bool) -> None:
    g = rates(binary={"halt_poll_success_ns": ok_ns, "halt_poll_fail_ns": fail_ns})
    assert g.halt_poll_cpu_pct == pytest.approx(pct)
    assert (g.halt_poll_hint is not None) is hint
    if hint:
        assert "halt_poll_ns" in g.halt_poll_hint and "cpuidle-haltpoll" in g.halt_poll_hint  # type: ignore[operator]


def test_halt_poll_from_debugfs_and_unknown() -> None:
    g = rates(debugfs={"halt_poll_success_ns": 20_000_000, "halt_poll_fail_ns": 0})
    assert g.halt_poll_cpu_pct == pytest.approx(2.0)
    assert rates().halt_poll_cpu_pct is None


def test_thread_rates() -> None:
    spec = (
        (100, "emulator", 0.05, 0.01),
        (101, "iothread", 0.10, 0.0),
        (102, "iothread", 0.02, 0.0),
        (103, "vhost", 0.30, 0.20),
    )
    g = rates(threads=spec)
    by_tid = {t.tid: t for t in g.threads}
    assert by_tid[103].cpu_pct == pytest.approx(30.0) and by_tid[103].delay_pct == pytest.approx(
        20.0
    )
    assert g.thread_pct("iothread") == pytest.approx((12.0, 0.0))
    assert g.thread_pct("emulator") == pytest.approx((5.0, 1.0))
    assert g.thread_pct("other") == (None, None)
    # A thread that appeared in this interval has no rate yet.
    new = derive_guest(guest(10), guest(12, threads=spec), 2.0, 0.0)
    assert all(t.cpu_pct is None for t in new.threads)


def test_batch_json_fields() -> None:
    j = guest_json(
        rates(binary=PVM_BINARY, trace=PVM_TRACE, threads=((100, "emulator", 0.05, 0.0),))
    )
    assert j["exit_source"] == EXIT_SOURCE_BINARY
    assert j["exits_by_reason"]["io_exits"] == pytest.approx(3640)
    assert j["halt_poll_cpu_pct"] is None
    assert j["managed"] == "libvirt"
    assert j["threads"] == [
        {"tid": 100, "kind": "emulator", "name": "emulator-100", "cpu_pct": 5.0, "delay_pct": 0.0}
    ]
    assert guest_json(rates(accel="tcg"))["exits_by_reason"] is None
