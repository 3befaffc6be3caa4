"""What the libvirt collector remembers about each domain between ticks, and the sample
of a guest that did not answer in time.

Layer: collectors (I/O-free helpers of the libvirt collector).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from kvmtop.collectors.libvirt.domstats import DomainLinks, DomainStatsParser, domain_state_name
from kvmtop.collectors.libvirt.domxml import DomainInfo, parse_domain_xml
from kvmtop.model.sample import BalloonSample, GuestSample


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
        state=(domain_state_name(state) if isinstance(state, int)
               else last.state if last is not None else "running"),
        accel=links.accel,
        pid=entry.parser.pid,
        vcpus_current=(vcpus if isinstance(vcpus, int)
                       else last.vcpus_current if last is not None else None),
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
