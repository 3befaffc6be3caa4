"""The incidents panel: the findings grouped by cause and ranked by time to harm
(docs/detectors.md#incidents), one row each, expandable to its findings, with the
evidence and advice of the row under the cursor.

Layer: views. Reads `Snapshot.incidents` (and `Snapshot.guests`, to open the guest of
a finding).

Info-level incidents that lose no packets (a leak check that cannot run, a guest
without balloon stats, advice on the host's set-up) are folded into one "notices" row
at the bottom: the ranking puts them last already, and on a host of many guests they
would fill the panel one per guest. Enter on that row lists them.

Titles, messages and names come from outside: the table draws every cell through
`kvmtop.model.text.visible` (`LineTable`), the detail lines pass through it too, and
nothing here is markup.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from textual.app import ComposeResult
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from kvmtop.model.formatting import DASH, fmt_si
from kvmtop.model.incident import Incident, Member
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible
from kvmtop.views.host_strip import SteadyStatic, clock, labelled
from kvmtop.views.line_table import Cell, LineTable, TableColumn
from kvmtop.views.timeline import SEVERITY_STYLES

TITLE_WIDTH = 400
"""Cells of the last column: wider than any terminal, cropped at the view's edge (the
full title is in the detail lines)."""

COLUMNS = (
    TableColumn("rank", "  #", 5),
    TableColumn("severity", " Severity", 9),
    TableColumn("since", " Since", 9),
    TableColumn("for", " For", 8),
    TableColumn("flapped", " Flapped", 8),
    TableColumn("findings", "Findings", 9, right=True),
    TableColumn("title", " Incident", TITLE_WIDTH),
)
"""Every column but the first starts with a one-cell gap (a right-aligned one has it
in its width)."""

NOTICES = "notices"
"""The key of the notices row (and of its expansion); an incident's row is keyed
`incident_key`, a finding's `member_key`."""

OPEN, SHUT = "▾", "▸"
"""The first cell of an expanded and of a folded row."""

NOTICE_TITLES = 10
"""Notices the notices row and its detail lines name (a host of many guests may have
one per guest: Enter lists them all)."""


def duration(seconds: float) -> str:
    """A short duration: 45s, 3m05s, 2h10m."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def figures(values: dict[str, float]) -> str:
    """Evidence as "name=value, ..." (SI-scaled values); a dash for none."""
    return ", ".join(f"{k}={fmt_si(v)}" for k, v in values.items()) or DASH


def is_notice(i: Incident) -> bool:
    """Whether an incident is folded into the notices row: info-level and losing no
    packets (so ranked in the last tier, `kvmtop.detectors.incidents.rank_key`)."""
    return i.severity == "info" and not i.dropping


def notice_titles(notices: list[Incident]) -> str:
    """The first `NOTICE_TITLES` notices' titles, and how many more."""
    more = len(notices) - NOTICE_TITLES
    return "; ".join(i.title for i in notices[:NOTICE_TITLES]) + (
        f"; {more} more" if more > 0 else ""
    )


def incident_key(incident_id: str) -> str:
    """The row key of an incident."""
    return f"i|{incident_id}"


def member_key(i: Incident, m: Member) -> str:
    """The row key of one finding of an incident (what identifies it in the tracker:
    detector, subject, guest)."""
    return f"m|{i.id}|{m.detector}|{m.subject}|{m.guest or ''}"


class Row(NamedTuple):
    """What one row shows: an incident (`member` None), one of its findings, or the
    notices row (both None)."""

    key: str
    incident: Incident | None = None
    member: Member | None = None


def layout(incidents: tuple[Incident, ...], expanded: set[str]) -> list[Row]:
    """The rows of ranked incidents: each incident, its findings under it when
    expanded, and the notices folded into one last row (listed when it is expanded)."""
    rows: list[Row] = []

    def add(i: Incident) -> None:
        rows.append(Row(incident_key(i.id), i))
        if i.id in expanded:
            rows.extend(Row(member_key(i, m), i, m) for m in i.members)

    notices = [i for i in incidents if is_notice(i)]
    for i in incidents:
        if not is_notice(i):
            add(i)
    if notices:
        rows.append(Row(NOTICES))
        if NOTICES in expanded:
            for i in notices:
                add(i)
    return rows


