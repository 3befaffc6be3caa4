"""Snapshot tests of the main and detail screens (SVG baselines in __snapshots__/).

Deterministic by construction: fixed frames from the builder, TZ=UTC (conftest),
the default theme, a fixed terminal size, and no cursor blink.
"""

from __future__ import annotations

import math
from typing import Any

from textual.pilot import Pilot

from kvmtop.app.main import KvmtopApp
from kvmtop.model.finding import Finding
from tests.app.builders import FakeFeed, GuestSpec, snapshot, wait_until
from tests.app.test_incidents import frame
from tests.records import replace

GUESTS = [
    GuestSpec("web-01", vcpus=4, cpu_pct=35, steal_pct=3, net_mbps=240),
    GuestSpec("web-02", vcpus=4, cpu_pct=33, steal_pct=7, net_mbps=230, drops_per_s=12),
    GuestSpec(
        "db-primary",
        vcpus=8,
        cpu_pct=60,
        steal_pct=24,
        disk_iops=900,
        disk_ms=31,
        mem_mib=16384,
        used_mib=12000,
    ),
    GuestSpec("db-replica", vcpus=8, cpu_pct=20, steal_pct=11, disk_iops=300, disk_ms=4),
    GuestSpec("cache", vcpus=2, cpu_pct=12, exits_per_s=90_000, mem_mib=4096, used_mib=3900),
    GuestSpec("build-runner", vcpus=16, cpu_pct=85, steal_pct=2, disk_iops=1500),
    GuestSpec("legacy-tcg", accel="tcg", vcpus=1, cpu_pct=95),
    GuestSpec("batch-07", state="shutoff"),
    GuestSpec("mail", vcpus=2, cpu_pct=4, steal_pct=0.5),
]
FINDING = Finding(
    "steal",
    "critical",
    GUESTS[2].uuid,
    "db-primary",
    "vCPU steal 24% (host run-queue delay 2%): contention on its pCPUs",
    since_s=snapshot(GUESTS).wall_s - 95,
    guest="db-primary",
    evidence={"steal_pct": 24.0, "steal_max_pct": 24.0},
    baseline={"run_delay_pct": 2.0},
)


HISTORY = 40
"""Frames of the detail screen's test: its plot draws the window's recent frames."""


def fleet_at(seq: int, last: int) -> list[GuestSpec]:
    """The fleet at frame `seq` of `last`: db-primary's CPU and steal swing and end at
    GUESTS' figures (so the last frame's table is the same whatever the history)."""
    swing = 0.55 + 0.45 * math.cos(math.pi * (last - seq) / 8)
    return [
        replace(g, cpu_pct=g.cpu_pct * swing, steal_pct=g.steal_pct * swing)
        if g.name == "db-primary"
        else g
        for g in GUESTS
    ]


def make_app(frames: int = 3) -> KvmtopApp:
    """The app over `frames` frames of the fleet, each with the window's earlier frames
    as `recent`, and one finding in the last."""
    out = []
    for seq in range(1, frames + 1):
        recent = out[-1].recent[-(HISTORY - 1) :] if out else ()
        out.append(
            snapshot(
                fleet_at(seq, frames),
                seq=seq,
                recent=recent,
                findings=(FINDING,) if seq == frames else (),
            )
        )
    return KvmtopApp(FakeFeed(out))


def ready(app: KvmtopApp, *keys: str, last: int = 3) -> Any:
    """run_before: wait for the last frame, then press keys."""

    async def run(pilot: Pilot[None]) -> None:
        await wait_until(pilot, lambda: app.displayed is not None and app.displayed.seq == last)
        await pilot.press(*keys)
        await pilot.pause()

    return run


def test_main_screen(snap_compare: Any) -> None:
    app = make_app()
    assert snap_compare(app, terminal_size=(120, 40), run_before=ready(app))


def test_detail_screen(snap_compare: Any) -> None:
    """db-primary's detail with a plot of its CPU against the host's over 40 frames."""
    app = make_app(HISTORY)
    assert snap_compare(
        app, terminal_size=(120, 40), run_before=ready(app, "down", "enter", last=HISTORY)
    )


def test_incidents_panel(snap_compare: Any) -> None:
    """Ranked incidents (a pinning collision listing its two findings, a flapping one,
    a cleared one, two notices folded), the keys in the panel."""
    app = KvmtopApp(FakeFeed([frame()]))

    async def run_before(pilot: Pilot[None]) -> None:
        await wait_until(pilot, lambda: app.displayed is not None)
        await pilot.press("i", "enter")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
