"""The report's index (kvmtop.report.index): a report from it equals one from every sample.

On the real lab recordings: `examples/lab-sample.kvmtop` (the lab's `demo` scenario,
current format, indexed; the tests report over a copy reindexed by this kvmtop, since
the shipped index may be of an older layout, which a report ignores) and
`tests/fixtures/recordings/lab-sample.kvmtop` (an older demo recording in file format
1, no index).
"""

from __future__ import annotations

import html
import json
import math
import shutil
import sqlite3
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest

from kvmtop.commands.main import main
from kvmtop.report.index import indexed_report
from kvmtop.report.stats import Stats, Trend
from kvmtop.store.meta import FORMAT_VERSION
from kvmtop.store.reader import StoreReader

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "lab-sample.kvmtop"
OLD_FORMAT = ROOT / "tests" / "fixtures" / "recordings" / "lab-sample.kvmtop"
UPLINKS = ("physical", "bond", "veth")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example with an index of this kvmtop's layout (`kvmtop.report.index.VERSION`)."""
    path = tmp_path_factory.mktemp("indexed") / "lab-sample.kvmtop"
    shutil.copy(EXAMPLE, path)
    assert main(["reindex", str(path)]) == 0
    return path


def report_json(path: Path, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"r{len(list(tmp_path.iterdir()))}.json"
    assert main(["report", str(path), "--format", "json", "-o", str(out), *extra]) == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON documents differ. Numbers within 1e-6 relative, or one step of
    the report's rounding to 3 decimals (the index keeps 7 significant digits, so a
    value on a rounding edge may land on the next step), count as equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items, not {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return [] if math.isclose(a, b, rel_tol=1e-6, abs_tol=1.001e-3) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_the_example_is_indexed_and_the_old_fixture_is_not() -> None:
    with StoreReader(EXAMPLE) as new, StoreReader(OLD_FORMAT) as old:
        assert (new.meta.format_version, old.meta.format_version) == (FORMAT_VERSION, 1)
        rollups = new.rollups()
        assert sum(n for _, _, n, _ in rollups) == new.count() == 301
        assert old.rollups() == []


def test_index_and_samples_give_the_same_report(indexed: Path, tmp_path: Path) -> None:
    fast = report_json(indexed, tmp_path)
    exact = report_json(indexed, tmp_path, "--exact")
    assert (fast["range"].pop("index_s"), exact["range"].pop("index_s")) == (10.0, None)
    assert differences(fast, exact) == []
    # Not an empty comparison: the lab's faults are in both.
    detectors = {f["detector"] for f in fast["findings"]}
    assert {"steal", "disk_latency", "overcommit", "memory_leak", "vswitch_saturation"} <= detectors
    assert len(fast["guests"]) == 8 and fast["range"]["samples"] == 301
    assert fast["incidents"]  # compared above: the same, ranked the same


def test_a_report_merges_hours_and_the_minutes_around_them(indexed: Path, tmp_path: Path) -> None:
    """The same report from the hour row as from the minutes it merged."""
    path = tmp_path / "minutes.kvmtop"
    shutil.copy(indexed, path)
    with StoreReader(indexed) as r:
        hours = r.rollups(hours=True)
        assert len(hours) == 1 and hours[0][2] == r.count()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM hour_rollups")
    from_hour = report_json(indexed, tmp_path)
    from_minutes = report_json(path, tmp_path)
    assert from_hour.pop("file") != from_minutes.pop("file")
    assert differences(from_hour, from_minutes) == []


def test_html_from_the_index_has_its_plots(indexed: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(indexed), "-o", str(out)]) == 0
    page = out.read_text()
    assert "from the recording's index" in html.unescape(page)
    assert page.count('<polyline class="series"') >= 10
    assert 'class="finding-span"' in page


@pytest.mark.parametrize("to", ["inside", "after"])
def test_a_range_is_widened_to_whole_minutes_of_the_index(
    indexed: Path, tmp_path: Path, to: str
) -> None:
    """--to inside a minute takes the whole minute; --to between a minute's last sample
    and the next minute's first takes that minute, the next one not."""
    with StoreReader(indexed) as r:
        rollups = r.rollups()
    second = rollups[1]
    end = second[1] - 5 if to == "inside" else second[1] + 1  # samples are 2 s apart
    doc = report_json(indexed, tmp_path, "--from", f"{second[0] + 5:.6f}", "--to", f"{end:.6f}")
    assert doc["range"]["index_s"] == 10.0
    assert (doc["range"]["from"], doc["range"]["to"]) == (second[0], second[1])
    assert doc["range"]["samples"] == second[2]


