"""Incidents: findings grouped by cause, ranked by time to harm, without flapping."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kvmtop.detectors.incidents import (
    ADVICE,
    HISTORY_MAX,
    HISTORY_S,
    KINDS,
    IncidentTracker,
    incident_id,
    rank_key,
)
from kvmtop.detectors.settings import (
    DETECTOR_IDS,
    DetectorSettings,
    QemuGrowthSettings,
)
from kvmtop.model.finding import Finding
from tests.detectors.builders import (
    DiskSpec,
    GuestSpec,
    HostDiskSpec,
    HostSpec,
    NetDevSpec,
    NicSpec,
    VcpuSpec,
    World,
    balloon,
)
from tests.records import replace

Step = Callable[[World, int], None]


def track(w: World, ticks: int, step: Step | None = None) -> IncidentTracker:
    """Push `ticks` samples through the world's engine into a tracker."""
    tracker = IncidentTracker(w.engine.settings)
    for i in range(ticks):
        if step is not None:
            step(w, i)
        findings = w.engine(w.push())
        tracker.update(w.wall_s, findings)
    return tracker


# ------------------------------------------------------------------ worlds


def stealing(name: str, uuid: str, cpus: tuple[int, ...] | None, steal: float = 30.0) -> GuestSpec:
    return GuestSpec(uuid, name, vcpus=[VcpuSpec(steal_pct=steal, affinity=cpus)])


def pinned() -> World:
    """a, b, c pinned to CPU 1 and stealing; d alone on CPU 3 and stealing (host
    over-commit: several guests steal); e on CPU 1 but idle."""
    guests = [stealing(n, f"u{i}", (1,)) for i, n in enumerate("abc", 1)]
    guests += [stealing("d", "u4", (3,)), stealing("e", "u5", (1,), steal=0.0)]
    return World(guests, HostSpec(ncpu=8))


def chained() -> World:
    """a on CPU 1, b on CPUs 1-2, c on CPU 2: one collision through b."""
    return World(
        [stealing("a", "u1", (1,)), stealing("b", "u2", (1, 2)), stealing("c", "u3", (2,))],
        HostSpec(ncpu=8),
    )


def overcommitted() -> World:
    """Three unpinned 1-vCPU guests stealing on two host CPUs (vCPU:pCPU 1.5)."""
    return World([stealing(n, f"u{i}", None) for i, n in enumerate("abc", 1)], HostSpec(ncpu=2))


def switched(drops: dict[str, float], uplink_bps: float = 0.0) -> World:
    """Guests on br0 with RX drops per second; eth0, its 1 Gbit/s uplink, at `uplink_bps`."""
    guests = [
        GuestSpec(f"u{i}", name, nics=[NicSpec(f"vnet{i}", rx_drops=d)])
        for i, (name, d) in enumerate(drops.items())
    ]
    netdevs = [NetDevSpec("br0", "bridge")]
    netdevs += [NetDevSpec(f"vnet{i}", "tap", master="br0") for i in range(len(drops))]
    netdevs.append(NetDevSpec("eth0", "physical", "br0", 1000, tx_bps=uplink_bps))
    return World(guests, HostSpec(netdevs=netdevs))


def disks(host_ms: float, util: float, *targets: tuple[str, str, bool]) -> World:
    """Guests' disks at 60 ms (guest name, target, backing device resolved) on sda or
    sdb, with sda at `host_ms` and `util` % busy."""
    guests: dict[str, GuestSpec] = {}
    for name, target, resolved in targets:
        g = guests.setdefault(name, GuestSpec(f"u-{name}", name))
        disk = DiskSpec(target, rd_iops=50.0, rd_ms=60.0, host_dev="sda" if resolved else None)
        g.disks.append(disk)
    host = HostSpec(disks=[HostDiskSpec("sda", ms=host_ms, util_pct=util), HostDiskSpec("sdb")])
    return World(list(guests.values()), host)


def alone() -> World:
    """One guest in an exit storm and stealing on a quiet host: two causes of its own."""
    g = GuestSpec("u1", "k", vcpus=[VcpuSpec(steal_pct=15.0, exits_per_s=90_000.0)])
    return World([g])


LEAK_SETTINGS = DetectorSettings(
    qemu_memory_growth=QemuGrowthSettings(min_over_mib=16.0, min_duration_s=300.0)
)


