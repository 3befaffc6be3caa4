"""What the shipped recording promises a newcomer without KVM (`make demo` replays it).

`examples/lab-sample.kvmtop` is 10 minutes of the lab's `demo` scenario recorded by
`kvmtop record` (examples/README.md). Replayed with no config, kvmtop must flag the
guest leaking memory and the saturated uplink, each as an incident, within the first
5 minutes, the leak ranked first (time to harm), and the two guests pinned to one CPU
as one pinning collision naming exactly them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab-sample.kvmtop"
PROMISE_S = 300.0


@pytest.fixture(scope="module")
def frames() -> list[dict[str, Any]]:
    """Every frame of `kvmtop replay --batch --format json` over the example."""
    out = subprocess.run(
        [sys.executable, "-m", "kvmtop", "replay", str(EXAMPLE), "--batch", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def _first_active(frames: list[dict[str, Any]], kind: str) -> tuple[float, dict[str, Any]]:
    start = float(frames[0]["time"])
    for frame in frames:
        for inc in frame["incidents"]:
            if inc["kind"] == kind and inc["active"] and inc["severity"] != "info":
                return float(frame["time"]) - start, inc
    raise AssertionError(f"no {kind} incident in the example")


def test_the_leak_and_the_saturated_switch_are_incidents_within_5_minutes(
    frames: list[dict[str, Any]],
) -> None:
    leak_s, leak = _first_active(frames, "leak")
    switch_s, switch = _first_active(frames, "switch")
    print(
        f"\nleak after {leak_s:.0f} s: {leak['title']}\nswitch after {switch_s:.0f} s: "
        f"{switch['title']}"
    )
    assert leak_s <= PROMISE_S and switch_s <= PROMISE_S
    assert leak["guests"] == ["lab-memleak"]
    assert leak["eta_s"] is not None and leak["advice"]
    assert switch["cause"] == "switch:labbr0"
    # The uplink is a veth with no configured capacity: its tbf rate is the capacity.
    evidence = switch["evidence"]
    assert evidence["uplink_shaped_mbps"] == evidence["uplink_capacity_mbps"] == 4.0


def test_the_leak_ranks_first_and_the_pinned_pair_is_one_collision(
    frames: list[dict[str, Any]],
) -> None:
    leak_s, _ = _first_active(frames, "leak")
    start = float(frames[0]["time"])
    after = [f for f in frames if float(f["time"]) - start >= leak_s]
    for frame in after[:20]:
        ranked = [i for i in frame["incidents"] if i["active"]]
        assert ranked[0]["kind"] == "leak", [i["title"] for i in ranked[:3]]
    pinning = [i for i in after[0]["incidents"] if i["kind"] == "pinning"]
    assert len(pinning) == 1
    assert pinning[0]["guests"] == ["lab-steal-a", "lab-steal-b"]
