"""Issue #16 in the TUI: a name's control and bidi characters are drawn escaped on
every screen (guest table, incidents and their findings, host strip, detail, side by
side, sources, palette, the replay's incident notice), never sent raw to the terminal,
and a name that looks like markup is shown as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.content import Content

from kvmtop.app.main import KvmtopApp
from kvmtop.model.finding import Finding
from kvmtop.model.sample import Sample, SourceStatus
from kvmtop.model.snapshot import Snapshot
from kvmtop.views.compare import SideBySide
from kvmtop.views.guest_detail import GuestDetailScreen
from kvmtop.views.guest_table import KeyedTable
from kvmtop.views.sources import SourcesScreen
from tests.app.builders import (
    DEFAULT_SOURCES,
    NS,
    T0,
    FakeFeed,
    GuestSpec,
    HostSpec,
    host_sample,
    snapshot,
    wait_until,
)
from tests.app.test_replay_nav import guest, replay_feed
from tests.hostile import BAD, BAD_SHOWN, BIDI, BIDI_SHOWN, assert_no_raw
from tests.records import replace
from tests.store.conftest import write

SIZE = (200, 50)
EVIL = GuestSpec(BAD, cpu_pct=50, steal_pct=12)
MIRROR = GuestSpec(BIDI, cpu_pct=40)
DOWN = GuestSpec(BAD + "-down", state="shutoff")


def screen_text(app: KvmtopApp) -> str:
    """Every character the current screen would send to the terminal, line by line
    (what the compositor draws: widgets, borders, notifications)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


def hostile_snapshot(**kw: Any) -> Snapshot:
    """A frame with hostile guest, device, interface and source names, a finding
    about the hostile guest, and a host figure whose reason names one."""
    status = SourceStatus("libvirt", False, reason=f"domain {BAD} vanished", detail={"uri": BIDI})
    snap = snapshot(
        [EVIL, MIRROR, DOWN],
        sources=(*DEFAULT_SOURCES[:1], status),
        **kw,
        findings=(
            Finding("steal", "warning", EVIL.uuid, BAD, f"{BAD} waits for a CPU", T0, guest=BAD),
        ),
    )
    host = snap.host
    return replace(
        snap,
        host=replace(
            host,
            disks=tuple(replace(d, name=f"{BIDI}{d.name}") for d in host.disks),
            nets=tuple(replace(n, name=f"{BAD}{n.name}") for n in host.nets),
            na={**host.na, "run_delay_pct": f"no {BAD}"},
        ),
    )


async def test_main_screen_shows_names_escaped() -> None:
    app = KvmtopApp(
        FakeFeed([hostile_snapshot(recording=f"/tmp/{BIDI}.kvmtop")]),
        title_suffix=f"replay of {BAD}",
    )
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.displayed is not None)
        await pilot.pause()
        text = screen_text(app)
        assert_no_raw(text)
        # The guest table (the name column crops at 18 cells), the incident's title
        # (the finding's subject and message), the host strip's disk, uplink, reason,
        # title and path.
        assert BAD_SHOWN[:18] in text and BIDI_SHOWN in text
        assert f"{BAD_SHOWN} waits for a CPU" in text
        for shown in (
            f"{BIDI_SHOWN}nvme0n1",
            f"{BAD_SHOWN}eno1",
            f"no {BAD_SHOWN}",
            f"replay of {BAD_SHOWN}",
            f"/tmp/{BIDI_SHOWN}.kvmtop",
        ):
            assert shown in text.replace("\N{NO-BREAK SPACE}", " ")


