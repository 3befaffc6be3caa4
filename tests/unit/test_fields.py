"""The guest field catalogue (`kvmtop.model.fields`) and what is derived from it: the
table's columns, the batch JSON guest object, the CSV header, the report's metrics,
and the README's units and schema.
"""

from __future__ import annotations

import re
from pathlib import Path

from kvmtop.headless.export import CSV_HEADER
from kvmtop.model.as_json import guest_json
from kvmtop.model.fields import FIELDS, GUEST_COLUMNS, column
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.units import (
    UNIT_BITS_PER_S,
    UNIT_BYTES,
    UNIT_BYTES_PER_S,
    UNIT_MS,
    UNIT_PCT,
    UNIT_PER_S,
)
from kvmtop.report.metrics import GUEST_METRICS

README = Path(__file__).parents[2] / "README.md"
SUFFIX_UNITS = (
    ("_bytes_per_s", UNIT_BYTES_PER_S),
    ("_per_s", UNIT_PER_S),
    ("_pct", UNIT_PCT),
    ("_bps", UNIT_BITS_PER_S),
    ("_pps", UNIT_PER_S),
    ("_bytes", UNIT_BYTES),
    ("_ms", UNIT_MS),
)
"""A JSON name's suffix and the unit it promises (README, "Units")."""


def test_keys_and_json_names_are_unique() -> None:
    keys = [f.key for f in FIELDS]
    names = [f.json for f in FIELDS if f.json is not None]
    assert len(set(keys)) == len(keys)
    assert len(set(names)) == len(names)


def test_every_field_says_what_it_means() -> None:
    assert all(f.header and f.help for f in FIELDS)


def test_a_json_name_promises_its_unit() -> None:
    for f in FIELDS:
        if f.json is None:
            continue
        unit = next((u for suffix, u in SUFFIX_UNITS if f.json.endswith(suffix)), None)
        assert unit is None or f.unit == unit, (f.json, f.unit, unit)


def test_the_table_csv_and_report_are_the_catalogue_in_its_order() -> None:
    assert tuple(f for f in FIELDS if f.width) == GUEST_COLUMNS
    assert ("time", "uuid", *(f.key for f in FIELDS if f.width)) == CSV_HEADER
    assert [m.key for m in GUEST_METRICS] == [f.key for f in FIELDS if f.report is not None]
    assert column("cpu_pct").header == "CPU%"


def test_guest_json_is_the_catalogue_then_the_devices() -> None:
    g = GuestRates(
        uuid="u",
        name="g",
        state="running",
        cpu_pct=12.34567,
        exit_categories={"io": 1.23456},
        mem_used_bytes=1 << 30,
    )
    doc = guest_json(g)
    assert list(doc) == [
        *(f.json for f in FIELDS if f.json is not None),
        "vcpu",
        "disks",
        "nics",
        "threads",
        "na",
    ]
    assert doc["cpu_pct"] == 12.346 and doc["exit_categories"] == {"io": 1.235}
    assert doc["mem_used_bytes"] == 1 << 30 and doc["exits_by_reason"] is None


def test_the_readme_documents_every_json_field() -> None:
    text = README.read_text()
    section = text[text.index("## Batch JSON") :]
    section = section[: section.index("\n## ", 1)]
    missing = {f.json for f in FIELDS if f.json is not None} - set(re.findall(r'"(\w+)"', section))
    assert not missing, f"README.md's Batch JSON section does not name {sorted(missing)}"