def leaking() -> World:
    return World([GuestSpec("u1", "leaky")], settings=LEAK_SETTINGS)


def leak_step(w: World, i: int) -> None:
    """Guest used memory +5 MiB/min of 80 MiB and QEMU RSS +20 MiB/min above its 128 MiB,
    with a balloon update every 10 s."""
    if i % 5 == 0:
        t = 2.0 * i
        w.guests[0].balloon = balloon(
            20.0 + 5.0 * t / 60.0, rss_mib=192.0 + 20.0 * t / 60.0, last_update_s=w.wall_s + 1
        )


Member = tuple[str, str | None, str]
"""(detector, guest, subject name)."""

STEAL = "steal"


@pytest.mark.parametrize(
    ("world", "ticks", "step", "expect"),
    [
        pytest.param(
            pinned,
            6,
            None,
            {
                "pinning:cpu=1": (
                    "pinning",
                    {(STEAL, "a", "a"), (STEAL, "b", "b"), (STEAL, "c", "c")},
                    ("a", "b", "c"),
                ),
                "overcommit:host": ("overcommit", {(STEAL, "d", "d")}, ("d",)),
            },
            id="pinned to one CPU",
        ),
        pytest.param(
            chained,
            6,
            None,
            {
                "pinning:cpu=1,2": (
                    "pinning",
                    {(STEAL, "a", "a"), (STEAL, "b", "b"), (STEAL, "c", "c")},
                    ("a", "b", "c"),
                ),
            },
            id="pinning chained through shared CPUs",
        ),
        pytest.param(
            overcommitted,
            6,
            None,
            {
                "overcommit:host": (
                    "overcommit",
                    {
                        ("overcommit", None, "host vCPUs"),
                        (STEAL, "a", "a"),
                        (STEAL, "b", "b"),
                        (STEAL, "c", "c"),
                    },
                    ("a", "b", "c"),
                ),
            },
            id="host over-commit",
        ),
        pytest.param(
            lambda: switched({"a": 5.0, "b": 0.0}, uplink_bps=9.5e8),
            6,
            None,
            {
                "switch:br0": (
                    "switch",
                    {("vswitch_saturation", None, "br0"), ("vnic_drops", "a", "vnet0")},
                    ("a",),
                ),
            },
            id="saturated switch and a vNIC dropping behind it",
        ),
        pytest.param(
            lambda: switched({"a": 5.0, "b": 8.0, "c": 0.0}),
            6,
            None,
            # vnic_drops stays quiet: the switch names the guests dropping.
            {"switch:br0": ("switch", {("vswitch_saturation", None, "br0")}, ("a", "b"))},
            id="several guests dropping at once",
        ),
        pytest.param(
            lambda: switched({"a": 5.0}),
            6,
            None,
            {"vnic_drops/u0/vnet0": ("single", {("vnic_drops", "a", "vnet0")}, ("a",))},
            id="vNIC dropping behind a healthy switch",
        ),
        pytest.param(
            leaking,
            300,
            leak_step,
            {
                "leak:u1": (
                    "leak",
                    {
                        ("memory_leak", "leaky", "leaky"),
                        ("qemu_memory_growth", "leaky", "leaky"),
                    },
                    ("leaky",),
                ),
            },
            id="guest and QEMU leaking",
        ),
        pytest.param(
            lambda: disks(35.0, 95.0, ("a", "vda", True), ("b", "vda", True)),
            8,
            None,
            {
                "disk:sda": (
                    "disk_device",
                    {("disk_latency", "a", "vda"), ("disk_latency", "b", "vda")},
                    ("a", "b"),
                ),
            },
            id="host device slow",
        ),
        pytest.param(
            lambda: disks(0.3, 10.0, ("a", "vda", True), ("a", "vdb", True), ("b", "vda", True)),
            8,
            None,
            {
                "disk-above-device:u-a": (
                    "disk_above_device",
                    {("disk_latency", "a", "vda"), ("disk_latency", "a", "vdb")},
                    ("a",),
                ),
                "disk-above-device:u-b": (
                    "disk_above_device",
                    {("disk_latency", "b", "vda")},
                    ("b",),
                ),
            },
            id="latency above the device",
        ),
        pytest.param(
            lambda: disks(0.3, 10.0, ("a", "vda", False)),
            8,
            None,
            {"disk_latency/u-a/vda": ("single", {("disk_latency", "a", "vda")}, ("a",))},
            id="backing device unknown",
        ),
        pytest.param(
            alone,
            6,
            None,
            {
                "exit_storm/u1": ("single", {("exit_storm", "k", "k")}, ("k",)),
                "steal/u1": ("single", {(STEAL, "k", "k")}, ("k",)),
            },
            id="unrelated findings stand alone",
        ),
    ],
)
def test_grouping_by_the_causes_detectors_give(
    world: Callable[[], World],
    ticks: int,
    step: Step | None,
    expect: dict[str, tuple[str, set[Member], tuple[str, ...]]],
) -> None:
    incidents = track(world(), ticks, step).current()
    # Info notes (no balloon stats) are incidents of their own: left out here.
    seen = {
        i.cause: (i.kind, {(m.detector, m.guest, m.subject_name) for m in i.members}, i.guests)
        for i in incidents
        if i.severity != "info"
    }
    assert seen == expect
    for i in incidents:
        assert i.active and i.kind in KINDS and i.title and i.advice
        assert all(m.active for m in i.members)


