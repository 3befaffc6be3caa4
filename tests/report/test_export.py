"""`kvmtop export`: csv, jsonl and openmetrics over the scripted recording, parsed back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from kvmtop.commands.main import main
from kvmtop.headless.export import CSV_HEADER
from kvmtop.model.fields import GUEST_COLUMNS
from tests.report.conftest import DT, STEAL, run_command

SAMPLES = 60
"""The first two minutes (--to +118s: 60 samples) keep the exports small."""
TO = f"+{(SAMPLES - 1) * DT:g}s"


def export(recording: Path, tmp_path: Path, fmt: str, *extra: str) -> str:
    return run_command("export", recording, tmp_path, fmt, *extra)


def test_csv_one_row_per_guest_per_sample(recording: Path, tmp_path: Path, start_s: float) -> None:
    rows = list(csv.DictReader(export(recording, tmp_path, "csv", "--to", TO).splitlines()))
    assert tuple(rows[0]) == CSV_HEADER == ("time", "uuid", *(c.key for c in GUEST_COLUMNS))
    assert len(rows) == SAMPLES * 4
    assert [float(r["time"]) for r in rows[::4]] == [start_s + i * DT for i in range(SAMPLES)]
    first = rows[0]
    assert first["name"] == "leaky" and first["state"] == "running"
    assert first["cpu_pct"] == ""  # rates need two samples: unknown, not 0
    assert float(first["mem_used"]) == pytest.approx(20.0 * (1 << 20), rel=0.02)
    steady = next(r for r in rows if r["name"] == "quiet" and r["cpu_pct"])
    assert float(steady["cpu_pct"]) == pytest.approx(40.0)
    assert float(steady["disk_write_ms"]) == pytest.approx(2.0)
    assert float(steady["net_mbps"]) > 0  # raw bits per second
    assert steady["exit_top"] == ""  # no exit categories in these samples


def test_csv_range_shows_the_steal(recording: Path, tmp_path: Path, start_s: float) -> None:
    frm = f"+{STEAL[0] + 10:g}s"
    rows = list(
        csv.DictReader(
            export(
                recording, tmp_path, "csv", "--from", frm, "--to", f"+{STEAL[0] + 20:g}s"
            ).splitlines()
        )
    )
    stealer = [r for r in rows if r["name"] == "stealer" and r["steal_pct"]]
    assert stealer and all(float(r["steal_pct"]) == pytest.approx(25.0) for r in stealer)
    assert float(rows[0]["time"]) >= start_s + STEAL[0]


def test_jsonl_is_batch_json(recording: Path, tmp_path: Path, start_s: float) -> None:
    lines = export(recording, tmp_path, "jsonl", "--to", TO).splitlines()
    assert len(lines) == SAMPLES
    objs = [json.loads(line) for line in lines]
    assert [o["time"] for o in objs] == [start_s + i * DT for i in range(SAMPLES)]
    # The schema of batch mode (`kvmtop --batch --format json`).
    assert set(objs[-1]) == {
        "time",
        "interval_s",
        "host",
        "guests",
        "incidents",
        "findings",
        "sources",
    }
    assert [g["name"] for g in objs[-1]["guests"]] == ["leaky", "stealer", "dropper", "quiet"]
    assert objs[-1]["guests"][3]["cpu_pct"] == pytest.approx(40.0)
    assert objs[0]["guests"][3]["cpu_pct"] is None


def test_jsonl_carries_findings_and_incidents(recording: Path, tmp_path: Path) -> None:
    lines = export(
        recording,
        tmp_path,
        "jsonl",
        "--from",
        f"+{STEAL[0] + 30:g}s",
        "--to",
        f"+{STEAL[0] + 40:g}s",
    ).splitlines()
    findings = [f for line in lines for f in json.loads(line)["findings"]]
    assert any(f["detector"] == "steal" and f["subject_name"] == "stealer" for f in findings)
    incidents = [i for line in lines for i in json.loads(line)["incidents"]]
    assert any(
        m["detector"] == "steal" and m["guest"] == "stealer"
        for i in incidents
        for m in i["members"]
    )


def test_openmetrics_parses_back_with_timestamps(
    recording: Path, tmp_path: Path, start_s: float
) -> None:
    text = export(recording, tmp_path, "openmetrics", "--to", TO)
    assert text.endswith("\n# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    times = [start_s + i * DT for i in range(SAMPLES)]
    delay = families["kvmtop_guest_vcpu_delay_seconds"]
    assert delay.type == "counter" and delay.unit == "seconds"
    by_guest: dict[str, list[float]] = {}
    for s in delay.samples:
        assert s.timestamp is not None
        by_guest.setdefault(s.labels["guest"], []).append(float(s.timestamp))
    assert by_guest == {name: times for name in ("leaky", "stealer", "dropper", "quiet")}
    last = families["kvmtop_last_sample_timestamp_seconds"].samples
    assert [(s.value, float(s.timestamp or 0)) for s in last] == [(t, t) for t in times]
    info = families["kvmtop_guest_info"].samples
    assert len(info) == 4 * SAMPLES


def test_openmetrics_exports_findings(recording: Path, tmp_path: Path) -> None:
    text = export(
        recording,
        tmp_path,
        "openmetrics",
        "--from",
        f"+{STEAL[0] + 30:g}s",
        "--to",
        f"+{STEAL[0] + 40:g}s",
    )
    families = {f.name: f for f in text_string_to_metric_families(text)}
    steal = [s for s in families["kvmtop_finding"].samples if s.labels["detector"] == "steal"]
    assert steal and all(s.labels["severity"] == "critical" for s in steal)


def test_export_needs_a_format(recording: Path) -> None:
    with pytest.raises(SystemExit):
        main(["export", str(recording)])
