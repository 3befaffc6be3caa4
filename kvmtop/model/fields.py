"""The guest field catalogue: every per-guest figure kvmtop shows, written once.

Layer: model (pure; no textual, no rich). Numbers are written by
`kvmtop.model.formatting`, units named by `kvmtop.model.units`.

One `Field` per figure, in `FIELDS`, says everything its consumers need: key, header,
unit, help, getter, formatter, and where it is shown. Everything else is derived:

- the guest table's columns (`GUEST_COLUMNS`: the fields with a `width`), their help
  screen, sort keys and sources view, and the `--batch` text table;
- the batch / JSON lines guest object (`kvmtop.model.as_json.guest_json`: the fields
  with a `json` name, in catalogue order, then the per-device lists);
- the CSV export's header and rows (`kvmtop.headless.export`: `time`, `uuid`, then the
  columns' keys and raw values);
- the report's guest metrics (`kvmtop.report.metrics.GUEST_METRICS`: the fields with
  a `report` judgement).

Adding a figure is adding a `Field` here (and its attribute to `GuestRates` when it
is a new fact rather than a new view of one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

from kvmtop.model.formatting import DASH, fmt_bytes, fmt_mbps, fmt_ms, fmt_num, fmt_pct, fmt_si
from kvmtop.model.rates.counters import known_max
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.text import visible
from kvmtop.model.units import (
    UNIT_BITS_PER_S,
    UNIT_BYTES,
    UNIT_BYTES_PER_S,
    UNIT_COUNT,
    UNIT_MS,
    UNIT_PCT,
    UNIT_PER_S,
    UNIT_S,
    UNIT_TEXT,
)

Value = float | str | None
"""A figure: a number (None when unknown) or a text."""

DEVICE_MS = "device_ms"
"""Report baseline: the latency of the block devices backing the guest's disks."""
DEVICE_IOPS = "device_iops"
"""Report baseline: the IOPS of the block devices backing the guest's disks."""
UPLINK = "uplink_mbps"
"""Report baseline: the uplinks of the switches the guest's vNICs are plugged into."""
PCT_MIN_TOP = 1.0
"""Report plots in percent reach at least 1 %: 0.001 % of steal is a flat line."""


@dataclass(frozen=True, slots=True)
class Judged:
    """How the report gathers, ranks, plots and judges a field.

    Attributes:
        baseline: the host figure it is judged against: a report `HOST_METRICS` key,
            `DEVICE_MS` / `DEVICE_IOPS` or `UPLINK`.
        detectors: findings about this figure (shaded on its plot).
        offender: title of its top-offender table, None for none.
        rank: what ranks the offenders: "max", "total" (time integral) or "slope".
        plot: drawn in the HTML report.
        min_top: the plot's y axis reaches at least this (near-zero noise stays flat).
    """

    baseline: str
    detectors: tuple[str, ...] = ()
    offender: str | None = None
    rank: str = "max"
    plot: bool = False
    min_top: float = 0.0


def _text(v: float | None) -> str:
    """Formatter of text fields; only reached for unknown values."""
    return DASH if v is None else str(v)


def _count(v: float | None) -> str:
    """A whole number (vCPUs)."""
    return fmt_num(v, 0)


@dataclass(frozen=True, slots=True)
class Field:
    """One per-guest figure.

    Attributes:
        key: the catalogue key: table column key, CSV header, report metric key
            (and JSON key of the report's metrics).
        header: the column header; the report's label.
        unit: one of `kvmtop.model.units.UNIT_*`.
        help: what it means (help screen, command palette, report).
        value: the figure from a guest's rates: the number the table sorts by (None
            sorts last and is unknown), or a text.
        fmt: its text in the table, `--batch` text and report.
        width: its table column's width; 0 for a field not shown in the table.
        na_key: the `GuestRates.na` entry that explains a blank cell.
        text: a text column: left-aligned, sorted ascending.
        json: its name in the batch JSON guest object; None for none.
        json_value: what JSON writes when it differs from `value` (a raw state, a map).
        digits: decimals JSON rounds a number to; None writes it as it is.
        report: how the report judges it; None when the report leaves it out.
    """

    key: str
    header: str
    unit: str
    help: str
    value: Callable[[GuestRates], Value]
    fmt: Callable[[float | None], str] = _text
    width: int = 0
    na_key: str | None = None
    text: bool = False
    json: str | None = None
    json_value: Callable[[GuestRates], object] | None = None
    digits: int | None = 3
    report: Judged | None = None