def test_incident_text_and_evidence() -> None:
    by_cause = {i.cause: i for i in track(pinned(), 6).current()}
    pin = by_cause["pinning:cpu=1"]
    assert pin.title == "Pinning collision on CPU 1: a, b, c steal from each other"
    assert pin.severity == "critical" and pin.evidence["steal_max_pct"] == 30.0
    assert "separate host CPUs" in pin.advice
    assert by_cause["overcommit:host"].title == "Host CPU over-commit: 1 guest(s) stealing: d"

    chain = {i.cause: i for i in track(chained(), 6).current()}["pinning:cpu=1,2"]
    texts = {m.guest: m.message.split(": ", 1)[1] for m in chain.members}
    assert texts["a"] == "pinning collision on CPU 1,2 with b, c"

    over = {i.cause: i for i in track(overcommitted(), 6).current()}["overcommit:host"]
    assert over.title == "Host CPU over-commit: vCPU:pCPU 1.5; 3 guest(s) stealing: a, b, c"
    assert over.evidence["vcpu_pcpu_ratio"] == 1.5
    assert "host_psi_cpu_some_pct" in over.evidence
    assert "at or below 1.2" in over.advice

    leak = {i.cause: i for i in track(leaking(), 300, leak_step).current()}["leak:u1"]
    assert leak.title.startswith("leaky leaking memory in the guest and in its QEMU process: ")
    assert leak.eta_s is not None and leak.eta_s == leak.evidence["tte_min"] * 60.0
    assert {"slope_mib_per_min", "over_mib"} <= set(leak.evidence)

    w = switched({"a": 5.0, "b": 0.0}, uplink_bps=9.5e8)
    sw = {i.cause: i for i in track(w, 6).current()}["switch:br0"]
    assert sw.title == "Switch br0 saturated, dropping packets (guests: a)"
    assert sw.evidence["uplink_util_pct"] == 95.0 and sw.evidence["rx_drops_per_s"] == 5.0
    assert "QoS" in sw.advice


# ------------------------------------------------------------------ ranking

T = 1_000.0


def finding(
    cause: str,
    severity: str = "warning",
    *,
    since: float = T - 60.0,
    guest: str | None = "g",
    detector: str = STEAL,
    evidence: dict[str, float] | None = None,
    guests: tuple[str, ...] = (),
) -> Finding:
    subject = guest or cause
    return Finding(
        detector, severity, subject, subject, "m", since, guest, evidence or {}, {}, cause, guests
    )


LEAK_10_MIN = finding("leak:u1", "critical", detector="memory_leak", evidence={"tte_min": 10.0})
LEAK_4_DAYS = finding("leak:u2", "info", detector="memory_leak", evidence={"tte_min": 5760.0})
SWITCH_CRIT = finding(
    "switch:br0",
    "critical",
    guest=None,
    detector="vswitch_saturation",
    evidence={"uplink_drops_per_s": 40.0},
)
STEAL_WARN = finding("steal/u3", guest="w")
DROPS_WARN = finding(
    "vnic_drops/u4/vnet0", guest="v", detector="vnic_drops", evidence={"rx_drops_per_s": 3.0}
)
DISK_CRIT = finding("disk:sda", "critical", guest="d", detector="disk_latency")
PIN_3_GUESTS = finding("pinning:cpu=1", since=T - 50.0, guest="a", guests=("a", "b", "c"))
ONE_GUEST_LONGER = finding("steal/u9", since=T - 100.0, guest="z")
SAME_IMPACT = finding("steal/u8", since=T - 150.0, guest="y")


