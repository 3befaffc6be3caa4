"""Issue #17 in the TUI: the incidents panel lists incidents, ranked, each expandable
to its findings, with the evidence and advice of the row under the cursor; Enter on a
finding of a guest opens that guest."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from kvmtop.app.main import KvmtopApp
from kvmtop.detectors.incidents import IncidentTracker
from kvmtop.model.finding import Finding
from kvmtop.model.incident import Incident
from kvmtop.model.snapshot import Snapshot
from kvmtop.views.guest_detail import GuestDetailScreen
from kvmtop.views.guest_table import GuestTable
from kvmtop.views.incidents import (
    NOTICES,
    IncidentsPanel,
    IncidentTable,
    incident_key,
    is_notice,
    notices_cells,
)
from tests.app.builders import FakeFeed, GuestSpec, grouped, snapshot, wait_until
from tests.app.test_replay_nav import notes_of

SIZE = (120, 40)
GUESTS = [
    GuestSpec("web-01", vcpus=4, cpu_pct=35, steal_pct=22),
    GuestSpec("web-02", vcpus=4, cpu_pct=33, steal_pct=21),
    GuestSpec("db-primary", vcpus=8, cpu_pct=60, disk_iops=900, disk_ms=31),
    GuestSpec("db-replica", vcpus=8, cpu_pct=20, steal_pct=8),
    GuestSpec("cache", vcpus=2, cpu_pct=12),
    GuestSpec("mail", vcpus=2, cpu_pct=4),
    GuestSpec("batch-07", vcpus=2, cpu_pct=40),
]
UUID = {g.name: g.uuid for g in GUESTS}
NOW = snapshot(GUESTS).wall_s
"""Wall time of the frame the tests show (frame 1)."""


def steal(
    name: str,
    severity: str,
    since_s: float,
    *,
    why: str = "CPU contention on the host",
    cause: str = "",
    with_: tuple[str, ...] = (),
) -> Finding:
    """A steal finding about a guest, as the detector words it."""
    return Finding(
        "steal",
        severity,
        UUID[name],
        name,
        f"steal max 22% (vCPU 1), mean 20%: {why}",
        since_s,
        guest=name,
        evidence={"steal_mean_pct": 20.0, "steal_max_pct": 22.0},
        cause=cause,
        cause_guests=with_,
    )


def pinned(name: str, other: str, since_s: float) -> Finding:
    """A steal finding of the pinning collision of web-01 and web-02 on CPUs 2-3."""
    return steal(
        name,
        "critical",
        since_s,
        why=f"pinning collision on CPU 2-3 with {other}",
        cause="pinning:cpu=2-3",
        with_=("web-01", "web-02"),
    )


PINNED = (pinned("web-01", "web-02", NOW - 300), pinned("web-02", "web-01", NOW - 240))
"""A pinning collision: one critical incident of two guests."""
DISK = Finding(
    "disk_latency",
    "warning",
    "vda",
    "vda",
    "vda read 31.0 ms/req (900 reqs in 10 s; limit 20.0 ms): above the device",
    NOW - 120,
    guest="db-primary",
    evidence={"read_ms": 31.0, "host_dev_ms": 0.6},
    cause=f"disk-above-device:{UUID['db-primary']}",
)
"""A guest's disk slow above its host device: the finding's subject is the disk."""
REPLICA = steal("db-replica", "warning", NOW - 600)
"""A warning that cleared 60 s ago and came back: flapped once."""
NOTICES_OF = tuple(
    Finding(
        "memory_leak",
        "info",
        UUID[n],
        n,
        "no balloon stats (no virtio balloon device): leak check off",
        NOW - 900,
        guest=n,
    )
    for n in ("cache", "mail")
)
"""Two info-level notices."""
GONE = steal("batch-07", "warning", NOW - 200)
"""A warning that cleared 30 s ago: kept, inactive, within the incident gap."""


def incidents() -> tuple[Incident, ...]:
    """The incidents of the scenario at NOW, through the real tracker."""
    tracker = IncidentTracker()
    grouped(NOW - 90, (REPLICA, GONE, *NOTICES_OF), tracker)
    grouped(NOW - 60, (GONE, *NOTICES_OF), tracker)
    return grouped(NOW, (*PINNED, DISK, REPLICA, *NOTICES_OF), tracker)


def frame(**kw: Any) -> Snapshot:
    """Frame 1 of the scenario (or with other incidents)."""
    findings = (*PINNED, DISK, REPLICA, *NOTICES_OF)
    return snapshot(GUESTS, findings=findings, incidents=kw.pop("incidents", incidents()), **kw)


def titles(app: KvmtopApp) -> list[str]:
    """The rows' last cells, as drawn (before cropping)."""
    table = app.query_one(IncidentTable)
    return [table.row_cells(key)[-1].text.strip() for key in table.row_keys]


