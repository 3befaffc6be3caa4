"""The host strip: the baseline every guest figure is judged against, and the mode.

Layer: views. Reads `Snapshot.host` / `Snapshot.summary` only.

Three lines, by resource (a fourth gives the reason for any figure the host cannot
provide): CPU with run-queue delay, PSI, vCPU:pCPU and exits; memory with
overcommit, guests and kvmtop's own cost; I/O with the busiest disk and uplink and
softnet drops. Unknown values print as "–". Device names, reasons and the title
come from outside: each value is shown through `kvmtop.model.text.visible`, as
`Content` (never markup).
"""

from __future__ import annotations

import time
from typing import Any, cast

from textual.app import ComposeResult
from textual.content import Content
from textual.css.styles import RulesMap
from textual.reactive import reactive
from textual.visual import Visual
from textual.widget import Widget
from textual.widgets import Static

from kvmtop.model.formatting import DASH, fmt_bytes, fmt_mbps, fmt_ms, fmt_num, fmt_pct, fmt_si
from kvmtop.model.rates.host import HostDiskRates, HostNetRates, HostRates
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible

LABEL = "$kvm-dim"
"""Style of labels: values stand out, labels recede."""

SEP = (" │ ", LABEL)

NA_LABELS = {"run_delay_pct": "run-queue delay", "psi": "PSI"}
"""Readable names of `HostRates.na` keys (others print as they are)."""


def busiest_disk(host: HostRates) -> HostDiskRates | None:
    """The host block device with the highest utilisation this interval."""
    known = [d for d in host.disks if d.util_pct is not None]
    return max(known, key=lambda d: d.util_pct or 0.0) if known else None


def busiest_uplink(host: HostRates) -> HostNetRates | None:
    """The physical NIC with the highest utilisation (taps and bridges have no capacity)."""
    known = [n for n in host.nets if n.kind == "physical" and n.util_pct is not None]
    return max(known, key=lambda n: n.util_pct or 0.0) if known else None


def disk_latency_ms(d: HostDiskRates) -> float | None:
    """The worse of a host device's read and write latency."""
    known = [v for v in (d.read_ms, d.write_ms) if v is not None]
    return max(known) if known else None


def labelled(label: str, text: str) -> Content:
    """A detail line under a table: a dim label, then text from outside made visible."""
    return Content.assemble((f"{label:<9}", LABEL), visible(text))


def clock(wall_s: float) -> str:
    """Local time of day of a wall-clock stamp."""
    return time.strftime("%H:%M:%S", time.localtime(wall_s))


def _pct(v: float | None) -> str:
    return DASH if v is None else f"{fmt_pct(v)}%"


def _ratio(v: float | None) -> str:
    return DASH if v is None else f"{fmt_num(v, 2)}×"


def _line(*fields: tuple[str, str]) -> Content:
    """(label, value) fields joined by separators; a narrow screen wraps only between them.
    Each value is made visible (it may hold a device name)."""
    pieces: list[str | tuple[str, str]] = []
    for label, value in fields:
        if pieces:
            pieces.append(SEP)
        pieces += [
            (f"{label}\N{NO-BREAK SPACE}".replace(" ", "\N{NO-BREAK SPACE}"), LABEL),
            visible(value).replace(" ", "\N{NO-BREAK SPACE}"),
        ]
    return Content.assemble(*pieces)


def host_lines(snapshot: Snapshot) -> list[Content]:
    """The strip's text: CPU, memory and I/O lines, plus the reasons for n/a figures."""
    h, s = snapshot.host, snapshot.summary
    psi = "psi" in h.na
    disk = busiest_disk(h)
    uplink = busiest_uplink(h)
    lines = [
        _line(
            (
                "CPU",
                f"{_pct(h.cpu_busy_pct)} busy {_pct(h.cpu_steal_pct)} steal "
                f"{_pct(h.cpu_iowait_pct)} iowait",
            ),
            ("runq delay", "n/a" if "run_delay_pct" in h.na else _pct(h.run_delay_pct)),
            ("PSI cpu", "n/a" if psi else _pct(h.psi_cpu_some_pct)),
            ("exits/s", fmt_si(s.exits_per_s)),
            (
                "kvmtop",
                f"{_pct(h.self_cpu_pct)} {fmt_bytes(h.self_rss_bytes)} "
                f"collect {fmt_ms(snapshot.collect_ms)} ms",
            ),
        ),
        _line(
            ("mem", f"{fmt_bytes(h.mem_used_bytes)}/{fmt_bytes(h.mem_total_bytes)}"),
            ("PSI mem", "n/a" if psi else _pct(h.psi_mem_some_pct)),
            ("overcommit", _ratio(s.mem_overcommit_ratio)),
            ("vCPU:pCPU", _ratio(s.vcpu_pcpu_ratio)),
            ("guests", f"{s.guests_running}/{s.guests_total} running"),
        ),
        _line(
            (
                "disk",
                DASH
                if disk is None
                else f"{disk.name} {fmt_ms(disk_latency_ms(disk))} ms {_pct(disk.util_pct)}",
            ),
            ("PSI io", "n/a" if psi else _pct(h.psi_io_some_pct)),
            (
                "uplink",
                DASH
                if uplink is None
                else f"{uplink.name} {_pct(uplink.util_pct)} "
                f"{fmt_mbps(uplink.rx_bps)}/{fmt_mbps(uplink.tx_bps)} Mb/s",
            ),
            ("softnet drops/s", fmt_si(h.softnet_drops_per_s)),
        ),
    ]
    if h.na:
        lines.append(
            Content.assemble(
                ("n/a: ", LABEL),
                visible(
                    "; ".join(
                        f"{NA_LABELS.get(k, k)}: {reason}" for k, reason in sorted(h.na.items())
                    )
                ),
            )
        )
    return lines


