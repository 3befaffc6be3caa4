"""The guest detail screen: one guest per vCPU, disk and NIC, next to the host baseline.

Layer: views. Reads one `GuestRates` and `Snapshot.host` per frame.

The sparklines plot the snapshot's recent frames (`Snapshot.recent`, the window's
newest), so a screen opened late or in replay shows the minutes before at once;
nothing is remembered between frames.

Opening and closing the screen posts `GuestDetailScreen.Toggled` to the app, which
asks the feed to trace exits by reason for the guest on the topmost detail screen
(and for none once the last one closes); each frame's tracepoint source says
whether that tracing is on.

Names and reasons come from outside: every text here is shown through
`kvmtop.model.text.visible` (line by line where a text has several) and never as
markup; the tables escape their cells themselves (`KeyedTable`).
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Sparkline, Static

from kvmtop.model.formatting import DASH, fmt_bytes, fmt_mbps, fmt_ms, fmt_num, fmt_pct, fmt_si
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.rates.kvm import EXIT_SOURCE_TRACEPOINTS, TRACE_ATTACHED, TRACE_FDS, TRACE_SOURCE
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible
from kvmtop.views.compare import GuestGetter, SideBySide, guest_series
from kvmtop.views.guest_table import Cell, KeyedTable, TableColumn
from kvmtop.views.host_strip import ModeBadge

HISTORY = 120
"""Frames the sparklines show (the newest of `Snapshot.recent`)."""

VCPU_COLUMNS = (
    TableColumn("vcpu", "vCPU", 5),
    TableColumn("cpu", "CPU%", 7, right=True),
    TableColumn("steal", "Steal%", 7, right=True),
    TableColumn("exits", "Exits/s", 9, right=True),
    TableColumn("poll", "HaltPoll%", 10, right=True),
    TableColumn("wait", "HaltWait%", 10, right=True),
)
DISK_COLUMNS = (
    TableColumn("disk", "Disk", 6),
    TableColumn("path", "Path"),
    *(TableColumn(f"iops_{k}", f"IOPS {k}", 6, right=True) for k in "rwf"),
    *(TableColumn(f"mbs_{k}", f"MB/s {k}", 6, right=True) for k in "rw"),
    *(TableColumn(f"ms_{k}", f"ms {k}", 6, right=True) for k in "rwf"),
)
THREAD_COLUMNS = (
    TableColumn("kind", "Thread", 9),
    TableColumn("name", "Name", 16),
    TableColumn("tid", "TID", 8, right=True),
    TableColumn("cpu", "CPU%", 7, right=True),
    TableColumn("delay", "Run-queue delay%", 17, right=True),
)
NIC_COLUMNS = (
    TableColumn("nic", "NIC", 10),
    TableColumn("rx", "Mb/s rx", 8, right=True),
    TableColumn("tx", "Mb/s tx", 8, right=True),
    TableColumn("rxp", "pps rx", 8, right=True),
    TableColumn("txp", "pps tx", 8, right=True),
    TableColumn("rxd", "drops rx", 9, right=True),
    TableColumn("txd", "drops tx", 9, right=True),
)


def _num(text: str) -> Cell:
    return Cell(text, right=True)


def _mb(bytes_per_s: float | None) -> str:
    return fmt_num(None if bytes_per_s is None else bytes_per_s / 1e6, 1)


def _lines(lines: list[str]) -> str:
    """Lines of text as one, each made visible (so their own breaks stay breaks)."""
    return "\n".join(map(visible, lines))


def _busiest(rates: dict[str, float]) -> str:
    """ "name rate" pairs, busiest first, for the rates that moved."""
    ranked = sorted(((v, k) for k, v in rates.items() if v > 0), reverse=True)
    return "  ".join(f"{k} {fmt_si(v)}" for v, k in ranked) or "none moved"


def exits_text(g: GuestRates) -> str:
    """Exits per second: total and source, split by reason or category, halt polling."""
    if g.exits_per_s is None:
        return visible(f"exits/s {DASH}: {g.na.get('exits_per_s', 'unknown this interval')}")
    lines = [f"exits/s {fmt_si(g.exits_per_s)} (from {g.exit_source or DASH})"]
    traced = g.exit_source == EXIT_SOURCE_TRACEPOINTS
    if g.exits_by_reason is not None:
        lines.append(f"by {'reason' if traced else 'category'}: {_busiest(g.exits_by_reason)}")
    elif "exits_by_reason" in g.na:
        lines.append(f"by reason {DASH}: {g.na['exits_by_reason']}")
    if traced and g.exit_categories:
        lines.append(f"KVM categories: {_busiest(g.exit_categories)}")
    lines.append(
        f"halt polling {fmt_pct(g.halt_poll_cpu_pct)}% of a core"
        + (f": {g.halt_poll_hint}" if g.halt_poll_hint else "")
    )
    return _lines(lines)


def tracing_text(snapshot: Snapshot, g: GuestRates) -> str:
    """Whether a frame counts this guest's exits by reason (tracepoints), else why not."""
    if g.accel == "tcg":
        return "per-reason tracing n/a: TCG guest (no KVM exits)"
    status = next((s for s in snapshot.sources if s.name == TRACE_SOURCE), None)
    traced = status.detail.get(TRACE_ATTACHED, "").split(", ") if status else []
    if status is not None and g.uuid in traced:
        over = f" over {len(traced)} traced guests" if len(traced) > 1 else ""
        lines = [
            f"tracing exits by reason for this guest "
            f"({status.detail.get(TRACE_FDS, DASH)} counters{over})"
        ]
        if g.tracepoint_rates:
            lines.append(f"tracepoints/s: {_busiest(g.tracepoint_rates)}")
        return _lines(lines)
    failed = status is not None and not status.ok
    if snapshot.mode in ("replay", "follow"):
        why = (
            f": {status.reason}"
            if status is not None and failed
            else (" (a replay cannot trace; record with kvmtop record --trace GUEST)")
        )
        return visible(f"per-reason tracing not in this recording for this guest{why}")
    if status is None:
        return "per-reason tracing unavailable: no tracepoint source"
    if failed:
        return visible(f"per-reason tracing unavailable: {status.reason}")
    return "per-reason tracing starts with the next sample"


