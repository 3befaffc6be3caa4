"""Findings of a lab recording, and which lab fault explains each of them.

Read from `kvmtop replay FILE --batch --format json` (one snapshot per line, each
with its active findings), so the judgement goes through kvmtop's own replay,
rates and detectors, and survives changes of the recording format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lab.fixture import Lab
from tests.lab.recording import FaultEvent

SEVERE = ("warning", "critical")
# A finding raised by a fault may outlive it: hysteresis clears after K = 3 good
# samples (6 s), disk latency is judged over up to 20 s of accumulated requests and
# the OVS counters are read every 10 s (kvmtop.detectors.settings).
AFTER_FAULT_S = 40.0


@dataclass(frozen=True)
class Seen:
    """One finding as active in one replayed snapshot."""

    time_s: float
    detector: str
    severity: str
    guest: str | None
    subject: str
    subject_name: str
    message: str
    evidence: dict[str, float]
    baseline: dict[str, float]


def replay_frames(recording: Path, config: Path) -> list[dict[str, Any]]:
    """Every snapshot of a recording as `kvmtop replay --batch --format json` gives it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvmtop",
            "replay",
            str(recording),
            "--batch",
            "--format",
            "json",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def findings_of(frames: list[dict[str, Any]]) -> tuple[list[float], list[Seen]]:
    """Snapshot times and every active finding of every snapshot."""
    times = [float(snap["time"]) for snap in frames]
    seen = [_seen(float(snap["time"]), f) for snap in frames for f in snap["findings"]]
    return times, seen


def replay_findings(recording: Path, config: Path) -> tuple[list[float], list[Seen]]:
    """Snapshot times and every active finding of every snapshot of a recording."""
    return findings_of(replay_frames(recording, config))


def _seen(time_s: float, f: dict[str, Any]) -> Seen:
    return Seen(
        time_s,
        f["detector"],
        f["severity"],
        f["guest"],
        f["subject"],
        f["subject_name"],
        f["message"],
        dict(f["evidence"]),
        dict(f["baseline"]),
    )


@dataclass(frozen=True)
class FaultWindow:
    """A fault's time span and the findings it may cause: (detector, guest or subject)."""

    start_s: float
    end_s: float
    causes: frozenset[tuple[str, str]]

    def explains(self, s: Seen) -> bool:
        """Whether this fault accounts for the finding `s`."""
        return self.start_s <= s.time_s <= self.end_s + AFTER_FAULT_S and (
            (s.detector, s.guest or "") in self.causes
            or (s.detector, s.subject_name) in self.causes
        )


def fault_windows(lab: Lab, journal: Iterable[FaultEvent], end_s: float) -> list[FaultWindow]:
    """Pair each journaled fault with the call that undid it (`end_s` if none did)."""
    switch_of = {kind: b["name"] for kind, b in lab.manifest["bridges"].items()}
    pair = [g.name for g in lab.contention_group("steal")]
    windows: list[FaultWindow] = []
    open_: dict[str, tuple[float, frozenset[tuple[str, str]]]] = {}

    def close(key: str, t: float) -> None:
        if key in open_:
            start, causes = open_.pop(key)
            windows.append(FaultWindow(start, t, causes))

    for ev in journal:
        if ev.name == "contend":
            open_["contend"] = (ev.time_s, frozenset(("steal", g) for g in pair))
        elif ev.name == "iotune":
            close(f"iotune {ev.args[0]}", ev.time_s)
            if ev.args[1] != "0":
                open_[f"iotune {ev.args[0]}"] = (
                    ev.time_s,
                    frozenset({("disk_latency", ev.args[0])}),
                )
        elif ev.name == "shape":
            kind = ev.args[1] if len(ev.args) > 1 else "linux"
            open_[f"shape {kind}"] = (
                ev.time_s,
                frozenset({("vswitch_saturation", switch_of[kind])}),
            )
        elif ev.name == "stall":  # ends by itself after its seconds
            windows.append(
                FaultWindow(
                    ev.time_s,
                    ev.time_s + float(ev.args[1]),
                    frozenset({("vnic_drops", ev.args[0])}),
                )
            )
        elif ev.name == "leak":
            open_[f"leak {ev.args[0]}"] = (ev.time_s, frozenset({("memory_leak", ev.args[0])}))
        undone = {
            "uncontend": ["contend"],
            "unshape": ["shape linux", "shape ovs"],
            "reset": [k for k in open_ if not k.startswith("leak")],
        }.get(ev.name, [])
        for key in undone:
            close(key, ev.time_s)
    for key in list(open_):
        close(key, end_s)
    return windows


def episodes(seen: Iterable[Seen], detector: str, who: str) -> list[Seen]:
    """Severe occurrences of `detector` on a guest or subject name, in time order."""
    return sorted(
        (
            s
            for s in seen
            if s.detector == detector and s.severity in SEVERE and who in (s.guest, s.subject_name)
        ),
        key=lambda s: s.time_s,
    )
