"""The detail screen's side-by-side view over frames of the lab recording.

tests/fixtures/recordings/lab-sample.kvmtop (README there): lab-disk throttled by
`<iotune>` to 20 IOPS on an image on the host disk vda, lab-net sending 14.9 Mb/s
of UDP through labbr0 and its 4 Mbit/s-shaped uplink labup0, lab-steal-a and
lab-steal-b pinned together on one host CPU. Frames come from the shared pipeline
with the default settings, so each snapshot carries its recent frames for the plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from kvmtop.app.main import KvmtopApp
from kvmtop.config import Settings
from kvmtop.model.snapshot import Snapshot
from kvmtop.store.reader import StoreReader
from kvmtop.views.compare import SideBySide, compare, series
from kvmtop.views.guest_detail import GuestDetailScreen
from kvmtop.views.guest_table import KeyedTable
from kvmtop.views.plot import DuoPlot
from kvmtop.wiring import build_pipeline
from tests.app.builders import FakeFeed, wait_until

RECORDING = Path(__file__).parents[1] / "fixtures" / "recordings" / "lab-sample.kvmtop"
FRAMES = 90
"""Samples pushed through the pipeline: three minutes at 2 s."""
SIZE = (120, 50)


def lab_frames() -> list[Snapshot]:
    """The last two of the first FRAMES snapshots of the lab recording."""
    pipeline = build_pipeline(Settings())
    reader = StoreReader(RECORDING)
    try:
        snaps = [
            pipeline.push(s, mode="replay")
            for _, s in zip(range(FRAMES), reader.iter(), strict=False)
        ]
    finally:
        reader.close()
    return snaps[-2:]


@pytest.fixture(scope="module")
def frames() -> list[Snapshot]:
    """The frames the app is shown (module-wide: reading the recording takes a while)."""
    return lab_frames()


def uuid_of(snap: Snapshot, name: str) -> str:
    """The UUID of the guest of this name."""
    return next(g.uuid for g in snap.guests if g.name == name)


def open_detail(app: KvmtopApp, frames: list[Snapshot], name: str, *keys: str) -> Any:
    """run_before: wait for the last frame, open a guest's detail, press keys."""

    async def run(pilot: Pilot[None]) -> None:
        await wait_until(
            pilot, lambda: app.displayed is not None and app.displayed.seq == frames[-1].seq
        )
        app.open_guest(uuid_of(frames[-1], name))
        await pilot.pause()
        app.screen.query_one("#versus-table", KeyedTable).focus()
        await pilot.press(*keys)
        await pilot.pause()

    return run


def test_snapshot_side_by_side_of_the_throttled_disk(
    snap_compare: Any, frames: list[Snapshot]
) -> None:
    # The cursor on "vda write ms/req" (4th row): the plot shows the guest's write
    # latency under <iotune> against the host disk vda's.
    app = KvmtopApp(FakeFeed(frames))
    assert snap_compare(
        app,
        terminal_size=SIZE,
        run_before=open_detail(app, frames, "lab-disk", "down", "down", "down", "down"),
    )


def test_rows_pair_each_disk_and_vnic_with_its_host_side(frames: list[Snapshot]) -> None:
    snap = frames[-1]
    g = next(g for g in snap.guests if g.name == "lab-net")
    from kvmtop.views.compare import versus_specs

    specs = {v.key: v for v in versus_specs(g, snap.host)}
    assert list(specs) == [
        "cpu",
        "steal",
        "exits",
        "disk:vda:read",
        "disk:vda:write",
        "nic:vnet5:rx",
        "nic:vnet5:tx",
        "nic:vnet5:drops",
        "nic:vnet5:rtt",
        "mem",
        "majflt",
    ]
    tx = specs["nic:vnet5:tx"]
    assert tx.baseline == "uplink labup0 of labbr0"
    uplink = snap.host.net("labup0")
    assert uplink is not None
    assert tx.host(snap.host, snap.guests) == uplink.tx_bps
    # 14.9 Mb/s offered, the tbf on labup0 lets 4 Mb/s out: the guest's share of the
    # uplink's traffic is far above 100 % (the rest is dropped in the qdisc).
    guest_tx = tx.guest(g)
    assert guest_tx is not None and uplink.tx_bps is not None
    assert guest_tx > 3 * uplink.tx_bps
    # The recording was made without RTT probing: unknown, shown as a dash.
    rtt = specs["nic:vnet5:rtt"]
    assert rtt.guest(g) is None and compare(rtt.kind, None, None).text == "–"


def test_like_rows_are_coloured_by_how_far_apart() -> None:
    assert compare("like", 48.0, 0.4) == ("120.00×", "critical", True)
    assert compare("like", 3.0, 1.0).level == "warning"
    assert compare("like", 1.2, 1.0).level == "ok"
    assert compare("like", 0.1, 1.0).level == "info"
    assert compare("like", 5.0, 0.0) == ("host 0", "warning", True)
    assert compare("like", 0.0, 0.0).level == "ok"
    assert compare("rtt", 4.603, 0.043) == ("+4.56 ms", "warning", True)
    assert compare("share", 50.0, 200.0) == ("25% of host", None, True)
    # A vNIC talking to a guest on its bridge moves more than the uplink carries.
    assert compare("share", 4.2e6, 4.9e3) == ("more than host", "info", True)
    assert compare("share", 1.0, 0.0).text == "–"


def test_series_follow_the_guest_through_the_recent_frames(frames: list[Snapshot]) -> None:
    snap = frames[-1]
    g = next(g for g in snap.guests if g.name == "lab-steal-a")
    from kvmtop.views.compare import versus_specs

    steal = next(v for v in versus_specs(g, snap.host) if v.key == "steal")
    guest, host = series(steal, g.uuid, snap.recent)
    assert len(guest) == len(host) == len(snap.recent) == FRAMES
    assert guest[-1] == g.steal_pct and host[-1] == snap.host.run_delay_pct
    assert guest[0] is None  # the first frame has no rates: a gap, not 0
    # Pinned with lab-steal-b on one CPU: tens of % steal most of the time.
    known = [v for v in guest if v is not None]
    assert sorted(known)[len(known) // 2] > 20


async def test_cursor_moves_choose_the_plotted_row(frames: list[Snapshot]) -> None:
    app = KvmtopApp(FakeFeed(frames))
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(app, frames, "lab-net")(pilot)
        screen = app.screen
        assert isinstance(screen, GuestDetailScreen)
        side = screen.query_one(SideBySide)
        title = screen.query_one("#plot-title")
        assert side.selected is not None and side.selected.key == "cpu"
        assert str(title.render()).startswith("CPU % (of one CPU): last 2 min 58 s (90 frames)")
        for _ in range(6):
            await pilot.press("down")
        await pilot.pause()
        assert side.selected is not None and side.selected.key == "nic:vnet5:tx"
        assert str(title.render()).startswith("vnet5 tx Mb/s")
        plot = str(screen.query_one(DuoPlot).render())
        assert any("\u2800" < ch <= "\u28ff" for ch in plot)  # braille dots drawn
        assert "uplink labup0 of labbr0" in str(screen.query_one("#plot-legend").render())
        await pilot.press("up")
        await pilot.pause()
        assert side.selected is not None and side.selected.key == "nic:vnet5:rx"