NO_ANSWER = "no answer"
"""The State cell of a guest that did not answer within the tick (`not_responding`)."""


def _state_text(g: GuestRates) -> str:
    """The State cell: libvirt's state, "unmanaged", or `NO_ANSWER`."""
    if g.not_responding is not None:
        return NO_ANSWER
    return g.state if g.managed == "libvirt" else "unmanaged"


def _dominant_exit(g: GuestRates) -> str | None:
    """The Top exit cell: the reason or category with the highest rate."""
    return g.dominant_exit


def _net_bps(g: GuestRates) -> float | None:
    """RX + TX bits per second (None when both are unknown; inline: a table cell)."""
    rx, tx = g.net_rx_bps, g.net_tx_bps
    if rx is None and tx is None:
        return None
    return (rx or 0.0) + (tx or 0.0)


def _disk_ms(g: GuestRates) -> float | None:
    """The worse of mean read and write latency."""
    return known_max((g.disk_read_ms, g.disk_write_ms))


def _no_figure(_g: GuestRates) -> None:
    """The `value` of a field that is a map rather than one figure (JSON only)."""
    return None


def _exit_categories(g: GuestRates) -> dict[str, float]:
    """Exits per second by KVM category, as JSON writes them (3 decimals)."""
    return {k: round(v, 3) for k, v in g.exit_categories.items()}


def _exits_by_reason(g: GuestRates) -> dict[str, float] | None:
    """Exits per second by reason, as JSON writes them (None: no source splits them)."""
    rates = g.exits_by_reason
    return None if rates is None else {k: round(v, 3) for k, v in rates.items()}


def _get(name: str) -> Callable[[GuestRates], Value]:
    """The getter of a `GuestRates` attribute (a C-level attrgetter: no Python frame)."""
    getter: Callable[[GuestRates], Value] = attrgetter(name)
    return getter


