"""What the libvirt collector remembers about each domain between ticks (refreshed from
its XML and pidfile when it is new or restarted), and the sample of a guest that did
not answer in time.

Layer: collectors (helpers of the libvirt collector).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmtop.collectors.libvirt.domstats import DomainLinks, DomainStatsParser, domain_state_name
from kvmtop.collectors.libvirt.domxml import DomainInfo, parse_domain_xml
from kvmtop.model.sample import BalloonSample, GuestSample

PID_DIR = "run/libvirt/qemu"
"""Where libvirt's QEMU driver writes `<name>.pid` at domain start (qemu:///system),
under the collector's root."""


@dataclass(slots=True)
class DomainEntry:
    """What the collector remembers about one domain between ticks.

    Keyed by UUID; valid for one `dom_id` (a restart gets a new ID and a new entry).
    `parser` reads its stats with what the XML (`parser.links`) and the pidfile
    (`parser.pid`) said.
    """

    dom_id: int | None
    info: DomainInfo | None = None
    xml_fetched: bool = False
    balloon: BalloonSample | None = None
    last: GuestSample | None = None
    """The domain's latest sample (its identity when a tick gets no record at all)."""
    silent_since_s: float | None = None
    """Wall time since which no tick got the domain's record, while that lasts."""
    parser: DomainStatsParser = dataclasses.field(
        default_factory=lambda: DomainStatsParser(DomainLinks())
    )


def clock_text(wall_s: float) -> str:
    """A wall time as the local time of day (HH:MM:SS)."""
    return time.strftime("%H:%M:%S", time.localtime(wall_s))


def no_answer(
    entry: DomainEntry,
    uuid: str,
    name: str,
    dom_id: int,
    stats: dict[str, Any],
    since_s: float,
    reason: str,
    last: GuestSample | None = None,
) -> GuestSample:
    """The sample of a guest that did not answer in time: identity, state and size
    (from its record, else from `last`), no counter (they would not be this tick's)."""
    state = stats.get("state.state")
    vcpus = stats.get("vcpu.current")
    links = entry.parser.links
    return GuestSample(
        uuid=uuid,
        name=name,
        dom_id=dom_id,
        state=(
            domain_state_name(state)
            if isinstance(state, int)
            else last.state
            if last is not None
            else "running"
        ),
        accel=links.accel,
        pid=entry.parser.pid,
        vcpus_current=(
            vcpus if isinstance(vcpus, int) else last.vcpus_current if last is not None else None
        ),
        max_memory_bytes=links.max_memory_bytes,
        balloon_period_s=links.balloon_period_s,
        not_responding_since_s=since_s,
        not_responding=reason,
    )


def parse_xml_or_none(xml: str) -> DomainInfo | None:
    """parse_domain_xml, or None for XML it cannot read (cached: it will not change)."""
    try:
        return parse_domain_xml(xml)
    except ValueError:
        return None


def refreshed(
    lv: Any, dom: Any, previous: DomainEntry | None, dom_id: int | None, pid_dir: Path | None
) -> DomainEntry | None:
    """The entry of a domain for this tick: `previous` while the domain keeps its ID,
    else a new one; its XML is read when it is new or restarted, its QEMU pid from
    `pid_dir` (local URIs only, else None).

    Returns None when the domain vanished before its XML could be read
    (VIR_ERR_NO_DOMAIN): it is skipped this tick. Any other XMLDesc error leaves
    the XML facts unknown and is retried on the next tick.
    """
    entry = previous
    if entry is None or entry.dom_id != dom_id:
        entry = DomainEntry(dom_id=dom_id)
    if not entry.xml_fetched:
        try:
            xml: str = dom.XMLDesc(0)
        except lv.libvirtError as exc:
            if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                return None
        else:
            entry.info = parse_xml_or_none(xml)
            entry.xml_fetched = True
            entry.parser.links = DomainLinks.of(entry.info)
    if entry.parser.pid is None and dom_id is not None and pid_dir is not None:
        entry.parser.pid = read_pid(pid_dir / f"{dom.name()}.pid")
    return entry


def read_pid(path: Path) -> int | None:
    """A QEMU pid from libvirt's pidfile; None when it is missing or not a number."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