def incident_cells(i: Incident, expanded: bool) -> tuple[Cell, ...]:
    """An incident's row; a cleared one dimmed, and said so before its title (which
    the view may crop)."""
    plain = None if i.active else "dim"
    return (
        Cell(f"{OPEN if expanded else SHUT} {i.rank}", plain),
        Cell(f" {i.severity}", i.severity if i.active else "dim"),
        Cell(f" {clock(i.since_s)}", plain),
        Cell(f" {duration(i.duration_s)}", plain),
        Cell(f" {i.crossings}×" if i.crossings else "", plain),
        Cell(str(len(i.members)), plain, right=True),
        Cell((" " if i.active else " (cleared) ") + i.title, plain),
    )


def member_cells(i: Incident, m: Member) -> tuple[Cell, ...]:
    """One finding's row under its incident: severity, start, how long (or cleared),
    what it is about, detector and message; a cleared one dimmed."""
    plain = None if m.active else "dim"
    return (
        Cell("", plain),
        Cell(f" {m.severity}", m.severity if m.active else "dim"),
        Cell(f" {clock(m.since_s)}", plain),
        Cell(f" {duration(i.last_bad_s - m.since_s)}" if m.active else " cleared", plain),
        Cell("", plain),
        Cell("", plain),
        Cell(f"   └ {m.where} · {m.detector}: {m.message}", plain),
    )


def notices_cells(notices: list[Incident], expanded: bool) -> tuple[Cell, ...]:
    """The notices row: how many, since when, and their titles as far as they fit."""
    n = len(notices)
    return (
        Cell(OPEN if expanded else SHUT),
        Cell(" info", "info"),
        Cell(f" {clock(min(i.since_s for i in notices))}"),
        Cell(""),
        Cell(""),
        Cell(str(sum(len(i.members) for i in notices)), right=True),
        Cell(f" {n} notice{'s' if n > 1 else ''}: {notice_titles(notices)}"),
    )


def _headline(severity: str, text: str) -> Content:
    """A detail line's severity in its colour, then text from outside made visible."""
    return Content.assemble(
        (severity, f"bold {SEVERITY_STYLES.get(severity, '')}"), " ", visible(text)
    )


def detail(row: Row, notices: list[Incident]) -> Content:
    """What the panel says under the table about the row under the cursor: an
    incident's whole title and state, or one finding's message, then the evidence and
    the incident's advice; for the notices row, what they are."""
    i, m = row.incident, row.member
    if i is None:
        return Content("\n").join(
            [
                _headline(
                    "info",
                    f"{len(notices)} info-level incident(s): nothing suffers "
                    "from them now (Enter lists or folds them)",
                ),
                labelled("about", notice_titles(notices)),
            ]
        )
    if m is None:
        state = [f"flapped {i.crossings}×"] if i.crossings else []
        if not i.active:
            state.append(f"cleared at {clock(i.last_bad_s)}")
        head = _headline(i.severity, i.title + (f" ({', '.join(state)})" if state else ""))
        evidence = i.evidence
    else:
        head = _headline(
            m.severity,
            f"{m.where} · {m.detector}: {m.message}" + ("" if m.active else " (cleared)"),
        )
        evidence = m.evidence
    return Content("\n").join(
        [head, labelled("evidence", figures(evidence)), labelled("advice", i.advice)]
    )