def badge_lines(snapshot: Snapshot) -> list[str]:
    """The mode badge: mode, time of the frame, then its date (away from live) or the
    interval, and REC while recording (the path is on the strip's last line)."""
    stamp = time.localtime(snapshot.wall_s)
    third = (
        f"every {snapshot.interval_s:g}s"
        if snapshot.mode == "live"
        else (time.strftime("%Y-%m-%d", stamp))
    )
    lines = [snapshot.mode.upper(), f"@ {time.strftime('%H:%M:%S', stamp)}", third]
    if snapshot.recording:
        lines.append("● REC")
    return lines


class SteadyStatic(Static):
    """A Static updated every frame that lays the screen out again only when its new
    content could take another size.

    `Static.update` relayouts the whole screen by default; a figure that changes but
    keeps its shape (the same height at the width it has, and, when its width is
    `auto`, the same optimal width) only needs a repaint.
    """

    def show_content(self, content: Content) -> None:
        """Show `content`, with a layout pass only if its size may differ."""
        self.update(content, layout=not self._same_shape(self.visual, content))

    def _same_shape(self, before: Visual, after: Content) -> bool:
        """Whether `after` takes the size `before` has (False before the first layout)."""
        width = self.content_size.width
        if not width or not isinstance(before, Content):
            return False
        # The styles as the rules a visual reads, as Widget.get_content_height passes them.
        rules = cast(RulesMap, self.styles)
        widest = [c.get_optimal_width(rules, width) for c in (before, after)]
        if (self.styles.width is None or self.styles.width.is_auto) and (widest[0] != widest[1]):
            return False
        if max(widest) <= width:  # nothing wraps: a line is a line
            return before.plain.count("\n") == after.plain.count("\n")
        return before.get_height(rules, width) == after.get_height(rules, width)


class ModeBadge(SteadyStatic):
    """LIVE / PAUSED / REPLAY / FOLLOW @ time, and REC with the recording path.

    FOLLOW (a recording still being written) wears the REPLAY colour.
    """

    def show(self, snapshot: Snapshot) -> None:
        """Show the mode of a snapshot."""
        mode = "replay" if snapshot.mode == "follow" else snapshot.mode
        self.set_classes(f"-{mode}" + (" -rec" if snapshot.recording else ""))
        self.show_content(Content("\n".join(badge_lines(snapshot))))


class HostStrip(Widget):
    """The host baseline strip with the mode badge at its left.

    A last line, when there is something to say, gives the title (e.g. the recording
    replayed), the file being recorded to, and `note`.
    """

    note = reactive("")
    """A line about the app's own state (e.g. the end of a recording); empty for none."""

    snapshot: Snapshot | None = None
    """The snapshot shown."""

    def __init__(self, title: str = "", **kwargs: Any) -> None:
        """Create the strip.

        Args:
            title: shown before the host figures (e.g. which recording is replayed).
            **kwargs: passed to `Widget`.
        """
        super().__init__(**kwargs)
        self.title = title

    def compose(self) -> ComposeResult:
        """The badge and the figures."""
        yield ModeBadge("waiting", id="mode")
        yield SteadyStatic(
            Content(visible(self.title) or "waiting for the first sample…"), id="host-figures"
        )

    def watch_note(self) -> None:
        """Show a new note at once, without waiting for the next frame."""
        if self.snapshot is not None:
            self.show(self.snapshot)

    def show(self, snapshot: Snapshot) -> None:
        """Show a snapshot's host baseline and mode."""
        self.snapshot = snapshot
        self.query_one(ModeBadge).show(snapshot)
        lines = host_lines(snapshot)
        status = [(self.title, "bold")] if self.title else []
        if snapshot.recording:
            status.append((f"recording to {snapshot.recording}", "$kvm-crit"))
        if self.note:
            status.append((self.note, "$kvm-warn"))
        if status:  # the title and the path may name anything: made visible
            pieces: list[tuple[str, str]] = []
            for text, style in status:
                part = (visible(text), style)
                pieces += [SEP, part] if pieces else [part]
            lines.append(Content.assemble(*pieces))
        self.query_one("#host-figures", SteadyStatic).show_content(Content("\n").join(lines))
