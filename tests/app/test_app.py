"""Pilot tests: the app driven through its keys and mouse over a fake feed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.style import Style
from textual.content import Content
from textual.widgets import Input, Sparkline, Static

from kvmtop.app.feed_thread import FeedEnded, FrameReady
from kvmtop.app.main import KvmtopApp
from kvmtop.model.fields import GUEST_COLUMNS
from kvmtop.model.finding import Finding
from kvmtop.model.formatting import DASH
from kvmtop.model.rates.frame import Frame
from kvmtop.model.rates.guest import NA_NOT_KVM
from kvmtop.model.rates.kvm import TRACE_SOURCE
from kvmtop.model.sample import SourceStatus
from kvmtop.views.guest_detail import GuestDetailScreen, exits_text, tracing_text
from kvmtop.views.guest_table import NAME_MIN_WIDTH, GuestTable, KeyedTable
from kvmtop.views.host_strip import HostStrip, ModeBadge, host_lines
from kvmtop.views.incidents import IncidentsPanel
from kvmtop.views.sources import SourcesScreen
from tests.app.builders import (
    DEFAULT_SOURCES,
    FakeFeed,
    GuestSpec,
    HostSpec,
    snapshot,
    wait_until,
)
from tests.records import replace

SIZE = (120, 40)
GUESTS = [
    GuestSpec("alpha", cpu_pct=10, steal_pct=2),
    GuestSpec("bravo", cpu_pct=40, steal_pct=12, vcpus=4),
    GuestSpec("charlie", cpu_pct=25, steal_pct=25),
    GuestSpec("emu", accel="tcg", cpu_pct=30),
    GuestSpec("down", state="shutoff"),
]
UUID = {g.name: g.uuid for g in GUESTS}


def rows(app: KvmtopApp) -> list[str]:
    """Guest names in display order."""
    table = app.query_one(GuestTable)
    return [table.row_cells(key)[0].text.strip() for key in table.row_keys]


def _index(table: GuestTable, column: str) -> int:
    return [c.key for c in table.table_columns].index(column)


def cell(app: KvmtopApp, name: str, column: str) -> str:
    """The text of one guest-table cell."""
    table = app.query_one(GuestTable)
    return table.row_cells(UUID[name])[_index(table, column)].text.strip()


def drawn_style(table: GuestTable, name: str, column: str) -> Style:
    """The style a guest-table cell is drawn with (its row must be on screen)."""
    y = table.row_keys.index(UUID[name]) - round(table.scroll_offset.y) + 1
    x = sum(table.column_widths[: _index(table, column)])
    segments = list(table.render_line(y).crop(x, x + 1))
    return segments[0].style or Style.null()


async def shown(pilot: Any, app: KvmtopApp, seq: int = 1) -> None:
    """Wait until frame `seq` is on screen."""
    await wait_until(pilot, lambda: app.displayed is not None and app.displayed.seq >= seq)
    await pilot.pause()


async def test_rows_are_keyed_by_uuid_and_sorted_by_cpu() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(GuestTable)
        assert set(table.row_keys) == set(UUID.values())
        # CPU% descending, unknown (the stopped guest) last.
        assert rows(app) == ["bravo", "emu", "charlie", "alpha", "down"]
        assert table.header_cells()[_index(table, "cpu_pct")].text == "▼CPU%"


async def test_sort_keys_reverse_and_step() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("N")
        assert rows(app) == ["alpha", "bravo", "charlie", "down", "emu"]
        await pilot.press("r")
        assert rows(app) == ["emu", "down", "charlie", "bravo", "alpha"]
        await pilot.press("S")  # steal, descending; unknown last
        assert rows(app)[:3] == ["charlie", "bravo", "alpha"]
        assert rows(app)[-1] == "down"
        await pilot.press("greater_than_sign")
        assert app.query_one(GuestTable).sort_key == "steal_max_pct"


async def test_header_click_sorts_and_clicking_again_reverses() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        # The table's first line is its border; the header is the second.
        assert await pilot.click(GuestTable, offset=(2, 1))
        await pilot.pause()
        assert rows(app) == ["alpha", "bravo", "charlie", "down", "emu"]
        assert await pilot.click(GuestTable, offset=(2, 1))
        await pilot.pause()
        assert rows(app) == ["emu", "down", "charlie", "bravo", "alpha"]


async def test_filter_by_substring_and_regex_and_escape_clears() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"ar")
        assert sorted(rows(app)) == ["charlie"]
        assert app.query_one(GuestTable).border_title == "guests 1/5 matching 'ar'"
        app.query_one("#filter", Input).value = "^(a|e)"
        await pilot.pause()
        assert sorted(rows(app)) == ["alpha", "emu"]
        app.query_one("#filter", Input).value = "[br"  # not a regex: taken literally
        await pilot.pause()
        assert rows(app) == []
        app.query_one("#filter", Input).value = "[b]r"  # a regex; in the title, not markup
        await pilot.pause()
        assert sorted(rows(app)) == ["bravo"]
        title = app.query_one(GuestTable).border_title
        assert Content.from_markup(str(title)).plain == "guests 1/5 matching '[b]r'"
        await pilot.press("enter")
        assert isinstance(app.focused, GuestTable)
        await pilot.press("escape")
        assert len(rows(app)) == len(GUESTS)
        assert not app.query_one("#filter", Input).has_class("-visible")


async def test_pause_freezes_display_while_collection_continues() -> None:
    feed = FakeFeed([snapshot(GUESTS, seq=1)])
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("space")
        assert app.query_one(ModeBadge).has_class("-paused")
        assert "PAUSED" in str(app.query_one(ModeBadge).render())
        busier = [GuestSpec("alpha", cpu_pct=90), *GUESTS[1:]]
        feed.push(snapshot(busier, seq=2))
        await wait_until(pilot, lambda: app.latest is not None and app.latest.seq == 2)
        assert app.displayed is not None and app.displayed.seq == 1
        assert rows(app)[0] == "bravo"
        await pilot.press("p")
        assert app.displayed is not None and app.displayed.seq == 2
        assert rows(app)[0] == "alpha"
        assert app.query_one(ModeBadge).has_class("-live")


@pytest.mark.parametrize(
    ("start", "keys", "expected"),
    [
        (2.0, ["plus"], 3.0),
        (2.0, ["minus", "minus"], 1.0),
        (5.0, ["plus", "plus", "plus"], 30.0),
        (2.5, ["minus"], 2.0),
    ],
)
async def test_interval_steps(start: float, keys: list[str], expected: float) -> None:
    feed = FakeFeed([snapshot(GUESTS)], interval_s=start)
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press(*keys)
        assert feed.interval_s == expected


async def test_help_lists_every_key_and_column_and_closes() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("question_mark")
        text = str(app.screen.query_one("#help Static").render())
        for col in GUEST_COLUMNS:
            assert col.header in text and col.help in text
        for word in ("Pause", "Filter", "Sources", "Theme", "Reverse sort", "command palette"):
            assert word in text
        await pilot.press("escape")
        assert isinstance(app.focused, GuestTable)
        await pilot.press("f1")
        assert app.screen.query("#help")
        await pilot.press("question_mark")
        assert not app.screen.query("#help")


async def test_tcg_guest_blank_exits_explained_in_sources_view() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        assert cell(app, "emu", "exits_per_s") == DASH
        assert cell(app, "bravo", "exits_per_s") != DASH
        await pilot.press("s")
        assert isinstance(app.screen, SourcesScreen)
        blanks = app.screen.query_one("#blanks-table", KeyedTable)
        exits = [blanks.get_row(k) for k in blanks.rows if str(k.value).startswith("exits_per_s|")]
        assert any(r[1].plain.strip() == NA_NOT_KVM and "emu" in r[2].plain for r in exits)
        sources = app.screen.query_one("#sources-table", KeyedTable)
        debugfs = [c.plain.strip() for c in sources.get_row("kvm_debugfs")]
        assert debugfs[1] == "FAILED" and "lockdown" in debugfs[3]
        host = app.screen.query_one("#host-na-table", KeyedTable)
        assert host.get_row("")[1].plain == "every host figure is available"
        await pilot.press("s")
        assert isinstance(app.focused, GuestTable)


async def test_sources_view_gives_the_reason_under_the_cursor_in_full() -> None:
    """The table cuts a reason at its column; the lines under it give the whole reason
    and details of the source the cursor is on (a name in them made visible)."""
    long = "ovs-vswitchd unreachable, datapath counters unavailable: " + "x" * 80 + "\x1b[2J"
    sources = (*DEFAULT_SOURCES, SourceStatus("vswitch", True, reason=long, detail={"a": "b"}))
    app = KvmtopApp(FakeFeed([snapshot(GUESTS, sources=sources)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("s")
        about = app.screen.query_one("#source-about", Static)
        assert str(about.render()).startswith("reason   none: it delivered all it reads")
        for _ in sources[:-1]:
            await pilot.press("down")
        text = str(about.render())
        assert "x" * 80 + "\\x1b[2J" in text.replace("\n", "")
        assert text.endswith("details  a=b")


async def test_sources_view_lists_host_figures_the_kernel_lacks() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS, host=HostSpec(run_delay_pct=None))]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("s")
        host = app.screen.query_one("#host-na-table", KeyedTable)
        row = [c.plain for c in host.get_row("run_delay_pct")]
        assert row[0] == "run-queue delay" and "CONFIG_SCHEDSTATS" in row[1]


async def test_detail_opens_with_enter_and_shows_each_vcpu() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("enter")  # the cursor starts on the busiest guest: bravo
        screen = app.screen
        assert isinstance(screen, GuestDetailScreen) and screen.uuid == UUID["bravo"]
        vcpus = screen.query_one("#vcpu-table", KeyedTable)
        assert [k.value for k in vcpus.rows] == ["0", "1", "2", "3"]
        assert [c.plain.strip() for c in vcpus.get_row("0")][:3] == ["0", "40.0", "12.0"]
        assert "halt_exits" in str(screen.query_one("#exits").render())
        assert screen.query_one("#cpu-spark", Sparkline).data == pytest.approx([168.0])
        await pilot.press("escape")
        assert isinstance(app.focused, GuestTable)


def test_detail_splits_exits_by_traced_reason() -> None:
    g = snapshot([GuestSpec("traced", traced=True)]).guests[0]
    text = exits_text(g)
    assert "(from tracepoints)" in text
    assert "by reason: HLT 2.4k  EPT_MISCONFIG 1.2k  other 400" in text
    assert "KVM categories: halt_exits 2.4k" in text
    plain = snapshot([GuestSpec("plain")]).guests[0]
    assert "by category: halt_exits 2.4k" in exits_text(plain)
    tcg = snapshot([GuestSpec("emu", accel="tcg")]).guests[0]
    assert exits_text(tcg) == f"exits/s {DASH}: {NA_NOT_KVM}"


async def test_detail_screen_switches_tracing_for_its_guest() -> None:
    """Open → focus(uuid), Esc → focus(None); a detail opened over another hands
    tracing to the new guest and back."""
    feed = FakeFeed([snapshot(GUESTS)])
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("enter")  # bravo
        await wait_until(pilot, lambda: feed.focused == [UUID["bravo"]])
        app.open_guest(UUID["alpha"])  # the palette can open one detail over another
        await wait_until(pilot, lambda: feed.focused[-1] == UUID["alpha"])
        await pilot.press("escape")
        await wait_until(pilot, lambda: feed.focused[-1] == UUID["bravo"])
        await pilot.press("escape")
        await wait_until(pilot, lambda: feed.focused[-1] is None)
        assert feed.focused == [UUID["bravo"], UUID["alpha"], UUID["bravo"], None]
        await pilot.press("s", "escape")  # other screens leave tracing alone
        await pilot.pause()
        assert len(feed.focused) == 4


async def test_detail_says_whether_its_guest_is_traced() -> None:
    feed = FakeFeed([snapshot(GUESTS, seq=1)])
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        app.open_guest(UUID["charlie"])
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, GuestDetailScreen)
        text = str(screen.query_one("#tracing").render())
        assert text == "per-reason tracing starts with the next sample"
        traced = [replace(g, traced=True) if g.name == "charlie" else g for g in GUESTS]
        feed.push(snapshot(traced, seq=2))
        await shown(pilot, app, 2)
        text = str(screen.query_one("#tracing").render())
        assert text.startswith("tracing exits by reason for this guest (232 counters)")


def _status_named(name: str, **changes: Any) -> Any:
    return tuple(replace(s, **changes) if s.name == name else s for s in DEFAULT_SOURCES)


def test_tracing_text_says_why_a_guest_is_not_traced() -> None:
    guests = [GuestSpec("kvm"), GuestSpec("traced", traced=True), GuestSpec("emu", accel="tcg")]
    live = snapshot(guests)
    g, traced, tcg = live.guests
    assert tracing_text(live, traced).splitlines() == [
        "tracing exits by reason for this guest (232 counters)",
        "tracepoints/s: kvm_exit:total 4.0k  kvm_exit:HLT 2.4k  kvm_exit:EPT_MISCONFIG 1.2k",
    ]
    assert tracing_text(live, tcg) == "per-reason tracing n/a: TCG guest (no KVM exits)"
    refused = snapshot(
        guests,
        sources=_status_named(
            TRACE_SOURCE, ok=False, reason=f"tracing {g.uuid}: perf_event_open: not permitted"
        ),
    )
    assert tracing_text(refused, refused.guests[0]) == (
        f"per-reason tracing unavailable: tracing {g.uuid}: perf_event_open: not permitted"
    )
    replay = snapshot(guests, mode="replay")
    assert tracing_text(replay, replay.guests[0]) == (
        "per-reason tracing not in this recording for this guest (a replay cannot trace; "
        "record with kvmtop record --trace GUEST)"
    )
    assert tracing_text(replay, replay.guests[1]).startswith("tracing exits by reason")
    old = snapshot(guests, sources=DEFAULT_SOURCES[:-1])
    assert tracing_text(old, old.guests[0]) == (
        "per-reason tracing unavailable: no tracepoint source"
    )


async def test_detail_follows_frames_and_survives_the_guest_leaving() -> None:
    feed = FakeFeed([snapshot(GUESTS, seq=1)])
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        app.open_guest(UUID["charlie"])
        await pilot.pause()
        first = snapshot(GUESTS, seq=1)
        second = snapshot([GuestSpec("charlie", cpu_pct=50, steal_pct=25)], seq=2)
        # The sparklines plot the window's recent frames the snapshot carries.
        recent = tuple(Frame(s.wall_s, s.interval_s, s.host, s.guests) for s in (first, second))
        feed.push(replace(second, recent=recent))
        await shown(pilot, app, 2)
        screen = app.screen
        assert isinstance(screen, GuestDetailScreen)
        cpu = [
            next(g for g in s.guests if g.uuid == UUID["charlie"]).cpu_pct for s in (first, second)
        ]
        assert screen.query_one("#cpu-spark", Sparkline).data == pytest.approx(cpu)
        assert "over 2 frames" in str(screen.query_one("#cpu-label").render())
        feed.push(snapshot(GUESTS[:2], seq=3))
        await shown(pilot, app, 3)
        assert "not in the latest frame" in str(screen.query_one("#detail-title").render())


async def test_guest_names_are_shown_as_named_not_as_markup() -> None:
    # libvirt refuses only "/" in a domain name: "[prod]" would be a style, "[/]" an
    # error, if a name were taken as markup.
    odd = [GuestSpec("db[prod]", cpu_pct=5), GuestSpec("a[/]b", cpu_pct=1)]
    app = KvmtopApp(FakeFeed([snapshot(odd)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        assert sorted(rows(app)) == ["a[/]b", "db[prod]"]
        for g in odd:
            app.open_guest(g.uuid)
            await pilot.pause()
            title = str(app.screen.query_one("#detail-title").render())
            assert title.startswith(f"{g.name}  running")
            app.pop_screen()
            await pilot.pause()


@pytest.mark.parametrize("width", [SIZE[0], 100, 160])
async def test_the_name_gives_way_so_every_column_fits(width: int) -> None:
    """At 120 columns every column is whole (the name column narrows, a long name ends
    in an ellipsis); wider, the name has its full width; narrower than the figures
    allow, the name keeps NAME_MIN_WIDTH and the table scrolls sideways."""
    long = "instance-0000a1b2-web-frontend"
    app = KvmtopApp(FakeFeed([snapshot([GuestSpec(long, cpu_pct=5), *GUESTS])]))
    async with app.run_test(size=(width, SIZE[1])) as pilot:
        await pilot.pause()
        await shown(pilot, app)
        table = app.query_one(GuestTable)
        view = table.scrollable_content_region.width
        wanted = [c.width or 0 for c in table.table_columns]
        name_width = table.column_widths[0]
        if sum(wanted) <= view:
            assert table.column_widths == tuple(wanted)
        elif sum(wanted) - wanted[0] + NAME_MIN_WIDTH <= view:
            assert sum(table.column_widths) == view  # every column whole, no scrolling
            assert NAME_MIN_WIDTH <= name_width < wanted[0]
        else:
            assert name_width == NAME_MIN_WIDTH
        assert table.column_widths[1:] == tuple(wanted[1:])
        y = table.row_keys.index(
            next(k for k in table.row_keys if table.row_cells(k)[0].text == long)
        )
        drawn = "".join(seg.text for seg in table.render_line(y + 1 - round(table.scroll_offset.y)))
        assert drawn.startswith(long[: name_width - 1] + "…")


async def test_rows_survive_a_guest_leaving_and_coming_back() -> None:
    feed = FakeFeed([snapshot(GUESTS, seq=1)])
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(GuestTable)
        table.move_cursor(row=rows(app).index("charlie"))
        feed.push(snapshot([g for g in GUESTS if g.name != "bravo"], seq=2))
        await shown(pilot, app, 2)
        assert UUID["bravo"] not in table.row_keys
        assert table.cursor_key == UUID["charlie"]
        feed.push(snapshot(GUESTS, seq=3))
        await shown(pilot, app, 3)
        assert UUID["bravo"] in table.row_keys
        assert rows(app) == ["bravo", "emu", "charlie", "alpha", "down"]
        assert table.cursor_key == UUID["charlie"]


async def test_severity_classes_and_stopped_guests_dimmed() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(GuestTable)
        steal = _index(table, "steal_pct")
        assert table.row_cells(UUID["charlie"])[steal].level == "critical"
        assert table.row_cells(UUID["bravo"])[steal].level == "warning"
        assert table.row_cells(UUID["alpha"])[steal].level is None
        assert {c.level for c in table.row_cells(UUID["down"])} == {"dim"}
        # Drawn in the theme's colours (bravo is under the cursor, which recolours it).
        critical = table.get_component_rich_style("keyed-table--critical", partial=True)
        dim = table.get_component_rich_style("keyed-table--dim", partial=True)
        drawn = drawn_style(table, "charlie", "steal_pct")
        assert drawn.color == critical.color and drawn.bold
        assert drawn_style(table, "down", "name").color == dim.color
        assert drawn_style(table, "alpha", "steal_pct").color != critical.color


async def test_a_new_frame_redraws_changed_values_and_keeps_the_rest() -> None:
    feed = FakeFeed([snapshot(GUESTS)])
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(GuestTable)
        cpu = _index(table, "cpu_pct")
        before = table.row_cells(UUID["alpha"])
        feed.push(
            snapshot([replace(g, cpu_pct=55.0) if g.name == "alpha" else g for g in GUESTS], seq=2)
        )
        await shown(pilot, app, 2)
        after = table.row_cells(UUID["alpha"])
        assert after[cpu].text != before[cpu].text
        assert after[0] is before[0]  # the name did not change: its cell is kept
        line = table.render_line(table.row_keys.index(UUID["alpha"]) + 1)
        assert line.text.split()[:4] == ["alpha", "running", "2", after[cpu].text.strip()]


async def test_a_new_frame_repaints_only_the_lines_that_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed = FakeFeed([snapshot(GUESTS)])
    app = KvmtopApp(feed, initial_sort="name")
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(GuestTable)
        drawn: list[int] = []
        render_line = table.render_line

        def spy(y: int) -> Any:
            drawn.append(y)
            return render_line(y)

        monkeypatch.setattr(table, "render_line", spy)
        feed.push(
            snapshot(
                [replace(g, steal_pct=30.0) if g.name == "charlie" else g for g in GUESTS], seq=2
            )
        )
        await shown(pilot, app, 2)
        assert drawn == [1 + rows(app).index("charlie")]  # not the header, nor blank lines
        assert "30.0" in table.render_line(drawn[0]).text


async def test_every_repaint_shows_the_cursor_row_where_it_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet_ = [GuestSpec(f"g{i:03d}", cpu_pct=float(i)) for i in range(100)]
    feed = FakeFeed([snapshot(fleet_)])
    app = KvmtopApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(GuestTable)
        assert rows(app)[0] == "g099" and table.cursor_row == 0
        painted: list[tuple[int, int]] = []  # (first row in view, cursor row) per repaint
        render_lines = table.render_lines

        def spy(crop: Any) -> Any:
            painted.append((table.scroll_offset.y, table.cursor_row))
            return render_lines(crop)

        monkeypatch.setattr(table, "render_lines", spy)
        # g099 drops to the bottom: the cursor follows it, and no repaint shows the
        # rows of the new frame with the cursor row out of view.
        feed.push(
            snapshot([replace(g, cpu_pct=0.0) if g.name == "g099" else g for g in fleet_], seq=2)
        )
        await shown(pilot, app, 2)
        page = table.scrollable_content_region.height - 1
        assert table.cursor_key == fleet_[99].uuid and (0, 99) not in painted
        assert any(row == 99 for _, row in painted)
        assert all(top <= row < top + page for top, row in painted)


async def test_a_finding_is_an_incident_and_flags_its_guest() -> None:
    finding = Finding(
        "steal",
        "critical",
        UUID["charlie"],
        "charlie",
        "vCPU steal 25% for 3 samples",
        since_s=snapshot(GUESTS).wall_s - 130,
        guest="charlie",
        evidence={"steal_pct": 25.0},
        baseline={"run_delay_pct": 2.0},
    )
    app = KvmtopApp(FakeFeed([snapshot(GUESTS), snapshot(GUESTS, seq=2, findings=(finding,))]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app, 2)
        panel = app.query_one(IncidentsPanel)
        assert panel.has_class("-has-incidents")
        (key,) = panel.table.row_keys
        row = [c.text.strip() for c in panel.table.row_cells(key)]
        assert row == [
            "▸ 1",
            "critical",
            "15:57:52",
            "2m12s",
            "",
            "1",
            "charlie: vCPU steal 25% for 3 samples",
        ]
        assert "evidence steal_pct=25" in str(panel.query_one("#incident-detail").render())
        table = app.query_one(GuestTable)
        critical = table.get_component_rich_style("keyed-table--critical", partial=True)
        assert table.row_cells(UUID["charlie"])[0].level == "critical"
        assert drawn_style(table, "charlie", "name").color == critical.color


async def test_end_of_recording_is_announced() -> None:
    messages: list[object] = []
    app = KvmtopApp(FakeFeed([snapshot(GUESTS, mode="replay")], ended=True))
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await wait_until(pilot, lambda: any(isinstance(m, FeedEnded) for m in messages))
        await pilot.pause()
        assert "end of recording" in str(app.query_one("#host-figures").render())
        assert "REPLAY" in str(app.query_one(ModeBadge).render())
        assert app.query_one(ModeBadge).has_class("-replay")


async def test_recording_badge_and_path() -> None:
    app = KvmtopApp(
        FakeFeed([snapshot(GUESTS, recording="/var/tmp/host-a.kvmtop")]), title_suffix="lab host"
    )
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        badge = app.query_one(ModeBadge)
        assert badge.has_class("-rec") and badge.has_class("-live")
        assert str(badge.render()).splitlines() == ["LIVE", "@ 16:00:02", "every 2s", "● REC"]
        figures = str(app.query_one("#host-figures").render()).splitlines()
        assert figures[-1] == "lab host │ recording to /var/tmp/host-a.kvmtop"
        assert app.title == "kvmtop: lab host"


@pytest.mark.parametrize("width", [SIZE[0], 60])  # at 60 columns the figures wrap
async def test_host_strip_resizes_when_its_lines_do(width: int) -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=(width, SIZE[1])) as pilot:
        await shown(pilot, app)
        strip, table = app.query_one(HostStrip), app.query_one(GuestTable)
        height = strip.size.height
        strip.note = "a note on a line of its own"
        await pilot.pause()
        assert strip.size.height == height + 1
        assert table.region.y == strip.region.bottom
        strip.note = ""
        await pilot.pause()
        assert strip.size.height == height


def test_frames_coalesce() -> None:
    a, b = FrameReady(snapshot(GUESTS, seq=1)), FrameReady(snapshot(GUESTS, seq=2))
    assert b.can_replace(a)
    assert not b.can_replace(FeedEnded())


async def test_broken_theme_files_give_one_notification(tmp_path: Path) -> None:
    (tmp_path / "bad-colour.toml").write_text('name = "x"\nprimary = "#12345"\n')
    (tmp_path / "bad-toml.toml").write_text("name = \n")
    (tmp_path / "mine.toml").write_text('name = "mine"\nprimary = "#336699"\n')
    notes: list[tuple[str, dict[str, Any]]] = []
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]), user_theme_dir=tmp_path)
    app.notify = lambda message, **kw: notes.append((message, kw))  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        assert len(notes) == 1
        message = notes[0][0]
        assert "bad-colour.toml" in message and "bad-toml.toml" in message
        assert "mine" in app.kvmtop_themes
        assert rows(app)[0] == "bravo"


async def test_t_cycles_themes_and_restyles_cells() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        assert app.theme == "kvmtop-dark"
        table = app.query_one(GuestTable)
        dark = drawn_style(table, "charlie", "steal_pct")
        await pilot.press("t")
        assert app.theme == app.kvmtop_themes[1]
        await pilot.pause()
        assert drawn_style(table, "charlie", "steal_pct").color != dark.color
        for _ in app.kvmtop_themes[1:]:
            await pilot.press("t")
        assert app.theme == "kvmtop-dark"


async def test_unknown_theme_name_falls_back_with_a_warning() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]), theme_name="nope")
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        assert app.theme in app.kvmtop_themes
        assert app.theme_warning is not None and "nope" in app.theme_warning


async def test_palette_offers_kvmtop_commands() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {
            "Pause / resume",
            "Sources view",
            "Sort by Steal%",
            "Guest alpha",
            "Theme kvmtop-light",
        } <= titles
        sort = next(c for c in app.get_system_commands(app.screen) if c.title == "Sort by IOPS")
        sort.callback()
        assert app.query_one(GuestTable).sort_key == "disk_iops"


async def test_filter_and_sort_keys_are_off_outside_the_main_screen() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.press("enter", "slash", "N")
        assert isinstance(app.screen, GuestDetailScreen)
        assert app.query_one(GuestTable).sort_key == "cpu_pct"
        assert not isinstance(app.focused, Input)


async def test_row_click_on_cursor_row_opens_detail() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        await pilot.click(GuestTable, offset=(2, 2))
        await pilot.pause()
        assert isinstance(app.screen, GuestDetailScreen)


def test_host_strip_lines_say_why_a_figure_is_missing() -> None:
    snap = snapshot(GUESTS, host=HostSpec(run_delay_pct=None, psi=False))
    text = "\n".join(line.plain for line in host_lines(snap))
    assert "runq\N{NO-BREAK SPACE}delay\N{NO-BREAK SPACE}n/a" in text
    assert "CONFIG_SCHEDSTATS" in text and "/proc/pressure" in text


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light", "kvmtop-high-contrast"])
async def test_app_runs_under_any_theme(theme: str) -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]), theme_name=theme)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        assert app.theme == theme and app.theme_warning is None
        assert rows(app)[0] == "bravo"


async def test_initial_sort_is_honoured_and_checked() -> None:
    app = KvmtopApp(FakeFeed([snapshot(GUESTS)]), initial_sort="name")
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        assert rows(app) == ["alpha", "bravo", "charlie", "down", "emu"]
    with pytest.raises(KeyError, match="unknown sort column 'nope'"):
        GuestTable(thresholds={}, sort_key="nope")


async def test_long_table_scrolls_with_the_cursor_and_clicks_hit_the_row_shown() -> None:
    fleet_ = [GuestSpec(f"g{i:03d}", cpu_pct=float(i)) for i in range(200)]
    app = KvmtopApp(FakeFeed([snapshot(fleet_)]), initial_sort="name")
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app)
        table = app.query_one(GuestTable)
        page = table.scrollable_content_region.height - 1  # rows under the header
        assert table.render_line(1).text.startswith("g000")
        await pilot.press("pagedown")
        assert table.cursor_row == page
        assert table.scroll_offset.y == 1  # the least scroll that shows the cursor row
        assert table.render_line(page).text.startswith(f"g{page:03d}")
        await pilot.press("end")
        assert table.cursor_key == fleet_[-1].uuid
        assert table.render_line(page).text.startswith("g199")
        await pilot.press("home")
        assert table.cursor_row == 0 and table.scroll_offset.y == 0
        await pilot.press("end")
        # A click on a row moves the cursor there; a click on the cursor row opens it.
        top = round(table.scroll_offset.y)
        assert await pilot.click(GuestTable, offset=(2, 3))  # border, header, then rows
        assert table.cursor_key == fleet_[top + 1].uuid
        assert await pilot.click(GuestTable, offset=(2, 3))
        await pilot.pause()
        assert isinstance(app.screen, GuestDetailScreen)
        assert app.screen.uuid == fleet_[top + 1].uuid