def test_an_old_format_file_is_reported_from_its_samples_then_reindexed(tmp_path: Path) -> None:
    path = tmp_path / "old.kvmtop"
    shutil.copy(OLD_FORMAT, path)
    before = report_json(path, tmp_path)
    assert before["range"]["index_s"] is None
    assert main(["reindex", str(path)]) == 0
    with StoreReader(path) as r:
        assert r.meta.format_version == FORMAT_VERSION
        assert sum(n for _, _, n, _ in r.rollups()) == r.count()
    after = report_json(path, tmp_path)
    assert after["range"].pop("index_s") == 10.0
    before["range"].pop("index_s")
    before["meta"].pop("format_version")
    after["meta"].pop("format_version")
    assert differences(after, before) == []


@pytest.mark.parametrize(
    ("table", "damage"),
    [
        ("rollups", "gap"),
        ("rollups", "garbage"),
        ("rollups", "other version"),
        ("hour_rollups", "garbage"),
        ("hour_rollups", "other version"),
    ],
)
def test_an_index_that_does_not_cover_the_range_is_not_used(
    indexed: Path, tmp_path: Path, damage: str, table: str
) -> None:
    path = tmp_path / "d.kvmtop"
    shutil.copy(indexed, path)
    with sqlite3.connect(path) as conn:
        if table == "rollups":  # the minutes are read only where no hour covers them
            conn.execute("DELETE FROM hour_rollups")
        first_s = conn.execute(
            f"SELECT first_s FROM {table} ORDER BY first_s "
            f"LIMIT 1 OFFSET {2 if table == 'rollups' else 0}"
        ).fetchone()[0]
        if damage == "gap":
            conn.execute(f"DELETE FROM {table} WHERE first_s = ?", (first_s,))
        elif damage == "garbage":
            conn.execute(f"UPDATE {table} SET data = zeroblob(100) WHERE first_s = ?", (first_s,))
        else:
            from kvmtop.store import blob

            raw = json.loads(
                blob.unpack(
                    conn.execute(
                        f"SELECT data FROM {table} WHERE first_s = ?", (first_s,)
                    ).fetchone()[0]
                )
            )
            raw["v"] = 999
            conn.execute(
                f"UPDATE {table} SET data = ? WHERE first_s = ?",
                (blob.pack(json.dumps(raw).encode()), first_s),
            )
    with StoreReader(path) as r:
        assert indexed_report(r, uplink_kinds=UPLINKS) is None
    assert report_json(path, tmp_path)["range"]["index_s"] is None  # from the samples


def test_stats_state_round_trips_and_merges() -> None:
    values = [0.0, 0.5, 3.25, 3.3, 97.0, 1e6, 2.5e-4]
    whole, first, second = Stats(), Stats(), Stats()
    for i, v in enumerate(values):
        whole.add(v, 2.0)
        (first if i < 3 else second).add(v, 2.0)
    merged = Stats()
    merged.merge_state(first.state())
    merged.merge_state(json.loads(json.dumps(second.state())))
    assert (merged.n, merged.hist.bins, merged.hist.zeros) == (
        whole.n,
        whole.hist.bins,
        whole.hist.zeros,
    )
    got, want = merged.summary(), whole.summary()
    assert got is not None and want is not None
    assert astuple(got) == pytest.approx(astuple(want), rel=1e-6)  # 7 digits kept
    assert merged.integral == pytest.approx(whole.integral, rel=1e-6)


def test_trend_merge_equals_one_trend() -> None:
    points = [(1000.0 + 2 * i, 50.0 + 0.3 * i + (i % 7)) for i in range(400)]
    whole, first, second = Trend(), Trend(), Trend()
    for i, (t, v) in enumerate(points):
        whole.add(t, v)
        (first if i < 150 else second).add(t, v)
    first.merge(Trend.from_state(second.state()))
    assert first.slope() == pytest.approx(whole.slope(), rel=1e-9)