async def test_incidents_and_their_findings_show_names_escaped() -> None:
    switch = f"{BAD}br0"
    shown_switch = f"{BAD_SHOWN}br0"
    odd = GuestSpec("a[/]b", cpu_pct=5)  # markup-like: shown as it is
    findings = (
        Finding(
            "vswitch_saturation",
            "critical",
            switch,
            switch,
            f"uplink of {switch} at 98%: [red]dropping[/red]",
            T0,
            cause=f"switch:{switch}",
            cause_guests=(BAD,),
            evidence={"uplink_util_pct": 98.0, "ovs_port_drops_per_s": 12.0},
        ),
        Finding(
            "vnic_drops",
            "warning",
            "vnet0",
            f"{BIDI}vnet0",
            "RX drops 12/s",
            T0,
            guest=BAD,
            cause=f"switch:{switch}",
            cause_guests=(BAD,),
        ),
        Finding("memory_leak", "info", odd.uuid, odd.name, "[b]leak check off", T0, guest=odd.name),
        Finding("memory_leak", "info", MIRROR.uuid, BIDI, "leak check off", T0, guest=BIDI),
    )
    app = KvmtopApp(FakeFeed([snapshot([EVIL, MIRROR, odd], findings=findings)]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.displayed is not None)
        await pilot.press("i", "enter", "down", "down")  # the switch's vNIC finding
        await pilot.pause()
        text = screen_text(app)
        assert_no_raw(text)
        assert f"Switch {shown_switch} saturated, dropping packets (guests: {BAD_SHOWN})" in text
        assert (
            f"└ {shown_switch} · vswitch_saturation: uplink of {shown_switch} at 98%: "
            "[red]dropping[/red]" in text
        )
        assert f"└ {BAD_SHOWN} {BIDI_SHOWN}vnet0 · vnic_drops: RX drops 12/s" in text
        await pilot.press("end", "enter")  # the notices
        await pilot.pause()
        text = screen_text(app)
        assert_no_raw(text)
        # Each notice's own row (1 finding), and the notices row's detail lines.
        assert " 1 a[/]b: [b]leak check off " in text
        assert f" 1 {BIDI_SHOWN}: leak check off " in text
        assert f"about    {BIDI_SHOWN}: leak check off; a[/]b: [b]leak check off" in text


async def test_detail_screen_shows_names_escaped() -> None:
    app = KvmtopApp(FakeFeed([hostile_snapshot()]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.displayed is not None)
        app.open_guest(EVIL.uuid)
        await pilot.pause()
        assert isinstance(app.screen, GuestDetailScreen)
        text = screen_text(app)
        assert_no_raw(text)
        nic = f"vnet-{BAD}"[:15]  # the builders' vNIC: its name holds the guest's
        nic_shown = "vnet-esc\\x1b[2J\\x1b[3"
        assert f"{BAD_SHOWN}  running" in text  # the title
        assert f"/var/lib/libvirt/images/{BAD_SHOWN}.qcow2" in text  # the disk table
        assert nic_shown in text  # NIC table, side-by-side rows
        # The side-by-side plot of a vNIC row: its title names the vNIC.
        versus = app.screen.query_one(SideBySide)
        table = versus.query_one(KeyedTable)
        table.move_cursor(row=list(versus.specs).index(f"nic:{nic}:rx"))
        await pilot.pause()
        text = screen_text(app)
        assert_no_raw(text)
        assert f"{nic_shown} rx Mb/s: " in text


async def test_sources_view_shows_names_escaped() -> None:
    app = KvmtopApp(FakeFeed([hostile_snapshot()]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.displayed is not None)
        await pilot.press("s")
        assert isinstance(app.screen, SourcesScreen)
        await pilot.pause()
        text = screen_text(app)
        assert_no_raw(text)
        assert f"domain {BAD_SHOWN} vanished" in text  # a source's reason
        assert f"uri={BIDI_SHOWN}" in text  # its details
        assert f"{BAD_SHOWN}-down" in text  # a stopped guest's blank cells


async def test_palette_lists_guests_escaped() -> None:
    odd = GuestSpec("a[/]b")  # the palette reads its titles as markup
    app = KvmtopApp(FakeFeed([snapshot([EVIL, MIRROR, odd])]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.displayed is not None)
        titles = [Content.from_markup(c.title).plain for c in app.get_system_commands(app.screen)]
        assert {f"Guest {BAD_SHOWN}", f"Guest {BIDI_SHOWN}", "Guest a[/]b"} <= set(titles)


def _sample(t: int) -> Sample:
    """A recording whose guest, named BAD, steals from 300 s on (a steal finding)."""
    spec = replace(EVIL, steal_pct=1 if t < 300 else 30)
    return Sample(
        wall_s=T0 + t,
        mono_ns=t * NS,
        host=host_sample(HostSpec(), t),
        guests=(guest(spec, t, True),),
        sources=DEFAULT_SOURCES,
        interval_s=10,
    )


async def test_incident_notice_of_a_replay_shows_the_name_escaped(tmp_path: Path) -> None:
    path = write(tmp_path / "hostile.kvmtop", [_sample(t) for t in range(0, 601, 10)])
    feed = replay_feed(path)
    try:
        app = KvmtopApp(feed)
        app.paused = True
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_until(
                pilot, lambda: app.displayed is not None and feed.scanned_s == T0 + 600, timeout=30
            )
            await pilot.press("f")  # to the incident: a notice gives its title
            await wait_until(pilot, lambda: bool(app.screen.query("Toast")))
            await pilot.pause()
            assert_no_raw(screen_text(app))
            toast = app.screen.query_one("Toast").render()
            assert isinstance(toast, Content)
            assert f"critical incident: {BAD_SHOWN}: steal max" in toast.plain
    finally:
        feed.close()
