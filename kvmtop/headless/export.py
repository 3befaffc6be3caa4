"""The writers of `kvmtop export`: a recording as CSV, JSON lines or OpenMetrics text,
for other tools.

Layer: headless (frames of a recording in, text out; never imports textual).

Every sample of the range goes through the shared `Pipeline` with the detector
engine (`kvmtop.report.reading.frames`), and each format reuses the code that already
defines it:

- csv: one row per guest per sample: `time` (Unix s), `uuid`, then every
  `GUEST_COLUMNS` key with the column's raw value (the number the TUI sorts by,
  unformatted and in base units: percent, per second, bytes, and bits/s for
  `net_mbps`); empty when unknown. Rates need two samples, so the first sample's
  rows have empty rates. Text cells (`uuid`, `name`, `state`, `exit_top`) show a
  name's control and bidi characters escaped (`\\x1b`, `\\u202e`:
  `kvmtop.model.text.visible`), and a text cell that begins with `=`, `+`, `-` or
  `@` gets a leading `'` so that a spreadsheet shows it rather than running it as a
  formula (`csv_text`).
- jsonl: one `kvmtop.model.as_json.snapshot_json` object per sample: the schema of
  `kvmtop --batch --format json` (names exact; `kvmtop.model.as_json.json_text`).
- openmetrics: the families `kvmtop serve` exposes (`kvmtop.exposition`) of every
  sample (raw cumulative
  counters and the active findings, as `kvmtop serve` exposes them), each point with
  the sample's timestamp, rendered by the endpoint's OpenMetrics encoder; ends with
  `# EOF`. Label values are escaped as the endpoint escapes them
  (`kvmtop.exposition.metrics.label_value`). OpenMetrics wants each family's lines together and
  each series' points together in time order, while a recording holds one sample
  (every family) after another, so the lines are sorted through a temporary SQLite
  database on disk (memory stays bounded; the disk holds about the size of the
  output until the end). `promtool tsdb create-blocks-from openmetrics` reads the
  result. A failure of that database (its disk full) is an OSError naming it
  (`SORT_FILE`), which the command reports as the output's: one line, status 1.
"""

from __future__ import annotations

import contextlib
import csv
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

from prometheus_client.exposition import choose_encoder

from kvmtop.exposition.encode import OPENMETRICS_TYPE, Prepared
from kvmtop.exposition.encode import families as metric_families
from kvmtop.exposition.points import tick_points
from kvmtop.model.as_json import json_text, snapshot_json
from kvmtop.model.fields import GUEST_COLUMNS
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible
from kvmtop.store.meta import sqlite_failure

FORMATS = ("csv", "jsonl", "openmetrics")
CSV_HEADER = ("time", "uuid", *(c.key for c in GUEST_COLUMNS))
FORMULA_START = ("=", "+", "-", "@")
"""A spreadsheet takes a cell that begins with one of these as a formula (OWASP, "CSV
Injection"; a leading tab or CR, also on its list, is escaped by `visible`)."""


def csv_text(text: str) -> str:
    """A text cell of the CSV: `text` visible (`kvmtop.model.text.visible`), and
    prefixed with `'` when it begins with one of `FORMULA_START`, the usual guard
    against formula injection: a spreadsheet then shows the text as it is (a guest
    named "=HYPERLINK(...)" stays text) and hides the quote."""
    text = visible(text)
    return "'" + text if text.startswith(FORMULA_START) else text


def _cell(v: float | str | None) -> str | float:
    if v is None:
        return ""
    if isinstance(v, str):
        return csv_text(v)
    return round(v, 3) if isinstance(v, float) else v


def write_csv(pairs: Iterable[tuple[Sample, Snapshot]], out: TextIO) -> int:
    """One row per guest per sample (see the module docstring); returns the rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    rows = 0
    for _sample, snap in pairs:
        t = round(snap.wall_s, 3)
        for g in snap.guests:
            writer.writerow([t, csv_text(g.uuid), *(_cell(c.value(g)) for c in GUEST_COLUMNS)])
            rows += 1
    return rows


def write_jsonl(pairs: Iterable[tuple[Sample, Snapshot]], out: TextIO) -> int:
    """One batch JSON object per sample, one per line; returns the lines written."""
    lines = 0
    for _sample, snap in pairs:
        out.write(json_text(snapshot_json(snap)) + "\n")
        lines += 1
    return lines


Writer = Callable[[Iterable[tuple[Sample, Snapshot]], TextIO], int]
"""What writes one format: the frames in, the text to a file; returns how many rows
or samples it wrote."""

SORT_FILE = (
    "the temporary file the OpenMetrics lines are sorted in (in $SQLITE_TMPDIR, "
    "else $TMPDIR, else /var/tmp)"
)
"""Where `write_openmetrics` sorts: SQLite's temporary database, in the first of these
that is a directory (SQLite 3.40, measured: the variables are read once, when SQLite
starts in the process)."""


@contextlib.contextmanager
def _sorting() -> Iterator[None]:
    """Turn an error of the sort's database into an OSError naming it (`SORT_FILE`)."""
    try:
        yield
    except sqlite3.Error as exc:
        code, why = sqlite_failure(exc)
        raise OSError(code, f"{SORT_FILE}: {why}") from exc


def write_openmetrics(pairs: Iterable[tuple[Sample, Snapshot]], out: TextIO) -> int:
    """Every sample's families (`kvmtop serve`'s) with timestamps, grouped by family
    and series, then `# EOF`; returns the samples exported.

    Raises:
        OSError: `out` or the sort's temporary database (`SORT_FILE`) cannot be
            written.
    """
    encode = choose_encoder(OPENMETRICS_TYPE)[0]
    families: dict[str, tuple[int, str]] = {}  # name → (order, HELP/TYPE/UNIT lines)
    series: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    # "" opens a private temporary database on disk, deleted on close.
    with _sorting():
        db = sqlite3.connect("")
    with contextlib.closing(db):
        with _sorting():
            db.execute("CREATE TABLE line (family INTEGER, series INTEGER, t REAL, text TEXT)")
        exported = 0
        for sample, snap in pairs:
            stamped = metric_families(tick_points(sample, snap), timestamp=sample.wall_s)
            lines = encode(Prepared(stamped)).decode().split("\n")
            rows = []
            at = 0
            for family in stamped:
                head = 3 if family.unit else 2
                if family.name not in families:
                    families[family.name] = (len(families), "\n".join(lines[at : at + head]))
                order = families[family.name][0]
                at += head
                for s in family.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    sid = series.setdefault(key, len(series))
                    rows.append((order, sid, sample.wall_s, lines[at]))
                    at += 1
            if lines[at] != "# EOF":
                raise AssertionError(f"unexpected OpenMetrics encoding at {lines[at]!r}")
            with _sorting():
                db.executemany("INSERT INTO line VALUES (?, ?, ?, ?)", rows)
            exported += 1
        headers = {order: head for order, head in families.values()}
        current = None
        with _sorting():  # the rows come from the database as they are written out
            for order, text in db.execute(
                "SELECT family, text FROM line ORDER BY family, series, t, rowid"
            ):
                if order != current:
                    out.write(headers[order] + "\n")
                    current = order
                out.write(text + "\n")
    out.write("# EOF\n")
    return exported
