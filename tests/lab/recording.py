"""A headless `kvmtop record` of the lab for the whole pytest session, and the fault journal.

The detector lab tests (tests/e2e/test_lab_detectors.py) need ten minutes of a
steadily leaking guest and of healthy guests, which no test may block for. So the
`lab` fixture starts this recording as soon as the lab is up (only when those tests
are selected): it restarts lab-memleak's leak from zero (`lab fault leak`, a known
start time) and runs the project's own `kvmtop record --config FILE` in the
background while the rest of the suite runs. The judging tests run last, wait for
whatever part of the ten minutes is left, apply their faults, stop the recorder
with SIGTERM and replay the file through `kvmtop replay --batch --format json`.

Every `lab fault` call, by any test, is appended to ``run/faults/journal`` by the
`lab` script (``EPOCH NAME ARGS...``), so a finding in the recording can be matched
with the fault that caused it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from kvmtop.config import Settings

if TYPE_CHECKING:
    from tests.lab.fixture import Lab

LEAK_GUEST = "lab-memleak"
# Capacity given to kvmtop for each lab uplink veth (a veth's own speed is made up:
# drivers/net/veth.c reports none). Above the healthy flows through them (lab-net
# 1.15 Mbit/s into labup0, lab-ovs 0.22 Mbit/s into labov0), at or above what
# `lab fault shape` lets through when a test shapes them.
UPLINK_CAPACITY_MBPS = {"linux": 10.0, "ovs": 1.0}


@dataclass(frozen=True)
class FaultEvent:
    """One `lab fault` call from the journal."""

    time_s: float
    name: str
    args: tuple[str, ...]


def read_journal(state_dir: Path, since_s: float = 0.0) -> list[FaultEvent]:
    """`lab fault` calls journaled at or after `since_s` (Unix seconds), oldest first."""
    path = state_dir / "run" / "faults" / "journal"
    events = []
    for line in path.read_text().splitlines() if path.exists() else []:
        stamp, name, *args = line.split()
        if float(stamp) >= since_s:
            events.append(FaultEvent(float(stamp), name, tuple(args)))
    return events


def interval_s(lab: Lab) -> float:
    """The interval the lab is recorded at: its scenario's `kvmtop_interval_s`."""
    return float(lab.manifest.get("kvmtop_interval_s", 2.0))


def balloon_every(lab: Lab) -> int:
    """Ticks between balloon reads in the recording: kvmtop's default balloon period
    (its default `balloon_every` ticks of its default interval, 10 s) at the lab's
    interval. The default `balloon_every` at the nested lab's 5 s interval read the
    balloon every 25 s, and more sparsely still when ticks overran (the tick counter
    counts ticks run, not slots)."""
    default = Settings()
    return max(1, round(default.interval_s * default.balloon_every / interval_s(lab)))


def config_text(lab: Lab) -> str:
    """The config file kvmtop records and replays the lab with: the balloon period and
    the uplinks' capacity."""
    lines = [
        f"balloon_every = {balloon_every(lab)}",
        "",
        "[detectors.vswitch_saturation.uplink_capacity_mbps]",
    ]
    for kind, mbps in UPLINK_CAPACITY_MBPS.items():
        lines.append(f"{lab.manifest['bridges'][kind]['uplink_veth']} = {mbps:g}")
    return "\n".join(lines) + "\n"


@dataclass
class SessionRecording:
    """A `kvmtop record` process started with the lab, and what it records."""

    path: Path
    config: Path
    log: Path
    started_s: float
    """Unix time the leak was restarted from zero (the recorder started right after)."""
    proc: subprocess.Popen[bytes]
    _log_file: IO[bytes]

    def elapsed_s(self) -> float:
        """Seconds since the leak restarted."""
        return time.time() - self.started_s

    def stop(self) -> None:
        """SIGTERM the recorder (it finishes the sample being written) and wait for it.

        Raises:
            RuntimeError: the recorder had died, or did not exit 0.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        if self.proc.returncode != 0:
            raise RuntimeError(
                f"kvmtop record exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
            )

    def close(self) -> None:
        """Stop the recorder whatever its state (session teardown)."""
        with contextlib.suppress(RuntimeError):
            self.stop()


def start_recording(lab: Lab, directory: Path) -> SessionRecording:
    """Restart the lab's leak from zero and start `kvmtop record` on the lab."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "lab.toml"
    config.write_text(config_text(lab))
    path = directory / "lab-session.kvmtop"
    log = directory / "record.log"
    lab.fault("leak", LEAK_GUEST)
    started = time.time()
    log_file = log.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvmtop",
            "record",
            "--config",
            str(config),
            "-d",
            f"{interval_s(lab):g}",
            "-o",
            str(path),
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    return SessionRecording(path, config, log, started, proc, log_file)
