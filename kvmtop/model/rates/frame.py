"""A frame: rates for every guest and the host between two consecutive samples.

Layer: model (pure). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmtop.model.rates.counters import interval_gap
from kvmtop.model.rates.guest import GuestRates, derive_guest
from kvmtop.model.rates.host import HostRates, derive_host
from kvmtop.model.sample import Sample
from kvmtop.model.units import NS_PER_S


@dataclass(frozen=True, slots=True)
class Frame:
    """Rates for every guest and the host between two consecutive samples."""

    wall_s: float
    dt_s: float | None
    host: HostRates
    guests: tuple[GuestRates, ...]


def derive(prev: Sample | None, cur: Sample, min_ops: int = 5) -> Frame:
    """Derive the frame for `cur` from the previous sample (None for the first).

    Guests are matched by UUID; a guest absent from `prev`, restarted, not running, or
    not answering on either side has unknown rates, and so has every guest when the
    interval is far off the nominal one (`interval_gap`). Host rates use the host
    source's own monotonic stamp: kvmtop reads the host counters itself, right at
    that stamp, so they are rates over the time that really passed, whatever it was.
    """
    dt_s = (cur.mono_ns - prev.mono_ns) / NS_PER_S if prev is not None else None
    gap = None
    if prev is not None and dt_s is not None:
        gap = interval_gap(dt_s, prev.interval_s, cur.interval_s)
    prev_guests = {g.uuid: g for g in prev.guests} if prev is not None and gap is None else {}
    guests = tuple(
        derive_guest(prev_guests.get(g.uuid), g, dt_s or 0.0, cur.wall_s, min_ops, gap)
        for g in cur.guests
    )
    if cur.host is None:
        host = HostRates(na={"host": "host source failed this tick"})
    else:
        host = derive_host(prev.host if prev is not None else None, cur.host)
    return Frame(wall_s=cur.wall_s, dt_s=dt_s, host=host, guests=guests)
