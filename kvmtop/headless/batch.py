"""Batch output: top-style text or JSON lines, one per tick, for scripts and tickets.

Layer: headless (reads snapshots from a feed; never imports textual). What one line
holds is `kvmtop.model.as_text.snapshot_text` or `kvmtop.model.as_json.snapshot_json`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from kvmtop.feed.protocols import Feed
from kvmtop.model.as_json import json_text, snapshot_json
from kvmtop.model.as_text import snapshot_text
from kvmtop.sampler import next_tick


def run_batch(
    feed: Feed,
    out: TextIO,
    *,
    count: int | None,
    fmt: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Print `count` snapshots (forever when None), one interval apart.

    Rates need two samples, so the first sample is taken silently and the first
    line comes one interval later. Ticks keep a fixed cadence: the time spent
    collecting is taken off the sleep, and ticks missed while one overran are skipped
    (`next_tick`), not printed in a burst. Returns the number of lines printed.
    """
    deadline = clock()
    first = feed.next()
    if first is None:
        return 0
    printed = 0
    while count is None or printed < count:
        deadline = next_tick(deadline, clock(), feed.interval_s)
        sleep(max(0.0, deadline - clock()))
        snap = feed.next()
        if snap is None:
            break
        if fmt == "json":
            out.write(json_text(snapshot_json(snap)) + "\n")
        else:
            out.write(snapshot_text(snap) + "\n\n")
        out.flush()
        printed += 1
    return printed
