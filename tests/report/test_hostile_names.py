"""Issue #16 in the outputs over a recording: `kvmtop report` (text, md, html, json),
`kvmtop export` (csv, jsonl, openmetrics) and `kvmtop replay --batch` show a name's
control and bidi characters escaped, JSON keeps the exact string, and a CSV cell
cannot start a spreadsheet formula.

The recording (built with the detector builders, written by the real StoreWriter,
indexed by `kvmtop reindex`): a guest named `BAD` with 25 % steal (a steal finding
about it) and a disk whose target and host device are hostile; a guest named `BIDI`
whose vNIC, named with an ESC, drops packets (a vnic_drops finding about the vNIC) on
a hostile bridge with a hostile uplink; and guests named like spreadsheet formulas.
"""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from kvmtop.commands.main import main
from kvmtop.store.writer import StoreWriter
from tests.detectors.builders import (
    DiskSpec,
    GuestSpec,
    HostDiskSpec,
    HostSpec,
    NetDevSpec,
    NicSpec,
    VcpuSpec,
    World,
    balloon,
)
from tests.hostile import BAD, BAD_SHOWN, BIDI, BIDI_SHOWN, assert_no_raw
from tests.report.conftest import run_command

TARGET, TARGET_SHOWN = "vd\x1b]0;pwned\x07", "vd\\x1b]0;pwned\\x07"
DEVICE, DEVICE_SHOWN = "sd\u2066a\u2069", "sd\\u2066a\\u2069"
NIC, NIC_SHOWN = "tap\x1b[8m", "tap\\x1b[8m"
BRIDGE, BRIDGE_SHOWN = "br\x9b0", "br\\x9b0"
UPLINK, UPLINK_SHOWN = "eno\u202e1", "eno\\u202e1"
FORMULAS = ('=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)")
TICKS = 90
"""Three minutes at 2 s."""


def _guest(uuid: int, name: str, **kw: object) -> GuestSpec:
    return GuestSpec(
        f"00000000-0000-0000-0000-{uuid:012d}",
        name,
        balloon=balloon(30.0),
        balloon_period_s=10,
        **kw,
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hostile recording, written and indexed once for the module."""
    world = World(
        [
            _guest(
                1,
                BAD,
                vcpus=[VcpuSpec(cpu_pct=40.0, steal_pct=25.0)],
                disks=[DiskSpec(target=TARGET, rd_iops=30.0, rd_ms=1.0, host_dev=DEVICE)],
            ),
            _guest(2, BIDI, nics=[NicSpec(name=NIC, rx_pps=1000.0, rx_drops=20.0, bridge=BRIDGE)]),
            *(_guest(3 + i, name) for i, name in enumerate(FORMULAS)),
        ],
        HostSpec(
            disks=[HostDiskSpec(DEVICE)],
            netdevs=[
                NetDevSpec(UPLINK, "physical", master=BRIDGE, speed_mbps=1000, rx_bps=100e6),
                NetDevSpec(BRIDGE, "bridge"),
            ],
        ),
    )
    path = tmp_path_factory.mktemp("hostile") / "hostile.kvmtop"
    writer = StoreWriter(path)
    for _ in range(TICKS):
        writer.append(world.sample(2.0))
    writer.close()
    assert main(["reindex", str(path)]) == 0
    return path


def report(recording: Path, tmp_path: Path, fmt: str, *extra: str) -> str:
    return run_command("report", recording, tmp_path, fmt, *extra)


NAMES_SHOWN = (BAD_SHOWN, BIDI_SHOWN, DEVICE_SHOWN, NIC_SHOWN, UPLINK_SHOWN)
"""Names a report shows: guests, the host disk and uplink tables, finding subjects."""


@pytest.mark.parametrize("exact", [(), ("--exact",)], ids=["index", "exact"])
def test_text_report_escapes_every_name(
    recording: Path, tmp_path: Path, exact: tuple[str, ...]
) -> None:
    text = report(recording, tmp_path, "text", *exact)
    assert_no_raw(text)
    assert "\x9b" not in text
    for shown in NAMES_SHOWN:
        assert shown in text, shown
    # The findings timeline: the steal finding about BAD, the drops of the vNIC.
    assert any(" steal " in line and BAD_SHOWN in line for line in text.splitlines())
    assert any(" vnic_drops " in line and NIC_SHOWN in line for line in text.splitlines())


def test_markdown_report_escapes_names_and_pipes(recording: Path, tmp_path: Path) -> None:
    text = report(recording, tmp_path, "md")
    assert_no_raw(text)
    for shown in NAMES_SHOWN:
        assert shown in text, shown
    rows = [line for line in text.splitlines() if line.startswith(f"| {BAD_SHOWN} |")]
    assert rows  # a per-guest row: the name is one cell, escaped, the table intact
    assert '| =HYPERLINK("http://x") |' in text  # Markdown needs no formula guard


class Text(HTMLParser):
    """The text of an HTML page (what a browser shows and a tooltip holds)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def test_html_report_escapes_names(recording: Path, tmp_path: Path) -> None:
    page = report(recording, tmp_path, "html")
    assert_no_raw(page)
    parser = Text()
    parser.feed(page)
    text = "".join(parser.parts)
    assert_no_raw(text)
    for shown in NAMES_SHOWN:
        assert shown in text, shown


def test_json_report_keeps_the_exact_names(recording: Path, tmp_path: Path) -> None:
    text = report(recording, tmp_path, "json")
    assert text.isascii()
    doc = json.loads(text)
    assert {g["name"] for g in doc["guests"]} == {BAD, BIDI, *FORMULAS}
    subjects = {
        f["detector"]: f["subject_name"] for f in doc["findings"] if f["severity"] != "info"
    }
    assert subjects["steal"] == BAD and subjects["vnic_drops"] == NIC
    assert DEVICE in doc["host"]["disks"] and UPLINK in doc["host"]["uplinks"]


def test_incident_summary_escapes_names_and_json_keeps_them(
    recording: Path, tmp_path: Path
) -> None:
    """The incidents' sentences and members name the guest and the vNIC."""
    text = report(recording, tmp_path, "text").split("== Findings timeline ==")[0]
    titles = [line for line in text.splitlines() if line.startswith("#")]
    assert any(
        t.endswith(
            f"critical: {BAD_SHOWN}: steal max 25% (vCPU 0), mean 25%: CPU contention on the host"
        )
        for t in titles
    ), titles
    assert any(f"critical: {BIDI_SHOWN} {NIC_SHOWN}: {NIC_SHOWN} RX drops" in t for t in titles), (
        titles
    )
    md = report(recording, tmp_path, "md").split("## Findings timeline")[0]
    assert_no_raw(md)
    assert any(line.startswith("### #") and BAD_SHOWN in line for line in md.splitlines())
    assert f"| {BAD_SHOWN} | {BAD_SHOWN} | steal | critical |" in md.splitlines()
    assert f"| {BIDI_SHOWN} | {NIC_SHOWN} | vnic_drops | critical |" in md.splitlines()
    page = report(recording, tmp_path, "html").split('<section id="findings">')[0]
    assert_no_raw(page)
    parser = Text()
    parser.feed(page)
    shown = "".join(parser.parts)
    assert f"critical: {BAD_SHOWN}: steal max" in shown
    assert f"{BIDI_SHOWN}{NIC_SHOWN}vnic_dropscritical" in shown  # a member row
    doc = json.loads(report(recording, tmp_path, "json"))
    steal = next(i for i in doc["incidents"] if i["members"][0]["detector"] == "steal")
    assert steal["guests"] == [BAD] and steal["title"].startswith(f"{BAD}: steal")


def export(recording: Path, tmp_path: Path, fmt: str) -> str:
    return run_command("export", recording, tmp_path, fmt)


def test_csv_escapes_names_and_guards_formulas(recording: Path, tmp_path: Path) -> None:
    text = export(recording, tmp_path, "csv")
    assert_no_raw(text)
    rows = list(csv.DictReader(text.splitlines()))
    names = {r["name"] for r in rows}
    assert names == {BAD_SHOWN, BIDI_SHOWN, *(f"'{f}" for f in FORMULAS)}
    assert {r["state"] for r in rows} == {"running"}
    # Numbers stay numbers: only text cells get the quote.
    assert all(float(r["cpu_pct"]) >= 0 for r in rows if r["cpu_pct"])


def test_jsonl_keeps_the_exact_names(recording: Path, tmp_path: Path) -> None:
    text = export(recording, tmp_path, "jsonl")
    assert text.isascii()
    last = json.loads(text.splitlines()[-1])
    assert [g["name"] for g in last["guests"]] == [BAD, BIDI, *FORMULAS]
    assert last["guests"][0]["disks"][0]["target"] == TARGET
    assert last["guests"][1]["nics"][0]["ifname"] == NIC
    assert last["guests"][1]["nics"][0]["uplink"] == UPLINK


def test_openmetrics_labels_are_escaped_and_valid(recording: Path, tmp_path: Path) -> None:
    text = export(recording, tmp_path, "openmetrics")
    assert_no_raw(text)
    assert "\x9b" not in text
    # The exposition's own escaping on top: the value's backslash is written "\\".
    assert 'guest="esc\\\\x1b[2J\\\\x1b[31mBAD\\\\x07"' in text
    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses: valid
    guests = {s.labels["guest"] for s in families["kvmtop_guest_info"].samples}
    assert guests == {BAD_SHOWN, BIDI_SHOWN, *FORMULAS}
    disks = {s.labels["disk"] for s in families["kvmtop_guest_disk_read_requests"].samples}
    assert disks == {TARGET_SHOWN}
    nics = {s.labels["nic"] for s in families["kvmtop_guest_nic_receive_drops"].samples}
    assert nics == {NIC_SHOWN}
    host = families["kvmtop_host_network_info"].samples
    assert {(s.labels["device"], s.labels["master"]) for s in host} >= {
        (UPLINK_SHOWN, BRIDGE_SHOWN)
    }
    found = {s.labels["subject"] for s in families["kvmtop_finding"].samples}
    assert NIC_SHOWN in found


def test_replay_batch_text_escapes_and_json_keeps(
    recording: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(recording), "--batch", "--format", "text", "--count", "3"]) == 0
    text = capsys.readouterr().out
    assert_no_raw(text)
    assert BAD_SHOWN[:18] in text and BIDI_SHOWN in text and UPLINK_SHOWN in text
    assert main(["replay", str(recording), "--batch", "--format", "json", "--count", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.isascii() for line in lines)
    assert [g["name"] for g in json.loads(lines[-1])["guests"]][:2] == [BAD, BIDI]