class IncidentTable(LineTable):
    """The incidents of a snapshot, ranked, each expandable to its findings (Enter);
    the notices folded into one row. Enter on a finding of a guest opens that guest
    (`GuestChosen`)."""

    class Moved(Message):
        """The cursor is on another row."""

    class GuestChosen(Message):
        """Enter on a finding of a guest: open it."""

        def __init__(self, uuid: str) -> None:
            """The guest's UUID."""
            super().__init__()
            self.uuid = uuid

    def __init__(self, **kwargs: Any) -> None:
        """Create the table (kwargs go to `LineTable`)."""
        super().__init__(COLUMNS, **kwargs)
        self.snapshot: Snapshot | None = None
        self.expanded: set[str] = set()
        """Incident ids whose findings are listed, and NOTICES when they are."""
        self._rows: dict[str, Row] = {}
        self._notices: list[Incident] = []
        self._cells: dict[str, tuple[Cell, ...]] = {}
        """Rows formatted for the current snapshot, by key."""

    @property
    def cursor(self) -> Row | None:
        """The row under the cursor, if any."""
        key = self.cursor_key
        return None if key is None else self._rows[key]

    def describe(self) -> Content:
        """The detail lines of the row under the cursor (empty without rows)."""
        row = self.cursor
        return Content("") if row is None else detail(row, self._notices)

    def show(self, snapshot: Snapshot) -> None:
        """Show a snapshot's incidents."""
        self.snapshot = snapshot
        self.expanded &= {NOTICES} | {i.id for i in snapshot.incidents}
        self._arrange()

    def _arrange(self) -> None:
        """Lay the incidents out in rows (the cursor stays on its row)."""
        incidents = self.snapshot.incidents if self.snapshot is not None else ()
        self._notices = [i for i in incidents if is_notice(i)]
        self._rows = {row.key: row for row in layout(incidents, self.expanded)}
        self._cells = {}
        self.set_rows(list(self._rows))

    def row_cells(self, key: str) -> tuple[Cell, ...]:
        """The cells of a row, formatted once per snapshot."""
        cells = self._cells.get(key)
        if cells is None:
            i, m = self._rows[key].incident, self._rows[key].member
            if i is None:
                cells = notices_cells(self._notices, NOTICES in self.expanded)
            elif m is None:
                cells = incident_cells(i, i.id in self.expanded)
            else:
                cells = member_cells(i, m)
            self._cells[key] = cells
        return cells

    def select(self, cause: str) -> None:
        """Put the cursor on the row of the incident with this cause (listing the
        notices if it is one of them); nothing when the snapshot shown has none."""
        incidents = self.snapshot.incidents if self.snapshot is not None else ()
        i = next((i for i in incidents if i.cause == cause), None)
        if i is None:
            return
        if is_notice(i) and NOTICES not in self.expanded:
            self.expanded.add(NOTICES)
            self._arrange()
        self.move_cursor(self.row_keys.index(incident_key(i.id)))

    def move_cursor(self, row: int) -> None:
        """Move the cursor (`LineTable.move_cursor`); say so when it lands on another
        row."""
        before = self.cursor_key
        super().move_cursor(row)
        if self.cursor_key != before:
            self.post_message(self.Moved())

    def action_select_cursor(self) -> None:
        """Enter: list or fold an incident's findings (or the notices); on a finding of
        a guest, open that guest."""
        row = self.cursor
        if row is None:
            return
        if row.member is None:
            key = NOTICES if row.incident is None else row.incident.id
            self.expanded ^= {key}
            self._arrange()
            return
        guest = row.member.guest
        if guest is None or self.snapshot is None:
            return
        g = self.snapshot.guest(row.member.subject) or next(
            (g for g in self.snapshot.guests if g.name == guest), None
        )
        if g is None:
            self.notify(visible(f"{guest} is not in this frame"), timeout=4, markup=False)
        else:
            self.post_message(self.GuestChosen(g.uuid))

    def on_line_table_header_selected(self, event: LineTable.HeaderSelected) -> None:
        """A header click does nothing here (the order is the ranking)."""
        event.stop()


class IncidentsPanel(Widget):
    """The ranked incidents, and what the one under the cursor is and needs; "no
    incidents" when there are none."""

    def __init__(self, **kwargs: Any) -> None:
        """Create the panel (kwargs go to `Widget`)."""
        super().__init__(**kwargs)
        self.table = IncidentTable(id="incidents-table")

    def compose(self) -> ComposeResult:
        """The empty-state line, the table and the detail lines."""
        yield Static("no incidents", id="no-incidents")
        yield self.table
        yield SteadyStatic(Content(""), id="incident-detail")

    def show(self, snapshot: Snapshot) -> None:
        """Show a snapshot's incidents."""
        incidents = snapshot.incidents
        self.set_class(bool(incidents), "-has-incidents")
        if not incidents and self.table.has_focus:
            self.screen.focus_previous()  # the table hides: the keys go to the one above
        title = f"incidents {len(incidents)}" if incidents else "incidents"
        if title != self.border_title:  # setting it repaints the panel, even unchanged
            self.border_title = title
        self.table.show(snapshot)
        self._describe()

    def on_incident_table_moved(self, event: IncidentTable.Moved) -> None:
        """The cursor moved: describe its row."""
        event.stop()
        self._describe()

    def _describe(self) -> None:
        """The detail lines of the row under the cursor."""
        self.query_one("#incident-detail", SteadyStatic).show_content(self.table.describe())