@pytest.mark.parametrize(
    ("findings", "order"),
    [
        pytest.param(
            [STEAL_WARN, SWITCH_CRIT, LEAK_10_MIN],
            ["leak:u1", "switch:br0", "steal/u3"],
            id="leak ETA, then critical switch, then warning steal",
        ),
        pytest.param(
            [LEAK_4_DAYS, STEAL_WARN],
            ["steal/u3", "leak:u2"],
            id="a leak days away is info, after warnings",
        ),
        pytest.param(
            [STEAL_WARN, DROPS_WARN],
            ["vnic_drops/u4/vnet0", "steal/u3"],
            id="drops before other warnings",
        ),
        pytest.param(
            [DROPS_WARN, DISK_CRIT],
            ["disk:sda", "vnic_drops/u4/vnet0"],
            id="in the drops or critical tier, critical first",
        ),
        pytest.param(
            [ONE_GUEST_LONGER, PIN_3_GUESTS],
            ["pinning:cpu=1", "steal/u9"],
            id="3 guests x 50 s before 1 guest x 100 s",
        ),
        pytest.param(
            [ONE_GUEST_LONGER, SAME_IMPACT],
            ["steal/u8", "steal/u9"],
            id="same severity: longer first",
        ),
    ],
)
def test_ranking(findings: list[Finding], order: list[str]) -> None:
    tracker = IncidentTracker()
    tracker.update(T, findings)
    current = tracker.current()
    assert [i.cause for i in current] == order
    assert [i.rank for i in current] == list(range(1, len(order) + 1))


def test_ranking_is_total_and_deterministic() -> None:
    tracker = IncidentTracker()
    tracker.update(T, [finding("steal/u1"), finding("steal/u2")])  # same in every key
    first, second = tracker.current()
    assert (first.since_s, first.duration_s) == (second.since_s, second.duration_s)
    assert first.id < second.id
    assert [i.id for i in sorted([second, first], key=rank_key)] == [first.id, second.id]
    cleared = replace(first, active=False)
    assert sorted([cleared, second], key=rank_key) == [second, cleared]


def test_ranking_follows_every_update_as_a_fresh_sort_does() -> None:
    # The tracker sorts from its last ranking: it must come to what ranking the open
    # incidents from scratch gives, whatever changed since.
    tracker = IncidentTracker()
    ticks = [
        [STEAL_WARN, DROPS_WARN],
        [STEAL_WARN, DROPS_WARN, LEAK_10_MIN],  # a new one takes the lead
        [replace(STEAL_WARN, severity="critical"), LEAK_10_MIN],  # drops cleared
        [STEAL_WARN, SWITCH_CRIT, ONE_GUEST_LONGER],  # the leak cleared, two new
    ]
    for n, findings in enumerate(ticks):
        tracker.update(T + 2.0 * n, findings)
        current = tracker.current()
        assert list(current) == sorted(current, key=rank_key)
        assert [i.rank for i in current] == list(range(1, len(current) + 1))
    tracker.update(T + 1000.0, [DISK_CRIT])  # every other one closes
    assert [i.cause for i in tracker.current()] == ["disk:sda"]


# ------------------------------------------------------------------ flapping


@pytest.mark.parametrize(
    ("back_after_s", "incidents", "crossings"),
    [
        (60.0, 1, 1),  # back within the gap: the same incident goes on
        (180.0, 1, 1),  # exactly at the gap
        (182.0, 2, 0),  # past it: a new incident
    ],
)
def test_a_cause_back_within_the_gap_is_the_same_incident(
    back_after_s: float, incidents: int, crossings: int
) -> None:
    tracker = IncidentTracker()
    up = finding("pinning:cpu=1", since=0.0)
    for t in range(0, 20, 2):
        tracker.update(float(t), [up])
    first = tracker.current()[0]
    tracker.update(20.0, [])  # cleared: kept, inactive
    cleared = tracker.current()[0]
    assert cleared.id == first.id and not cleared.active and cleared.last_bad_s == 18.0
    assert not any(m.active for m in cleared.members)
    back = 18.0 + back_after_s
    for t in (back, back + 2.0):
        tracker.update(t, [replace(up, since_s=back)])
    history = tracker.history()
    assert len(history) == incidents
    now = tracker.current()
    assert len(now) == 1 and now[0].active and now[0].crossings == crossings
    assert (now[0].id == first.id) == (incidents == 1)
    assert now[0].since_s == (0.0 if incidents == 1 else back)
    if incidents == 2:
        closed = history[0]
        assert closed.id == first.id and not closed.active and closed.rank == 0


