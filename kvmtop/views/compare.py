"""Guest against host, side by side: one row per metric, and a plot of the row.

Layer: views. Reads one `Snapshot` per frame: the guest, the host baseline, and the
window's recent frames (`Snapshot.recent`) for the plot.

Each row pairs a guest figure with the host figure it is judged against:
- like for like (the same quantity on both sides: steal against the host's mean
  run-queue delay, a guest disk's latency against the host device under its image,
  drops, major faults): the last column is guest ÷ host, coloured by how far apart;
- RTT to the guest against RTT to the host's own address on the same bridge: the
  difference in ms (the guest and its vNIC path), coloured by its size;
- shares (CPU, exits, memory, throughput against the vNIC's uplink): the guest's
  part of the host figure, not coloured (a big share is not a fault).

The colours are a reading aid, not findings (the detectors judge with their own
thresholds and hysteresis). Row labels and baselines name disks, vNICs, bridges and
uplinks: the table escapes its cells (`KeyedTable`), the plot's title and legend go
through `kvmtop.model.text.visible` and are not markup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from kvmtop.model.formatting import DASH, fmt_bytes, fmt_mbps, fmt_ms, fmt_pct, fmt_si
from kvmtop.model.rates.frame import Frame
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.rates.host import HostNetRates, HostRates
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible
from kvmtop.views.guest_table import Cell, KeyedTable, TableColumn
from kvmtop.views.plot import DuoPlot

RATIO_WARN = 2.0
"""Like-for-like rows: guest ÷ host at or above this is a warning colour..."""
RATIO_CRIT = 10.0
"""... and at or above this critical; at or below 1 / RATIO_WARN it is info."""
RTT_WARN_MS = 1.0
"""RTT rows: the guest this many ms slower than its bridge is a warning colour..."""
RTT_CRIT_MS = 10.0
"""... and this many ms critical."""

METRIC_WIDTH = 15 + len(" drops/s")
"""The longest row label: an interface name (at most 15 characters: IFNAMSIZ 16 with
its NUL, include/uapi/linux/if.h) and the longest NIC metric after it."""

COLUMNS = (
    TableColumn("metric", "Metric", METRIC_WIDTH),
    TableColumn("guest", "Guest", 13, right=True),
    TableColumn("host", "Host baseline", 44),
    TableColumn("versus", "Guest vs host", 14, right=True),
)

LIKE, RTT, SHARE = "like", "rtt", "share"

GuestGetter = Callable[[GuestRates], float | None]
HostGetter = Callable[[HostRates, Sequence[GuestRates]], float | None]


@dataclass(frozen=True, slots=True)
class Versus:
    """One side-by-side row.

    Attributes:
        key: row key (stable across frames: the metric, disk target or vNIC name).
        label: the metric.
        guest: the guest figure from a guest's rates.
        host: the baseline from the host rates (and all guests, for host totals).
        fmt: formats both figures.
        baseline: what the host figure is (a device, an uplink, a bridge).
        kind: LIKE (ratio), RTT (difference in ms) or SHARE (guest % of host).
    """

    key: str
    label: str
    guest: GuestGetter
    host: HostGetter
    fmt: Callable[[float | None], str]
    baseline: str
    kind: str


def _known_sum(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _uplinks(h: HostRates, bridge: str | None) -> list[HostNetRates]:
    names = h.switch_uplinks.get(bridge, ()) if bridge else ()
    return [n for n in (h.net(name) for name in names) if n is not None]


def _host_cpu(h: HostRates, _guests: Sequence[GuestRates]) -> float | None:
    # Host busy is % of all CPUs, a guest's CPU % is of one CPU: same unit once
    # multiplied by the CPU count.
    return None if h.cpu_busy_pct is None or not h.ncpu else h.cpu_busy_pct * h.ncpu


def _all_exits(_h: HostRates, guests: Sequence[GuestRates]) -> float | None:
    return _known_sum([g.exits_per_s for g in guests])


def _disk_rows(g: GuestRates) -> list[Versus]:
    rows = []
    for d in g.disks:
        target, dev = d.target, d.host_dev
        where = f"{dev}, the host disk under it" if dev else "no host device (network storage?)"
        for kind, what in (("read", "read"), ("write", "write")):
            attr = f"{kind}_ms"

            def guest(r: GuestRates, t: str = target, a: str = attr) -> float | None:
                disk = next((x for x in r.disks if x.target == t), None)
                return None if disk is None else getattr(disk, a)

            def host(
                h: HostRates, _g: Sequence[GuestRates], n: str | None = dev, a: str = attr
            ) -> float | None:
                device = h.disk(n)
                return None if device is None else getattr(device, a)

            rows.append(
                Versus(
                    f"disk:{target}:{kind}",
                    f"{target} {what} ms/req",
                    guest,
                    host,
                    fmt_ms,
                    where,
                    LIKE,
                )
            )
    return rows


def _nic_rows(g: GuestRates, h: HostRates) -> list[Versus]:
    rows = []
    for n in g.nics:
        name, bridge = n.name, n.bridge
        ups = ", ".join(h.switch_uplinks.get(bridge, ())) if bridge else ""
        uplink = f"uplink {ups} of {bridge}" if ups else f"{bridge or 'no bridge'}: no uplink"

        def nic_value(attr: str, nic: str = name) -> GuestGetter:
            def get(r: GuestRates) -> float | None:
                found = next((x for x in r.nics if x.name == nic), None)
                return None if found is None else getattr(found, attr)

            return get

        def uplink_sum(attrs: tuple[str, ...], br: str | None = bridge) -> HostGetter:
            def get(hr: HostRates, _g: Sequence[GuestRates]) -> float | None:
                return _known_sum([getattr(u, a) for u in _uplinks(hr, br) for a in attrs])

            return get

        def drops(r: GuestRates, nic: str = name) -> float | None:
            found = next((x for x in r.nics if x.name == nic), None)
            return (
                None if found is None else _known_sum([found.rx_drops_per_s, found.tx_drops_per_s])
            )

        def bridge_rtt(
            hr: HostRates, guests: Sequence[GuestRates], gid: str = g.uuid, nic: str = name
        ) -> float | None:
            me = next((x for x in guests if x.uuid == gid), None)
            found = next((x for x in me.nics if x.name == nic), None) if me else None
            return None if found is None else found.host_rtt_ms

        rows += [
            Versus(
                f"nic:{name}:rx",
                f"{name} rx Mb/s",
                nic_value("rx_bps"),
                uplink_sum(("rx_bps",)),
                fmt_mbps,
                uplink,
                SHARE,
            ),
            Versus(
                f"nic:{name}:tx",
                f"{name} tx Mb/s",
                nic_value("tx_bps"),
                uplink_sum(("tx_bps",)),
                fmt_mbps,
                uplink,
                SHARE,
            ),
            Versus(
                f"nic:{name}:drops",
                f"{name} drops/s",
                drops,
                uplink_sum(("rx_drops_per_s", "tx_drops_per_s")),
                fmt_si,
                uplink,
                LIKE,
            ),
            Versus(
                f"nic:{name}:rtt",
                f"{name} RTT ms",
                nic_value("rtt_ms"),
                bridge_rtt,
                fmt_ms,
                f"host's own address on {bridge or DASH}",
                RTT,
            ),
        ]
    return rows


def versus_specs(g: GuestRates, h: HostRates) -> list[Versus]:
    """The rows for this guest: CPU, steal, exits, each disk, each vNIC, memory, faults."""
    return [
        Versus(
            "cpu",
            "CPU % (of one CPU)",
            lambda r: r.cpu_pct,
            _host_cpu,
            fmt_pct,
            f"all {h.ncpu} CPUs busy",
            SHARE,
        ),
        Versus(
            "steal",
            "Steal %",
            lambda r: r.steal_pct,
            lambda hr, _g: hr.run_delay_pct,
            fmt_pct,
            "host run-queue delay",
            LIKE,
        ),
        Versus(
            "exits", "Exits/s", lambda r: r.exits_per_s, _all_exits, fmt_si, "all guests", SHARE
        ),
        *_disk_rows(g),
        *_nic_rows(g, h),
        Versus(
            "mem",
            "Memory used",
            lambda r: r.mem_used_bytes,
            lambda hr, _g: hr.mem_used_bytes,
            fmt_bytes,
            "host used",
            SHARE,
        ),
        Versus(
            "majflt",
            "Major faults/s",
            lambda r: r.major_faults_per_s,
            lambda hr, _g: hr.major_faults_per_s,
            fmt_si,
            "host major faults",
            LIKE,
        ),
    ]


def compare(kind: str, guest: float | None, host: float | None) -> Cell:
    """The last column: ratio, difference or share, with its colour level."""
    if guest is None or host is None:
        return Cell(DASH, "dim", right=True)
    if kind == RTT:
        diff = guest - host
        level = "critical" if diff >= RTT_CRIT_MS else "warning" if diff >= RTT_WARN_MS else "ok"
        return Cell(f"{diff:+.2f} ms", level, right=True)
    if kind == SHARE:
        if host <= 0:
            return Cell(DASH, "dim", right=True)
        if guest > host:
            # Not a share: the traffic does not all cross the baseline (guests talking
            # on the bridge), or the uplink's qdisc dropped the rest. A percentage in
            # the tens of thousands says neither.
            return Cell("more than host", "info", right=True)
        return Cell(f"{100.0 * guest / host:.0f}% of host", right=True)
    if host == 0:
        return (
            Cell("both 0", "ok", right=True)
            if guest == 0
            else Cell("host 0", "warning", right=True)
        )
    ratio = guest / host
    level = (
        "critical"
        if ratio >= RATIO_CRIT
        else "warning"
        if ratio >= RATIO_WARN
        else "info"
        if ratio <= 1.0 / RATIO_WARN
        else "ok"
    )
    return Cell(f"{ratio:.2f}×", level, right=True)


def versus_row(v: Versus, g: GuestRates, snapshot: Snapshot) -> tuple[Cell, ...]:
    """The cells of one row for this frame."""
    guest = v.guest(g)
    host = v.host(snapshot.host, snapshot.guests)
    return (
        Cell(v.label),
        Cell(v.fmt(guest), right=True),
        Cell(f"{v.fmt(host)}  {v.baseline}"),
        compare(v.kind, guest, host),
    )


def guest_series(uuid: str, frames: Sequence[Frame], value: GuestGetter) -> list[float | None]:
    """`value` of guest `uuid` over the frames, oldest first (None where absent)."""
    out: list[float | None] = []
    index = 0
    for f in frames:
        # Guests keep their collection order from frame to frame: try the last index.
        if not (index < len(f.guests) and f.guests[index].uuid == uuid):
            index = next((i for i, x in enumerate(f.guests) if x.uuid == uuid), -1)
        out.append(value(f.guests[index]) if index >= 0 else None)
        index = max(index, 0)
    return out


def series(
    v: Versus, uuid: str, frames: Sequence[Frame]
) -> tuple[list[float | None], list[float | None]]:
    """(guest, host) values of a row over the frames, oldest first."""
    return guest_series(uuid, frames, v.guest), [v.host(f.host, f.guests) for f in frames]


def span_text(frames: Sequence[Frame]) -> str:
    """ "last 4 min 58 s (150 frames)": the time the plot covers."""
    if len(frames) < 2:
        return f"{len(frames)} frame{'s' if len(frames) != 1 else ''} so far"
    span = round(frames[-1].wall_s - frames[0].wall_s)
    return f"last {span // 60} min {span % 60:02d} s ({len(frames)} frames)"


class SideBySide(Vertical):
    """The side-by-side table; the row under the cursor is plotted below it."""

    DEFAULT_CSS = """
    SideBySide { height: auto; }
    SideBySide > #versus-table { height: auto; max-height: 24; }
    SideBySide > #plot-title { color: $foreground; padding: 0 1; }
    SideBySide > #plot-legend { padding: 0 1; }
    SideBySide > DuoPlot { height: 6; margin: 0 1; }
    """

    def __init__(self, uuid: str, *, id: str | None = None) -> None:  # noqa: A002
        """Create the section for the guest with this UUID."""
        super().__init__(id=id)
        self.uuid = uuid
        self.specs: dict[str, Versus] = {}
        self._snapshot: Snapshot | None = None
        self._plotted: tuple[str, int] | None = None

    def compose(self) -> ComposeResult:
        """The table, the plot's title and legend, the plot."""
        yield KeyedTable(COLUMNS, id="versus-table")
        yield Static("", id="plot-title", markup=False)
        yield Static("", id="plot-legend")
        yield DuoPlot(id="versus-plot")

    def show(self, snapshot: Snapshot, g: GuestRates) -> None:
        """Show this frame: every row, and the plot of the row under the cursor."""
        self._snapshot = snapshot
        specs = versus_specs(g, snapshot.host)
        self.specs = {v.key: v for v in specs}
        self.query_one(KeyedTable).sync((v.key, versus_row(v, g, snapshot)) for v in specs)
        self._replot()

    @property
    def selected(self) -> Versus | None:
        """The row under the cursor (the first row before any move)."""
        key = self.query_one(KeyedTable).cursor_key
        return self.specs.get(key) if key is not None else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Plot the row the cursor moved to."""
        event.stop()
        self._replot()

    def _replot(self) -> None:
        v, snap = self.selected, self._snapshot
        if v is None or snap is None or self._plotted == (v.key, snap.seq):
            return
        self._plotted = (v.key, snap.seq)
        guest, host = series(v, self.uuid, snap.recent)
        self.query_one("#plot-title", Static).update(
            visible(f"{v.label}: {span_text(snap.recent)}")
        )
        plot = self.query_one(DuoPlot)
        legend = self.query_one("#plot-legend", Static)
        legend.update(
            Text.assemble(
                ("⣿ guest", plot.get_component_rich_style("duo-plot--guest", partial=True)),
                "  ",
                (
                    visible(f"⣿ host: {v.baseline}"),
                    plot.get_component_rich_style("duo-plot--host", partial=True),
                ),
            )
        )
        plot.plot(guest, host, lambda top: v.fmt(top))
