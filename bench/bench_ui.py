"""UI frame time and sort / filter latency at 10 to 500 guests, headless at 200×60.

    python -m bench.bench_ui [--sizes 10 100 500] [--frames 20] [--json OUT]

The real `KvmtopApp` runs headless (`App.run_test`) over snapshots built through the
real model (`tests/app/builders.py`: raw samples → `derive` → `build_snapshot`); every
frame moves most numbers of every guest, as a busy host does. A frame is timed from
posting `FrameReady` to the end of the repaint that shows it (`wait_for_refresh`
returns after the screen has been refreshed), in wall time and in this process's CPU
time (which a loaded machine inflates less). Wall time includes Textual's frame pacing
(the screen repaints on a 60 Hz timer, so up to 17 ms of it is waiting, not work).
Sort latency runs a sort action (as `P`, `N`, ... do) and filter latency sets a new
filter text (as each keystroke in the filter box does), each timed to the paint.

Budget (issue #9): a frame ≤ 50 ms at 500 guests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvmtop.app.feed_thread import FrameReady
from kvmtop.app.main import KvmtopApp
from kvmtop.views.guest_table import GuestTable
from tests.app.builders import FakeFeed, fleet, snapshot

SIZE = (200, 60)
BUDGET_MS = 50.0
"""Frame wall time budget at 500 guests."""
SORT_KEYS = ("name", "mem_used", "steal_pct", "cpu_pct")
FILTERS = ("vm-1", "vm-1[0-4]", "vm-0.5", "")


def _stats(prefix: str, samples: Sequence[float]) -> dict[str, float]:
    """Median and 95th percentile (nearest rank) of samples in seconds, as ms."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {f"{prefix}_median_ms": statistics.median(ordered) * 1e3, f"{prefix}_p95_ms": p95 * 1e3}


async def _timed(app: KvmtopApp, start: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds from `start()` to the end of the repaint that follows."""
    wall, cpu = time.perf_counter(), time.process_time()
    start()
    await app.wait_for_refresh()
    return time.perf_counter() - wall, time.process_time() - cpu


async def measure(guests: int, frames: int = 20) -> dict[str, Any]:
    """Frame, sort and filter times for `guests` guests (one fresh app)."""
    snaps = [snapshot(fleet(guests, seq), seq=seq) for seq in range(1, frames + 2)]
    app = KvmtopApp(FakeFeed())
    out: dict[str, Any] = {"guests": guests, "frames": frames, "size": f"{SIZE[0]}x{SIZE[1]}"}
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()

        def post(snap: Any) -> Callable[[], object]:
            return lambda: app.post_message(FrameReady(snap))

        first, _ = await _timed(app, post(snaps[0]))
        out["first_frame_ms"] = first * 1e3
        timed = [await _timed(app, post(s)) for s in snaps[1:]]
        out |= _stats("frame_wall", [w for w, _ in timed])
        out |= _stats("frame_cpu", [c for _, c in timed])

        async def latency(calls: Sequence[Callable[[], object]]) -> list[float]:
            # Each call runs here, as a key's action handler would, so the widgets it
            # changes are dirty before the wait starts: queued with call_later, the
            # wait could end at a repaint that did not show it yet (or none at all).
            return [(await _timed(app, c))[0] for c in calls]

        sorts = [partial(app.action_sort, k) for _ in range(3) for k in SORT_KEYS]
        out |= _stats("sort_wall", await latency(sorts))
        table = app.query_one(GuestTable)
        filters = [partial(table.set_filter, f) for _ in range(3) for f in FILTERS]
        out |= _stats("filter_wall", await latency(filters))
    return out


def run(sizes: list[int], frames: int = 20) -> list[dict[str, Any]]:
    """One result per guest count (see the module docstring for what is timed)."""
    return [asyncio.run(measure(n, frames)) for n in sizes]


def _table(results: Sequence[dict[str, Any]]) -> str:
    """The results as a text table (ms)."""
    head = (
        f"{'guests':>6} {'first':>7} {'frame wall':>17} {'frame CPU':>17} "
        f"{'sort wall':>17} {'filter wall':>17}"
    )
    lines = [head, f"{'':>6} {'':>7}" + f" {'median':>8} {'p95':>8}" * 4]
    for r in results:
        cols = "".join(
            f" {r[f'{k}_median_ms']:8.1f} {r[f'{k}_p95_ms']:8.1f}"
            for k in ("frame_wall", "frame_cpu", "sort_wall", "filter_wall")
        )
        lines.append(f"{r['guests']:>6} {r['first_frame_ms']:7.1f}{cols}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table; optionally write the results as JSON; say whether the budget
    holds at 500 guests."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    results = run(args.sizes, args.frames)
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    for r in results:
        if r["guests"] == 500:
            met = r["frame_wall_median_ms"] <= BUDGET_MS
            print(
                f"budget: frame ≤ {BUDGET_MS:.0f} ms at 500 guests: "
                f"{'met' if met else 'MISSED'} ({r['frame_wall_median_ms']:.1f} ms median)"
            )


if __name__ == "__main__":
    main()
