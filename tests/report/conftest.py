"""A recording with real faults for the report and export tests.

Built with the detector test builders (`tests.detectors.builders.World`: rates →
cumulative counters → raw samples) and written with the real `StoreWriter`: 12
minutes at 2 s of four guests on one bridge: "leaky" leaks 5 MiB/min the whole time,
"stealer" has 25 % steal from minute 2 to minute 6, "dropper" drops 2 % of its RX
packets from minute 8 on, "quiet" is healthy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmtop.commands.main import main
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from tests.detectors.builders import (
    DiskSpec,
    GuestSpec,
    HostDiskSpec,
    HostSpec,
    NetDevSpec,
    NicSpec,
    VcpuSpec,
    World,
    balloon,
)

MINUTES = 12
DT = 2.0
STEAL = (120.0, 360.0)
"""Seconds into the recording when stealer's steal starts and stops."""
DROPS_FROM = 480.0


def _guest(uuid: str, name: str) -> GuestSpec:
    return GuestSpec(
        uuid,
        name,
        vcpus=[VcpuSpec(cpu_pct=40.0, steal_pct=0.5, exits_per_s=2000.0)],
        disks=[DiskSpec(rd_iops=30.0, rd_ms=1.0, wr_iops=20.0, wr_ms=2.0, host_dev="sda")],
        nics=[NicSpec(name=f"vnet-{name}", rx_pps=1000.0, bridge="br0")],
        balloon=balloon(30.0),
        balloon_period_s=10,
    )


def world() -> World:
    """The four guests and a host with one disk and one uplink on br0."""
    host = HostSpec(
        disks=[HostDiskSpec("sda", iops=120.0, ms=0.4, util_pct=20.0)],
        netdevs=[
            NetDevSpec(
                "eno1", "physical", master="br0", speed_mbps=1000, rx_bps=200e6, tx_bps=80e6
            ),
            NetDevSpec("br0", "bridge"),
        ],
        psi_cpu_some_pct=3.0,
    )
    names = ("leaky", "stealer", "dropper", "quiet")
    return World(
        [_guest(f"00000000-0000-0000-0000-00000000000{i}", n) for i, n in enumerate(names)], host
    )


def record(path: Path) -> Path:
    """Write the scripted recording to `path`."""
    w = world()
    leaky, stealer, dropper = w.guest("leaky"), w.guest("stealer"), w.guest("dropper")
    writer = StoreWriter(path)
    for i in range(int(MINUTES * 60 / DT)):
        t = (i + 1) * DT
        if i % 5 == 0:  # balloon stats every 10 s, as the collector's slow tier
            leaky.balloon = balloon(20.0 + 5.0 * t / 60.0, last_update_s=w.wall_s + DT - 1)
            for g in (stealer, dropper, w.guest("quiet")):
                g.balloon = balloon(30.0, last_update_s=w.wall_s + DT - 1)
        stealer.vcpus[0].steal_pct = 25.0 if STEAL[0] <= t < STEAL[1] else 0.5
        dropper.nics[0].rx_drops = 20.0 if t >= DROPS_FROM else 0.0
        writer.append(w.sample(DT))
    writer.close()
    return path


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted recording (written once per test session)."""
    return record(tmp_path_factory.mktemp("report") / "incident.kvmtop")


def run_command(command: str, recording: Path, tmp_path: Path, fmt: str, *extra: str) -> str:
    """`kvmtop COMMAND RECORDING --format FMT -o OUT EXTRA...` (must exit 0); OUT's text."""
    out = tmp_path / f"{command}.{fmt}"
    assert main([command, str(recording), "--format", fmt, "-o", str(out), *extra]) == 0
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def start_s(recording: Path) -> float:
    """Unix time of the recording's first sample."""
    with StoreReader(recording) as reader:
        first = reader.first_time()
    assert first is not None
    return first
