"""A synthetic libvirt for scale benchmarks: captured lab stats, multiplied to N guests.

The real `LibvirtCollector` opens this connection instead of libvirtd (its `open_fn`),
so everything from the bulk-stats parser on is the code a live tick runs. Records
come from a real capture (tests/fixtures/libvirt/<capture>/stats.json: two
`getAllDomainStats` calls with the balloon group, seconds apart) and the captured
domain XML; guest i is capture template `i % 12` under a new name and UUID. On each
call a counter moves on from its first captured value at its captured rate, scaled to
the injected clock, so rates, windows and detectors see a steadily busy host; a value
that went down between the captures (a gauge) alternates between its two values.

The templates' stats dicts are built once per call and shared by their clones (the
collector only reads them), so the harness costs a few dicts per tick, whatever the
number of guests; `spent_s` still counts that time for the caller to subtract.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvmtop.model.units import NS_PER_S
from tests.collectors.test_libvirt import FakeConnection, FakeDomain

CAPTURE = Path(__file__).resolve().parents[1] / "tests/fixtures/libvirt/lab-2026-11-26"
HOST_TREE = Path(__file__).resolve().parents[1] / "tests/fixtures/fs/lab-running"
"""A captured host tree (proc/, sys/) for the host collector: the same every tick."""

BALLOON_PREFIX = "balloon."
LAST_UPDATE = "balloon.last-update"
# virDomainStatsTypes (libvirt-domain.h): VIR_DOMAIN_STATS_BALLOON = 1 << 2.
STATS_BALLOON = 1 << 2


class _Template:
    """One captured domain: its first stats and the per-second rate of each counter."""

    def __init__(self, first: dict[str, Any], second: dict[str, Any], dt_s: float) -> None:
        self.fixed = {k: v for k, v in first.items() if not isinstance(v, int | float)}
        self.start = {k: v for k, v in first.items() if isinstance(v, int | float)}
        self.rate = {k: (second.get(k, v) - v) / dt_s for k, v in self.start.items()}
        self.other = {k: second.get(k, v) for k, v in self.start.items()}

    def stats(self, elapsed_s: float, tick: int, balloon: bool) -> dict[str, Any]:
        """The stats of this domain `elapsed_s` after the first capture."""
        out = dict(self.fixed)
        for k, v in self.start.items():
            r = self.rate[k]
            if r >= 0:
                moved = v + r * elapsed_s
                out[k] = int(moved) if isinstance(v, int) else moved
            else:
                out[k] = self.other[k] if tick % 2 else v
        if not balloon:
            out = {k: v for k, v in out.items() if not k.startswith(BALLOON_PREFIX)}
        return out


class SyntheticConnection(FakeConnection):
    """A read-only virConnect serving `guests` clones of the captured lab domains (the
    libvirt collector tests' connection and domain doubles, with moving counters).

    Args:
        guests: number of domains to list.
        clock: monotonic ns, the time the counters have reached (the bench's clock).
        wall: wall seconds matching `clock`: a balloon reply says the guest reported
            then (`balloon.last-update`, host epoch seconds), as a guest with a stats
            period does; the captured value would read as hours stale.
        capture: a capture directory (stats.json and domains/<name>.xml).
    """

    def __init__(
        self,
        guests: int,
        clock: Callable[[], int],
        wall: Callable[[], float] = time.time,
        capture: Path = CAPTURE,
    ) -> None:
        super().__init__([])
        data = json.loads((capture / "stats.json").read_text())
        calls = {c["label"]: c for c in data["calls"]}
        first, second = calls["fast+balloon-1"], calls["fast+balloon-2"]
        dt_s = (second["mono_ns"] - first["mono_ns"]) / NS_PER_S
        later = {r[1]: r[3] for r in second["records"]}
        self._clock = clock
        self._wall = wall
        self._t0 = clock()
        self._templates = [_Template(r[3], later[r[1]], dt_s) for r in first["records"]]
        self.spent_s = 0.0
        """Process time spent building replies (harness cost, not kvmtop's)."""
        self._ticks = 0
        self._domains: list[tuple[int, FakeDomain]] = []
        for i in range(guests):
            t = i % len(first["records"])
            tmpl_uuid, tmpl_name, dom_id, _ = first["records"][t]
            name = f"{tmpl_name}-{i:03d}"
            dom_uuid = str(uuid.uuid5(uuid.NAMESPACE_OID, f"kvmtop-bench-{i}"))
            xml = (capture / "domains" / f"{tmpl_name}.xml").read_text()
            xml = xml.replace(f"<name>{tmpl_name}</name>", f"<name>{name}</name>")
            xml = xml.replace(tmpl_uuid, dom_uuid)
            self._domains.append(
                (t, FakeDomain(dom_uuid, name, -1 if dom_id is None else 1000 + i, xml))
            )

    def getAllDomainStats(self, stats: int, flags: int) -> list[tuple[Any, dict[str, Any]]]:
        """One bulk-stats reply for every domain, counters moved on to the clock's time."""
        t0 = time.process_time()
        elapsed_s = (self._clock() - self._t0) / NS_PER_S
        balloon = bool(stats & STATS_BALLOON)
        replies = [t.stats(elapsed_s, self._ticks, balloon) for t in self._templates]
        if balloon:
            for reply in replies:
                if LAST_UPDATE in reply:
                    reply[LAST_UPDATE] = int(self._wall())
        self._ticks += 1
        out = [(dom, replies[t]) for t, dom in self._domains]
        self.spent_s += time.process_time() - t0
        return out

    def getURI(self) -> str:
        """A remote URI (it names a host): the clones have no QEMU process, so the
        collector looks up no pidfile (a local one would retry each missing pidfile
        on every tick)."""
        return "test://bench/default"
