"""steal and exit_storm: trigger, near miss, hysteresis, attribution, reset, stale data."""

from __future__ import annotations

import pytest

from tests.detectors.builders import GuestSpec, HostSpec, VcpuSpec, World, active

# ------------------------------------------------------------------ steal


@pytest.mark.parametrize(
    ("vcpus", "severity"),
    [
        ([(60.0, 6.0)], "warning"),  # mean ≥ 5 %
        ([(60.0, 4.0), (60.0, 11.0)], "warning"),  # max ≥ 10 %, mean 7.5 %
        ([(60.0, 25.0)], "critical"),  # mean ≥ 20 %
        ([(60.0, 4.5)], None),  # near miss
        ([(60.0, 2.0), (60.0, 2.0), (60.0, 9.5)], None),  # near miss: max 9.5, mean 4.5
        ([(0.5, 1.2), (60.0, 4.0)], None),  # the idle vCPU is ignored (would make 2.6)
        ([(0.5, 1.2), (60.0, 6.0)], "warning"),  # ... and does not dilute the mean
    ],
)
def test_steal_thresholds(vcpus: list[tuple[float, float]], severity: str | None) -> None:
    w = World([GuestSpec("u1", "g", vcpus=[VcpuSpec(cpu_pct=c, steal_pct=s) for c, s in vcpus])])
    found = active(w.run(5), "steal")
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_steal_max_sustained_five_minutes_turns_critical() -> None:
    w = World([GuestSpec("u1", "g", vcpus=[VcpuSpec(steal_pct=12.0), VcpuSpec(steal_pct=0.5)])])
    assert [f.severity for f in active(w.run(10), "steal")] == ["warning"]
    assert [f.severity for f in active(w.run(150), "steal")] == ["critical"]


def test_steal_unknown_holds_then_expires() -> None:
    w = World([GuestSpec("u1", "g", vcpus=[VcpuSpec(steal_pct=15.0)])])
    assert active(w.run(5), "steal")
    w.guest("g").vcpus[0].steal_pct = None  # libvirt stopped reporting vcpu.N.delay
    assert active(w.run(10), "steal")  # no evidence either way: held
    assert not active(w.run(25), "steal")  # no observation for > 60 s: dropped


def contended(**host: object) -> World:
    return World(
        [
            GuestSpec("u1", "a", vcpus=[VcpuSpec(steal_pct=30.0, affinity=(1,))]),
            GuestSpec("u2", "b", vcpus=[VcpuSpec(steal_pct=30.0, affinity=(1,))]),
            GuestSpec("u3", "c", vcpus=[VcpuSpec(steal_pct=0.0, affinity=(2,))]),
        ],
        HostSpec(**host),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("setup", "cause"),
    [
        ("pinned", "pinning collision on CPU 1 with b"),
        ("shared", "host CPU over-commit (1 other guest(s) stealing: b"),
        # Affinity = every host CPU is no pinning (the lab's unpinned TCG guests).
        ("unpinned", "host CPU over-commit (1 other guest(s) stealing: b"),
        ("throttled", "its own CPU quota (40% of periods throttled"),
        ("pause", "lock-holder preemption (3000 PAUSE exits/s per vCPU)"),
        ("psi", "host CPU over-commit (host PSI cpu 35%)"),
        ("alone", "CPU contention on the host"),
    ],
)
def test_steal_attribution(setup: str, cause: str) -> None:
    psi = 35.0 if setup == "psi" else 0.0
    w = contended(psi_cpu_some_pct=psi)
    if setup != "pinned":
        for g in w.guests:
            g.vcpus[0].affinity = (0, 1, 2, 3) if setup == "unpinned" else None
    a = w.guest("a")
    if setup in ("throttled", "pause", "psi", "alone"):
        w.guests.remove(w.guest("b"))
    if setup == "throttled":
        a.throttled_pct = 40.0
    if setup == "pause":
        a.exit_reasons = {"kvm_exit:PAUSE_INSTRUCTION": 3000.0}
    msg = next(f.message for f in active(w.run(5), "steal") if f.guest == "a")
    assert cause in msg
    if setup != "psi":
        assert "host PSI cpu 35%" not in msg


# ------------------------------------------------------------------ exit_storm


def storm_world(rate: float, **spec: object) -> World:
    return World([GuestSpec("u1", "k", vcpus=[VcpuSpec(exits_per_s=rate)], **spec)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("baseline", "storm", "severity"),
    [
        (None, 60_000.0, "warning"),  # above the floor; no baseline yet
        (None, 45_000.0, None),  # near miss on the floor
        (1_000.0, 60_000.0, "warning"),  # > max(50k, 10 × 1k)
        (10_000.0, 60_000.0, None),  # near miss on the relative rule: 10 × 10k = 100k
        (10_000.0, 120_000.0, "warning"),
        (30_000.0, 250_000.0, "critical"),  # above the ceiling whatever the median
    ],
)
def test_exit_storm_floor_and_own_median(
    baseline: float | None, storm: float, severity: str | None
) -> None:
    w = storm_world(baseline or storm)
    if baseline is not None:
        w.run(40)  # 80 s of history: the relative rule applies
        w.guest("k").vcpus[0].exits_per_s = storm
    found = active(w.run(4), "exit_storm")
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_exit_storm_hysteresis_and_classification() -> None:
    w = storm_world(1_000.0)
    w.run(40)
    v = w.guest("k").vcpus[0]
    v.exits_per_s = 90_000.0
    v.categories = {"mmio_exits": 80_000.0, "halt_exits": 5_000.0}
    assert [bool(active(w.engine(w.push()), "exit_storm")) for _ in range(3)] == [
        False,
        False,
        True,
    ]
    msg = active(w.engine(w.window), "exit_storm")[0].message
    assert "90.0k exits/s per vCPU (90× its median 1.0k)" in msg
    assert "89% mmio_exits: emulated device (MMIO) storm" in msg
    v.exits_per_s = 1_000.0
    seen = [bool(active(w.engine(w.push()), "exit_storm")) for _ in range(4)]
    assert seen == [True, True, False, False]  # K = 3 good verdicts clear it


def test_exit_storm_reason_from_tracepoints_and_debugfs_fallback() -> None:
    w = World(
        [
            GuestSpec(
                "u1",
                "k",
                vcpus=[VcpuSpec(exits_per_s=None)],
                debugfs_exits_per_s=70_000.0,
                exit_reasons={"kvm_exit:MSR_WRITE": 60_000.0, "kvm_exit:HLT": 10_000.0},
            )
        ]
    )
    msg = active(w.run(5), "exit_storm")[0].message
    assert "70.0k exits/s per vCPU" in msg and "MSR_WRITE: timer storm" in msg


def test_exit_storm_ignores_tcg_and_restart_resets_the_median() -> None:
    w = storm_world(90_000.0, accel="tcg")
    assert not active(w.run(5), "exit_storm")
    w = storm_world(1_000.0)
    w.run(40)
    w.guest("k").pid = 200  # QEMU restarted: the old median is meaningless
    w.reset_counters("u1:")
    w.guest("k").vcpus[0].exits_per_s = 40_000.0
    assert not active(w.run(5), "exit_storm")  # below the floor, no baseline any more