def test_a_cleared_incident_closes_after_the_gap() -> None:
    tracker = IncidentTracker(DetectorSettings(incident_gap_s=30.0))
    tracker.update(0.0, [finding("steal/u1", since=0.0)])
    tracker.update(2.0, [])
    tracker.update(30.0, [])
    assert [i.active for i in tracker.current()] == [False]
    tracker.update(32.0, [])
    assert tracker.current() == ()
    assert [(i.cause, i.last_bad_s, i.rank) for i in tracker.history()] == [("steal/u1", 0.0, 0)]


def test_members_join_and_leave_one_incident() -> None:
    tracker = IncidentTracker()
    a = finding("overcommit:host", guest="a", since=0.0)
    b = finding("overcommit:host", "critical", guest="b", since=4.0)
    tracker.update(4.0, [a])
    tracker.update(6.0, [a, b])
    tracker.update(8.0, [a])
    (i,) = tracker.current()
    assert i.id == incident_id("overcommit:host", 0.0) and i.crossings == 0
    assert [(m.guest, m.active) for m in i.members] == [("a", True), ("b", False)]
    assert i.guests == ("a", "b") and i.severity == "warning"  # b is no longer raised


def test_clock_going_backwards_resets() -> None:
    tracker = IncidentTracker()
    tracker.update(100.0, [finding("steal/u1", since=90.0)])
    tracker.update(102.0, [])
    tracker.update(50.0, [finding("steal/u2", since=50.0)])  # a replay seek back
    assert [i.cause for i in tracker.history()] == ["steal/u2"]
    tracker.reset()
    assert tracker.current() == () and tracker.history() == ()


def test_the_history_keeps_the_latest_closed_incidents() -> None:
    """A long-running process keeps at most HISTORY_MAX closed incidents, the first
    closed dropped first."""
    tracker = IncidentTracker(DetectorSettings(incident_gap_s=0.0))
    for n in range(HISTORY_MAX + 5):
        tracker.update(2.0 * n, [finding(f"steal/u{n}", since=2.0 * n)])
        tracker.update(2.0 * n + 1, [])  # cleared, and past the gap: closed
    history = tracker.history()
    assert tracker.current() == () and len(history) == HISTORY_MAX
    assert [i.cause for i in history[:2]] == ["steal/u5", "steal/u6"]


def test_the_history_forgets_incidents_past_its_horizon() -> None:
    tracker = IncidentTracker(DetectorSettings(incident_gap_s=0.0))
    tracker.update(0.0, [finding("steal/u1", since=0.0)])
    tracker.update(HISTORY_S, [finding("steal/u2", since=HISTORY_S)])  # u1 closes
    assert [i.cause for i in tracker.history()] == ["steal/u1", "steal/u2"]
    tracker.update(HISTORY_S + 1.0, [finding("steal/u2", since=HISTORY_S)])
    assert [i.cause for i in tracker.history()] == ["steal/u2"]  # u1 ended > HISTORY_S ago


# ------------------------------------------------------------------ keys and advice


def test_a_finding_recorded_without_a_cause_stands_alone() -> None:
    tracker = IncidentTracker()
    tracker.update(T, [finding(""), finding("", guest="h")])
    assert sorted(i.cause for i in tracker.current()) == ["steal/g", "steal/h"]


@pytest.mark.parametrize("detector", DETECTOR_IDS)
@pytest.mark.parametrize("subject", ["host:cpu", "host:memory", "host:sched:sda", "u1"])
def test_every_finding_alone_gets_advice(detector: str, subject: str) -> None:
    guest = "g" if subject == "u1" else None
    f = Finding(detector, "warning", subject, subject, "m", T, guest, cause=f"{detector}/x")
    tracker = IncidentTracker()
    tracker.update(T, [f])
    (i,) = tracker.current()
    assert i.kind == "single" and i.advice in {
        text.format(vcpu_ratio=1.2, mem_reserve_pct=10.0) for text in ADVICE.values()
    }