def memory_text(g: GuestRates) -> str:
    """Guest memory as the balloon reports it, with the stats' age."""
    text = (
        f"used {fmt_bytes(g.mem_used_bytes)} of {fmt_bytes(g.mem_total_bytes)}"
        f"  usable {fmt_bytes(g.mem_usable_bytes)}"
        f"  balloon {fmt_bytes(g.mem_current_bytes)} of max {fmt_bytes(g.mem_max_bytes)}"
        f"  QEMU RSS {fmt_bytes(g.mem_rss_bytes)}"
        f"  stats age {fmt_num(g.balloon_age_s, 0)}s"
    )
    reason = g.na.get("mem_used_bytes")
    return _lines([text, f"{DASH} {reason}"]) if reason else text


class GuestDetailScreen(Screen[None]):
    """Everything about one guest, updated live (Esc goes back)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    class Toggled(Message):
        """A detail screen opened or closed: tracing should follow the topmost one."""

    def __init__(self, uuid: str, name: str, snapshot: Snapshot | None = None) -> None:
        """Create the screen for the guest with this UUID.

        Args:
            uuid: the guest's UUID (the key it is looked up by in each snapshot).
            name: its name, shown until the first frame arrives.
            snapshot: the frame to show once mounted, if any.
        """
        super().__init__()
        self._initial = snapshot
        self.uuid = uuid
        self.guest_name = name

    def on_mount(self) -> None:
        """Show the snapshot the screen was opened with; ask for tracing."""
        if self._initial is not None:
            self.show(self._initial)
        self.app.post_message(self.Toggled())

    def on_unmount(self) -> None:
        """Tell the app that tracing this guest is no longer needed."""
        self.app.post_message(self.Toggled())

    def compose(self) -> ComposeResult:
        """Title and sparklines, then per-vCPU, baseline, exits, threads, disks, NICs, memory."""
        with Horizontal(id="detail-head"):
            yield ModeBadge(id="mode")
            # Names are not markup, and are shown visible.
            yield Static(visible(self.guest_name), id="detail-title", markup=False)
        with VerticalScroll():
            with Horizontal(id="sparks"):
                with Vertical():
                    yield Static("CPU%", id="cpu-label", classes="spark-label")
                    yield Sparkline([], id="cpu-spark")
                with Vertical():
                    yield Static("Steal%", id="steal-label", classes="spark-label")
                    yield Sparkline([], id="steal-spark")
            yield Static("Per vCPU", classes="heading")
            yield KeyedTable(VCPU_COLUMNS, id="vcpu-table", show_cursor=False)
            yield Static(
                "Guest against the host baseline (the row under the cursor is plotted)",
                classes="heading",
            )
            yield SideBySide(self.uuid, id="side-by-side")
            yield Static("VM exits", classes="heading")
            yield Static("", id="exits", markup=False)
            yield Static("", id="tracing", markup=False)
            yield Static("Helper threads (emulator, iothreads, vhost)", classes="heading")
            yield KeyedTable(THREAD_COLUMNS, id="thread-table", show_cursor=False)
            yield Static("Disks", classes="heading")
            yield KeyedTable(DISK_COLUMNS, id="disk-table", show_cursor=False)
            yield Static("Network interfaces", classes="heading")
            yield KeyedTable(NIC_COLUMNS, id="nic-table", show_cursor=False)
            yield Static("Memory", classes="heading")
            yield Static("", id="memory", markup=False)
        yield Footer()

    def _spark(
        self, which: str, label: str, snapshot: Snapshot, g: GuestRates, value: GuestGetter
    ) -> None:
        """Update one sparkline and its label from the snapshot's recent frames."""
        now = value(g)
        frames = snapshot.recent[-HISTORY:]
        if frames:
            known = [v for v in guest_series(g.uuid, frames, value) if v is not None]
        else:  # a producer that keeps no window
            known = [now] if now is not None else []
        self.query_one(f"#{which}-spark", Sparkline).data = known
        peak = fmt_pct(max(known)) if known else DASH
        self.query_one(f"#{which}-label", Static).update(
            f"{label} {fmt_pct(now)} (max {peak} over {len(known)} frames)"
        )

    def show(self, snapshot: Snapshot) -> None:
        """Show this guest as it is in a snapshot (or say it is gone)."""
        self.query_one(ModeBadge).show(snapshot)
        g = snapshot.guest(self.uuid)
        title = self.query_one("#detail-title", Static)
        if g is None:
            title.update(
                visible(f"{self.guest_name}: not in the latest frame (stopped or undefined)")
            )
            return
        title.update(
            _lines(
                [
                    f"{g.name}  {g.state}  {fmt_num(g.vcpus, 0)} vCPU  accel {g.accel or DASH}"
                    f"  pid {g.pid if g.pid is not None else DASH}"
                    f"  steal from {g.steal_source or DASH}",
                    f"uuid {g.uuid}",
                    # A guest that did not answer: every figure below is blank, and this is why.
                    *([g.not_responding] if g.not_responding is not None else []),
                ]
            )
        )
        self._spark("cpu", "CPU%", snapshot, g, lambda x: x.cpu_pct)
        self._spark("steal", "Steal%", snapshot, g, lambda x: x.steal_pct)
        self.query_one("#vcpu-table", KeyedTable).sync(
            (
                str(v.index),
                (
                    Cell(str(v.index)),
                    _num(fmt_pct(v.cpu_pct)),
                    _num(fmt_pct(v.steal_pct)),
                    _num(fmt_si(v.exits_per_s)),
                    _num(fmt_pct(v.halt_poll_pct)),
                    _num(fmt_pct(v.halt_wait_pct)),
                ),
            )
            for v in g.vcpu
        )
        self.query_one(SideBySide).show(snapshot, g)
        self.query_one("#exits", Static).update(exits_text(g))
        self.query_one("#tracing", Static).update(tracing_text(snapshot, g))
        self.query_one("#thread-table", KeyedTable).sync(
            (
                str(t.tid),
                (
                    Cell(t.kind),
                    Cell(t.name),
                    _num(str(t.tid)),
                    _num(fmt_pct(t.cpu_pct)),
                    _num(fmt_pct(t.delay_pct)),
                ),
            )
            for t in g.threads
        )
        self.query_one("#disk-table", KeyedTable).sync(
            (
                d.target,
                (
                    Cell(d.target),
                    Cell(d.path or DASH),
                    *(_num(fmt_si(v)) for v in (d.read_iops, d.write_iops, d.flush_iops)),
                    *(_num(_mb(v)) for v in (d.read_bytes_per_s, d.write_bytes_per_s)),
                    *(_num(fmt_ms(v)) for v in (d.read_ms, d.write_ms, d.flush_ms)),
                ),
            )
            for d in g.disks
        )
        self.query_one("#nic-table", KeyedTable).sync(
            (
                n.name,
                (
                    Cell(n.name),
                    *(_num(fmt_mbps(v)) for v in (n.rx_bps, n.tx_bps)),
                    *(_num(fmt_si(v)) for v in (n.rx_pps, n.tx_pps)),
                    *(_num(fmt_si(v)) for v in (n.rx_drops_per_s, n.tx_drops_per_s)),
                ),
            )
            for n in g.nics
        )
        self.query_one("#memory", Static).update(memory_text(g))