def detail(app: KvmtopApp) -> str:
    """The detail lines under the table."""
    return str(app.query_one("#incident-detail").render())


async def shown(pilot: Pilot[None], app: KvmtopApp) -> None:
    """Wait for the first frame."""
    await wait_until(pilot, lambda: app.displayed is not None)
    await pilot.pause()


async def test_incidents_in_rank_order_notices_folded_and_the_top_one_described() -> None:
    app = KvmtopApp(FakeFeed([frame()]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        panel = app.query_one(IncidentsPanel)
        assert panel.has_class("-has-incidents") and panel.border_title == "incidents 6"
        table = app.query_one(IncidentTable)
        # Rank order (active first, critical, then impact), the cleared one after the
        # active ones, the two notices folded into the last row.
        assert titles(app) == [
            "Pinning collision on CPU 2-3: web-01, web-02 steal from each other",
            "db-replica: steal max 22% (vCPU 1), mean 20%: CPU contention on the host",
            "db-primary: disk latency above the host device on vda",
            "(cleared) batch-07: steal max 22% (vCPU 1), mean 20%: CPU contention on the host",
            "2 notices: mail: no balloon stats (no virtio balloon device): leak check off; "
            "cache: no balloon stats (no virtio balloon device): leak check off",
        ]
        top = [c.text.strip() for c in table.row_cells(table.row_keys[0])]
        assert top[:6] == ["▸ 1", "critical", "15:55:02", "5m00s", "", "2"]
        replica = [c.text.strip() for c in table.row_cells(table.row_keys[1])]
        assert replica[3:5] == ["10m00s", "1×"]  # flapped once
        gone = table.row_cells(table.row_keys[3])
        assert {c.level for c in gone} == {"dim"}
        # What is wrong, why and what to do, for the top incident, without a key.
        assert table.cursor_row == 0
        text = detail(app)
        assert text.startswith("critical Pinning collision on CPU 2-3")
        assert "evidence steal_max_pct=22, steal_mean_pct=20" in text
        assert "advice   Pin these guests' vCPUs to separate host CPUs" in text


async def test_enter_lists_an_incidents_findings_and_opens_a_guest() -> None:
    feed = FakeFeed([frame()])
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(IncidentTable)
        await pilot.press("i")
        assert app.focused is table
        await pilot.press("enter")  # the pinning collision: its two findings under it
        assert titles(app)[:3] == [
            "Pinning collision on CPU 2-3: web-01, web-02 steal from each other",
            "└ web-01 · steal: steal max 22% (vCPU 1), mean 20%: pinning collision on CPU 2-3 "
            "with web-02",
            "└ web-02 · steal: steal max 22% (vCPU 1), mean 20%: pinning collision on CPU 2-3 "
            "with web-01",
        ]
        assert table.row_cells(table.row_keys[0])[0].text == "▾ 1"
        await pilot.press("down", "down")
        assert detail(app).startswith("critical web-02 · steal: steal max 22%")
        assert "advice   Pin these guests' vCPUs" in detail(app)  # the incident's
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, GuestDetailScreen) and app.screen.uuid == UUID["web-02"]
        assert feed.focused[-1] == UUID["web-02"]
        await pilot.press("escape")
        await pilot.pause()
        # Back: still listed; Enter on the incident folds it.
        await pilot.press("home", "enter")
        assert len(titles(app)) == 5


async def test_a_disk_finding_opens_its_guest_and_notices_list_on_enter() -> None:
    app = KvmtopApp(FakeFeed([frame()]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(IncidentTable)
        table.focus()
        await pilot.press("end")  # the notices row
        assert detail(app).startswith("info 2 info-level incident(s)")
        await pilot.press("enter")
        assert NOTICES in table.expanded
        assert titles(app)[5:] == [
            "mail: no balloon stats (no virtio balloon device): leak check off",
            "cache: no balloon stats (no virtio balloon device): leak check off",
        ]
        # The disk finding's subject is the disk: Enter opens its guest by name.
        table.move_cursor(
            table.row_keys.index(
                incident_key(
                    next(i.id for i in app.displayed.incidents if i.kind == "disk_above_device")
                )
            )
        )
        await pilot.press("enter", "down")
        assert (
            titles(app)[3] == "└ db-primary vda · disk_latency: vda read 31.0 ms/req "
            "(900 reqs in 10 s; limit 20.0 ms): above the device"
        )
        assert "evidence read_ms=31, host_dev_ms=0.6" in detail(app)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, GuestDetailScreen)
        assert app.screen.uuid == UUID["db-primary"]


async def test_a_guest_gone_from_the_frame_is_said_not_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gone = [g for g in GUESTS if g.name != "web-02"]
    app = KvmtopApp(FakeFeed([snapshot(gone, incidents=incidents())]))
    notes = notes_of(app, monkeypatch)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("i", "enter", "down", "down", "enter")
        await pilot.pause()
        assert not isinstance(app.screen, GuestDetailScreen)
        assert notes == ["web-02 is not in this frame"]


async def test_many_incidents_scroll_with_the_cursor() -> None:
    many = tuple(
        Finding(
            "steal",
            "warning",
            f"uuid-{n}",
            f"vm-{n:02d}",
            "steal",
            NOW - 60 - n,
            guest=f"vm-{n:02d}",
        )
        for n in range(30)
    )
    app = KvmtopApp(FakeFeed([frame(incidents=grouped(NOW, many))]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(IncidentTable)
        page = table.scrollable_content_region.height - 1
        assert table.row_count == 30 > page
        await pilot.press("i", "end")
        assert table.cursor_row == 29 and table.scroll_offset.y == 30 - page
        assert detail(app).startswith("warning vm-00: steal")  # the youngest: least impact


async def test_no_incidents_plainly_and_i_stays_on_the_guests() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        panel = app.query_one(IncidentsPanel)
        assert not panel.has_class("-has-incidents")
        assert str(panel.query_one("#no-incidents").render()) == "no incidents"
        await pilot.press("i")
        assert isinstance(app.focused, GuestTable)


async def test_i_and_tab_move_between_guests_and_incidents() -> None:
    feed = FakeFeed([frame()])
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("i")
        assert isinstance(app.focused, IncidentTable)
        await pilot.press("i")
        assert isinstance(app.focused, GuestTable)
        await pilot.press("tab")
        assert isinstance(app.focused, IncidentTable)
        # The incidents end: the panel says so, and the keys go back to the guests.
        feed.push(snapshot(GUESTS, seq=2))
        await wait_until(pilot, lambda: app.displayed is not None and app.displayed.seq == 2)
        await pilot.pause()
        assert isinstance(app.focused, GuestTable)
        help_keys = dict(app.key_help())
        assert help_keys["i"] == "Keys to the incidents (again: back to the guests)"
        assert help_keys["Enter on a finding"] == "open its guest's detail"


def test_the_notices_row_names_the_first_ten() -> None:
    many = tuple(
        Finding(
            "memory_leak",
            "info",
            f"uuid-{n}",
            f"vm-{n:02d}",
            "leak check off",
            NOW,
            guest=f"vm-{n:02d}",
        )
        for n in range(12)
    )
    notices = [i for i in grouped(NOW, many) if is_notice(i)]
    assert len(notices) == 12
    cells = notices_cells(notices, expanded=False)
    assert cells[-1].text.startswith(" 12 notices: vm-")
    assert cells[-1].text.count("leak check off") == 10 and cells[-1].text.endswith("; 2 more")
    assert cells[-2].text == "12"  # findings
