"""The guest table's columns and the fleet table's cells, shared by the TUI and the
text outputs (`--batch`, report, export, `fleet --batch`).

Layer: model (pure; no textual, no rich). Numbers are written by
`kvmtop.model.formatting`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvmtop.model.fleet import HostRow, Peak
from kvmtop.model.formatting import DASH, fmt_bytes, fmt_mbps, fmt_ms, fmt_num, fmt_pct, fmt_si
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.text import visible


@dataclass(frozen=True, slots=True)
class Column:
    """One guest-table column: header, value getter and formatter.

    `value` returns the sortable number (None sorts last); `fmt` its text.
    `na_key` names the `GuestRates.na` entry that explains a blank cell. A `text`
    column's value is a string (or None): left-aligned, sorted ascending.
    """

    key: str
    header: str
    value: Callable[[GuestRates], float | str | None]
    fmt: Callable[[float | None], str]
    width: int
    na_key: str | None = None
    help: str = ""
    text: bool = False


def _text(v: float | None) -> str:
    """Formatter of text columns; only reached for unknown values."""
    return DASH if v is None else str(v)


NO_ANSWER = "no answer"
"""The State cell of a guest that did not answer within the tick (`not_responding`)."""


def _state_text(g: GuestRates) -> str:
    """The State cell: libvirt's state, "unmanaged", or `NO_ANSWER`."""
    if g.not_responding is not None:
        return NO_ANSWER
    return g.state if g.managed == "libvirt" else "unmanaged"


def _exits_text(g: GuestRates) -> str | None:
    return g.dominant_exit


GUEST_COLUMNS: tuple[Column, ...] = (
    Column("name", "Guest", lambda g: g.name, _text, 18, help="libvirt domain name",
           text=True),
    Column("state", "State", _state_text, _text, 9,
           help="libvirt domain state; 'unmanaged' for a running KVM process that "
           "libvirt does not manage (plain QEMU, Firecracker, ...); 'no answer' for a "
           "guest whose QEMU did not answer within the tick (the sources view says "
           "since when)", text=True),
    Column("vcpus", "vCPU", lambda g: g.vcpus, lambda v: fmt_num(v, 0), 4, help="vCPUs online"),
    Column("cpu_pct", "CPU%", lambda g: g.cpu_pct, fmt_pct, 6, "cpu_pct",
           "Δ cpu.time / Δt (QEMU process incl. emulator/iothreads; 100 = one host CPU)"),
    Column("steal_pct", "Steal%", lambda g: g.steal_pct, fmt_pct, 6, "steal_pct",
           "mean over vCPUs of Δ run-queue delay / Δt (what KVM reports to the guest as steal)"),
    Column("steal_max_pct", "StMax%", lambda g: g.steal_max_pct, fmt_pct, 6, "steal_pct",
           "the most starved vCPU's steal"),
    Column("exits_per_s", "Exits/s", lambda g: g.exits_per_s, fmt_si, 8, "exits_per_s",
           "VM exits per second summed over vCPUs (KVM binary stats)"),
    Column("exit_top", "Top exit", _exits_text, _text, 10, "exits_per_s",
           "the exit category with the highest rate", text=True),
    Column("disk_iops", "IOPS", lambda g: g.disk_iops, fmt_si, 6, "disk_iops",
           "read + write + flush requests per second, all disks"),
    Column("disk_read_ms", "Rd ms", lambda g: g.disk_read_ms, fmt_ms, 6, "disk_read_ms",
           "mean read latency (Δ rd.times / Δ rd.reqs), shown with enough requests"),
    Column("disk_write_ms", "Wr ms", lambda g: g.disk_write_ms, fmt_ms, 6, "disk_write_ms",
           "mean write latency (Δ wr.times / Δ wr.reqs)"),
    Column("net_mbps", "Net Mb/s", lambda g: _sum2(g.net_rx_bps, g.net_tx_bps), fmt_mbps, 8,
           "net_rx_bps", "guest RX + TX in megabits per second"),
    Column("net_drops_per_s", "Drops/s", lambda g: g.net_drops_per_s, fmt_si, 7, "net_rx_bps",
           "RX + TX packet drops per second on the guest's vNICs"),
    Column("mem_used", "Mem used", lambda g: g.mem_used_bytes, fmt_bytes, 8, "mem_used_bytes",
           "guest used memory = MemTotal − MemAvailable (balloon stats)"),
)


def _sum2(a: float | None, b: float | None) -> float | None:
    if a is None and b is None:
        return None
    return (a or 0.0) + (b or 0.0)


def cell_text(col: Column, g: GuestRates) -> str:
    """The text of one guest-table cell, as shown (a name's control and bidi
    characters escaped: `kvmtop.model.text.visible`)."""
    v = col.value(g)
    if isinstance(v, str):
        return visible(v)
    return col.fmt(v)


def column(key: str) -> Column:
    """The column with this key (KeyError if unknown)."""
    for c in GUEST_COLUMNS:
        if c.key == key:
            return c
    raise KeyError(key)


FLEET_STALE_S = 60.0
"""A host whose kvmtop data (as Prometheus has it) is older than this is flagged."""

FLEET_HEADERS = ("Host", "Instance", "Age", "Guests", "vCPU:CPU", "Steal% max", "Exits/s",
                 "IOPS max", "Mb/s max", "Crit/Warn", "Most urgent incident")
"""The fleet table's columns (`kvmtop fleet`, text and screen)."""


def _peak(p: Peak | None, fmt: Callable[[float | None], str]) -> str:
    return DASH if p is None else f"{fmt(p.value)} {p.guest}"


def fleet_texts(r: HostRow) -> list[tuple[str, str | None]]:
    """One host's cells under FLEET_HEADERS: (text, severity level or None). Names
    as they are: the table draws them through `visible`."""
    top = r.incidents[0] if r.incidents else None
    stale = r.age_s is not None and r.age_s > FLEET_STALE_S
    name = (r.hostname or DASH) + ("" if r.mode in (None, "live") else f" ({r.mode})")
    return [
        (name if r.up else f"{name} DOWN", None if r.up else "critical"),
        (r.instance, None),
        (DASH if r.age_s is None else f"{r.age_s:.0f}s", "warning" if stale else None),
        (DASH if r.guests is None else str(r.guests), None),
        (DASH if r.vcpu_ratio is None else f"{r.vcpu_ratio:.2f}", None),
        (_peak(r.steal, fmt_pct), None),
        (fmt_si(r.exits_per_s), None),
        (_peak(r.iops, lambda v: fmt_num(v, 0)), None),
        (_peak(r.net_bps, fmt_mbps), None),
        (f"{r.criticals}/{r.warnings}",
         "critical" if r.criticals else "warning" if r.warnings else None),
        (DASH if top is None else f"{top.severity} {top.kind}: {top.cause}",
         None if top is None else top.severity),
    ]