# fmt: off
# A catalogue read as rows: one Field per entry, as dense as its arguments allow.
FIELDS: tuple[Field, ...] = (
    Field("name", "Guest", UNIT_TEXT, "libvirt domain name", _get("name"), width=18,
          text=True, json="name", digits=None),
    Field("uuid", "UUID", UNIT_TEXT, "libvirt domain UUID: the stable key across renames",
          _get("uuid"), text=True, json="uuid", digits=None),
    Field("state", "State", UNIT_TEXT,
          "libvirt domain state; 'unmanaged' for a running KVM process that libvirt does "
          "not manage (plain QEMU, Firecracker, ...); 'no answer' for a guest whose QEMU "
          "did not answer within the tick (the sources view says since when)",
          _state_text, width=9, text=True, json="state", json_value=attrgetter("state"),
          digits=None),
    Field("not_responding_since", "No answer since", UNIT_S,
          "Unix time since which the guest has not answered within the tick",
          _get("not_responding_since_s"), json="not_responding_since", digits=None),
    Field("not_responding", "No answer", UNIT_TEXT,
          "why the guest's figures are unknown: it did not answer within the tick",
          _get("not_responding"), text=True, json="not_responding", digits=None),
    Field("managed", "Managed", UNIT_TEXT,
          "'libvirt', or 'unmanaged' for a KVM process found without libvirt",
          _get("managed"), text=True, json="managed", digits=None),
    Field("accel", "Accel", UNIT_TEXT, "the accelerator: 'kvm', or 'tcg' (QEMU emulation)",
          _get("accel"), text=True, json="accel", digits=None),
    Field("vcpus", "vCPU", UNIT_COUNT, "vCPUs online", _get("vcpus"), _count, width=4,
          json="vcpus", digits=None),
    Field("cpu_pct", "CPU%", UNIT_PCT,
          "Δ cpu.time / Δt (QEMU process incl. emulator/iothreads; 100 = one host CPU)",
          _get("cpu_pct"), fmt_pct, width=6, na_key="cpu_pct", json="cpu_pct",
          report=Judged("cpu_busy_pct", detectors=("host_pressure", "overcommit"),
                        plot=True, min_top=PCT_MIN_TOP)),
    Field("steal_pct", "Steal%", UNIT_PCT,
          "mean over vCPUs of Δ run-queue delay / Δt (what KVM reports to the guest as steal)",
          _get("steal_pct"), fmt_pct, width=6, na_key="steal_pct", json="steal_pct",
          report=Judged("psi_cpu_some_pct")),
    Field("steal_max_pct", "StMax%", UNIT_PCT, "the most starved vCPU's steal",
          _get("steal_max_pct"), fmt_pct, width=6, na_key="steal_pct", json="steal_max_pct",
          report=Judged("psi_cpu_some_pct", detectors=("steal",),
                        offender="Steal (worst vCPU, %)", plot=True, min_top=PCT_MIN_TOP)),
    Field("steal_source", "Steal source", UNIT_TEXT,
          "where steal was read: libvirt's vcpu.N.delay, else the vCPU thread's schedstat",
          _get("steal_source"), text=True, json="steal_source", digits=None),
    Field("exits_per_s", "Exits/s", UNIT_PER_S,
          "VM exits per second summed over vCPUs (KVM binary stats)",
          _get("exits_per_s"), fmt_si, width=8, na_key="exits_per_s", json="exits_per_s",
          report=Judged("exits_per_s", detectors=("exit_storm",), offender="VM exits/s",
                        plot=True)),
    Field("exit_top", "Top exit", UNIT_TEXT, "the exit category with the highest rate",
          _dominant_exit, width=10, na_key="exits_per_s", text=True),
    Field("exit_categories", "Exit categories", UNIT_PER_S,
          "exits per second by KVM exit category", _no_figure, json="exit_categories",
          json_value=_exit_categories, digits=None),
    Field("exits_by_reason", "Exits by reason", UNIT_PER_S,
          "exits per second by reason (tracepoints, else the categories split from the "
          "total); null when no source can split exits", _no_figure,
          na_key="exits_by_reason", json="exits_by_reason", json_value=_exits_by_reason,
          digits=None),
    Field("exit_source", "Exit source", UNIT_TEXT,
          "which source fed exits: libvirt-binary-stats, debugfs or tracepoints",
          _get("exit_source"), text=True, json="exit_source", digits=None),
    Field("halt_poll_cpu_pct", "Halt poll%", UNIT_PCT,
          "CPU burnt in host halt polling (success + fail ns per s), % of one core",
          _get("halt_poll_cpu_pct"), fmt_pct, json="halt_poll_cpu_pct"),
    Field("disk_iops", "IOPS", UNIT_PER_S, "read + write + flush requests per second, all disks",
          _get("disk_iops"), fmt_si, width=6, na_key="disk_iops", json="disk_iops",
          report=Judged(DEVICE_IOPS)),
    Field("disk_read_bytes_per_s", "Rd B/s", UNIT_BYTES_PER_S, "bytes read per second, all disks",
          _get("disk_read_bytes_per_s"), fmt_si, json="disk_read_bytes_per_s"),
    Field("disk_write_bytes_per_s", "Wr B/s", UNIT_BYTES_PER_S,
          "bytes written per second, all disks",
          _get("disk_write_bytes_per_s"), fmt_si, json="disk_write_bytes_per_s"),
    Field("disk_read_ms", "Rd ms", UNIT_MS,
          "mean read latency (Δ rd.times / Δ rd.reqs), shown with enough requests",
          _get("disk_read_ms"), fmt_ms, width=6, na_key="disk_read_ms", json="disk_read_ms"),
    Field("disk_write_ms", "Wr ms", UNIT_MS, "mean write latency (Δ wr.times / Δ wr.reqs)",
          _get("disk_write_ms"), fmt_ms, width=6, na_key="disk_write_ms", json="disk_write_ms"),
    Field("disk_flush_ms", "Fl ms", UNIT_MS, "mean flush latency (Δ fl.times / Δ fl.reqs)",
          _get("disk_flush_ms"), fmt_ms, json="disk_flush_ms"),
    Field("disk_ms", "Disk ms", UNIT_MS, "the worse of mean read and write latency per request",
          _disk_ms, fmt_ms,
          report=Judged(DEVICE_MS, detectors=("disk_latency",), offender="Disk latency (ms)",
                        plot=True)),
    Field("net_mbps", "Net Mb/s", UNIT_BITS_PER_S, "guest RX + TX in megabits per second",
          _net_bps, fmt_mbps, width=8, na_key="net_rx_bps", report=Judged(UPLINK)),
    Field("net_rx_bps", "RX b/s", UNIT_BITS_PER_S, "bits received per second, all vNICs",
          _get("net_rx_bps"), fmt_mbps, na_key="net_rx_bps", json="net_rx_bps"),
    Field("net_tx_bps", "TX b/s", UNIT_BITS_PER_S, "bits sent per second, all vNICs",
          _get("net_tx_bps"), fmt_mbps, na_key="net_rx_bps", json="net_tx_bps"),
    Field("net_rx_pps", "RX pk/s", UNIT_PER_S, "packets received per second, all vNICs",
          _get("net_rx_pps"), fmt_si, na_key="net_rx_bps", json="net_rx_pps"),
    Field("net_tx_pps", "TX pk/s", UNIT_PER_S, "packets sent per second, all vNICs",
          _get("net_tx_pps"), fmt_si, na_key="net_rx_bps", json="net_tx_pps"),
    Field("net_drops_per_s", "Drops/s", UNIT_PER_S,
          "RX + TX packet drops per second on the guest's vNICs",
          _get("net_drops_per_s"), fmt_si, width=7, na_key="net_rx_bps",
          json="net_drops_per_s",
          report=Judged("softnet_drops_per_s", detectors=("vnic_drops", "vswitch_saturation"),
                        offender="vNIC drops (packets)", rank="total", plot=True,
                        min_top=1.0)),
    Field("net_rtt_ms", "RTT ms", UNIT_MS,
          "the slowest vNIC's median round trip to the guest (opt-in net probe)",
          _get("net_rtt_ms"), fmt_ms, na_key="net_rtt_ms", json="net_rtt_ms"),
    Field("net_host_rtt_ms", "Host RTT ms", UNIT_MS,
          "the baseline of the RTT: the slowest round trip to the host's own address on "
          "the guest's bridges", _get("net_host_rtt_ms"), fmt_ms, json="net_host_rtt_ms"),
    Field("mem_used", "Mem used", UNIT_BYTES,
          "guest used memory = MemTotal − MemAvailable (balloon stats)",
          _get("mem_used_bytes"), fmt_bytes, width=8, na_key="mem_used_bytes",
          json="mem_used_bytes", digits=None,
          report=Judged("psi_mem_some_pct", detectors=("memory_leak", "qemu_memory_growth"),
                        offender="Memory growth (MiB/h)", rank="slope", plot=True)),
    Field("mem_total_bytes", "Mem total", UNIT_BYTES, "guest MemTotal (balloon available)",
          _get("mem_total_bytes"), fmt_bytes, json="mem_total_bytes", digits=None),
    Field("mem_max_bytes", "Mem max", UNIT_BYTES, "the guest's maximum memory (balloon maximum)",
          _get("mem_max_bytes"), fmt_bytes, json="mem_max_bytes", digits=None),
    Field("mem_rss_bytes", "Mem RSS", UNIT_BYTES, "resident memory of the QEMU process",
          _get("mem_rss_bytes"), fmt_bytes, json="mem_rss_bytes", digits=None),
    Field("swap_in_bytes_per_s", "Swap in B/s", UNIT_BYTES_PER_S,
          "the guest reading its own swap (balloon stats swap_in): it lacks memory inside",
          _get("swap_in_bytes_per_s"), fmt_si, json="swap_in_bytes_per_s",
          report=Judged("psi_mem_some_pct", offender="Guest swap-in (B/s)")),
    Field("swap_out_bytes_per_s", "Swap out B/s", UNIT_BYTES_PER_S,
          "the guest writing to its own swap (balloon stats swap_out)",
          _get("swap_out_bytes_per_s"), fmt_si, json="swap_out_bytes_per_s"),
    Field("major_faults_per_s", "Major faults/s", UNIT_PER_S,
          "page faults the guest served from disk (balloon stats major_fault)",
          _get("major_faults_per_s"), fmt_si, json="major_faults_per_s"),
    Field("balloon_age_s", "Balloon age", UNIT_S, "seconds since the guest refreshed its "
          "balloon stats", _get("balloon_age_s"), json="balloon_age_s", digits=1),
)
# fmt: on
"""Every per-guest figure, in the order the table and the JSON object show them."""

GUEST_COLUMNS: tuple[Field, ...] = tuple(f for f in FIELDS if f.width)
"""The guest table's columns, in display order (also `--batch` text and CSV)."""


def cell_text(col: Field, g: GuestRates) -> str:
    """The text of one guest-table cell, as shown (a name's control and bidi
    characters escaped: `kvmtop.model.text.visible`)."""
    v = col.value(g)
    if isinstance(v, str):
        return visible(v)
    return col.fmt(v)


def column(key: str) -> Field:
    """The guest-table column with this key (KeyError if unknown)."""
    for c in GUEST_COLUMNS:
        if c.key == key:
            return c
    raise KeyError(key)
