"""UI frame time with N fake guests: `python -m tests.app.frame_time 10 100 500`.

A frame is timed from posting `FrameReady` to the end of the repaint that follows
(`pilot.pause()` returns once the app is idle again), in wall time and in this
process's CPU time (which a busy machine inflates less). Every frame changes most
numeric cells, as a busy host does. An idle `pilot.pause()` is measured too: it is
harness overhead included in every figure. No assertions: this only measures.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from kvmtop.app import FrameReady, KvmtopApp
from tests.app.builders import FakeFeed, fleet, snapshot


async def measure(guests: int, frames: int = 10, size: tuple[int, int] = (200, 60)) -> str:
    """Median and worst frame times for `guests` guests, as one report line."""
    snaps = [snapshot(fleet(guests, seq), seq=seq) for seq in range(1, frames + 2)]
    app = KvmtopApp(FakeFeed())
    async with app.run_test(size=size) as pilot:
        idle = []
        for _ in range(5):
            start = time.perf_counter()
            await pilot.pause()
            idle.append(time.perf_counter() - start)
        wall, cpu = [], []
        for snap in snaps:
            start, start_cpu = time.perf_counter(), time.process_time()
            app.post_message(FrameReady(snap))
            await pilot.pause()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    first, wall, cpu = wall[0], wall[1:], cpu[1:]
    return (
        f"{guests:4d} guests: first frame {first * 1e3:7.1f} ms; later frames median "
        f"{statistics.median(wall) * 1e3:7.1f} ms wall (max {max(wall) * 1e3:7.1f}), "
        f"{statistics.median(cpu) * 1e3:7.1f} ms CPU; idle pause "
        f"{statistics.median(idle) * 1e3:5.1f} ms"
    )


def main(argv: list[str]) -> None:
    """Print one line per guest count."""
    for guests in [int(a) for a in argv] or [10, 100, 500]:
        print(asyncio.run(measure(guests)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
