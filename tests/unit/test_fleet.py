"""`kvmtop fleet`: rows built from Prometheus answers captured in the lab
(tests/fixtures/prometheus), the table and JSON, and the API client's error paths."""

from __future__ import annotations

import argparse
import io
import json
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.prometheus import PrometheusClient
from kvmtop.commands.fleet import print_rows
from kvmtop.model.as_json import row_json
from kvmtop.model.as_text import text_table
from kvmtop.model.fleet import QUERIES, SORTS, HostRow, build_rows, queries

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "prometheus" / "fleet-lab.json"
CAPTURED = json.loads(FIXTURE.read_text())
RESULTS = {
    name: [(labels, value) for labels, value in series]
    for name, series in CAPTURED["results"].items()
}


def value_of(name: str, instance: str) -> float:
    (hit,) = [v for labels, v in RESULTS[name] if labels["instance"] == instance]
    return hit


def test_one_row_per_scraped_host_with_its_figures() -> None:
    rows = build_rows(RESULTS)
    assert [r.instance for r in rows] == sorted(labels["instance"] for labels, _ in RESULTS["up"])
    by_host = {r.hostname: r for r in rows}
    assert set(by_host) == {"vm", "replay-demo", "replay-old"}
    assert by_host["vm"].mode == "live" and by_host["replay-demo"].mode == "replay"
    for row in rows:
        assert row.up and row.age_s == value_of("age_s", row.instance)
        assert row.guests == value_of("guests", row.instance)
        assert row.cpus == value_of("cpus", row.instance)
        assert row.vcpu_ratio == value_of("vcpus", row.instance) / value_of("cpus", row.instance)
        assert row.steal is not None and row.steal.value == value_of("steal", row.instance)
        assert row.incidents and [i.rank for i in row.incidents] == sorted(
            i.rank for i in row.incidents
        )
        assert row.incidents[0].rank == 1
    # The demo's pinned pair steals far more than the live host's guests.
    assert by_host["replay-demo"].steal is not None
    assert by_host["replay-demo"].steal.guest in ("lab-steal-a", "lab-steal-b")
    assert by_host["replay-demo"].criticals > 0


def test_a_host_that_does_not_answer_keeps_its_row() -> None:
    """Prometheus still scrapes it (up 0) but has no fresh kvmtop series: a row with
    every figure unknown, and the sort puts it first."""
    down = {"instance": "10.0.0.9:9177", "job": "kvmtop"}
    results = {**RESULTS, "up": [*RESULTS["up"], (down, 0.0)]}
    rows = build_rows(results)
    row = next(r for r in rows if r.instance == down["instance"])
    assert not row.up and row.hostname is None and row.guests is None
    assert row.vcpu_ratio is None and row.steal is None and row.incidents == ()
    assert "DOWN" in text_table([row]).splitlines()[1]
    assert json.loads(json.dumps(row_json(row)))["up"] is False
    ordered = sorted(rows, key=lambda r: (r.up, SORTS["incidents"](r)))
    assert ordered[0] is row


def test_queries_are_aggregated_per_host_and_quote_the_job() -> None:
    for name, expr in queries('kv"m').items():
        assert '{job="kv\\"m"' in expr or 'job="kv\\"m"' in expr, name
        assert "{job}" not in expr
    # One series per host (or per host and severity), whatever the number of guests;
    # the incidents query returns one per open incident (a handful per host).
    plain = ("up", "host", "age_s", "cpus", "incidents")
    assert all("by (instance" in e for n, e in QUERIES.items() if n not in plain)


def test_names_are_data_in_the_table() -> None:
    row = HostRow(instance="h:1", hostname="evil\x1b[31m\u202ehost", up=True)
    table = text_table([row])
    assert "\x1b" not in table and "\u202e" not in table


class Reply(io.BytesIO):
    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def opener_of(body: Any = None, error: Exception | None = None) -> Any:
    def open_(url: str, timeout: float) -> Reply:
        if error is not None:
            raise error
        return Reply(json.dumps(body).encode())

    return open_


@pytest.mark.parametrize(
    ("body", "error", "says"),
    [
        (None, urllib.error.URLError("[Errno 111] Connection refused"), "Connection refused"),
        (
            None,
            urllib.error.HTTPError(
                "http://p/api/v1/query",
                400,
                "Bad Request",
                None,  # type: ignore[arg-type]
                io.BytesIO(b'{"status":"error","errorType":"bad_data","error":"parse error"}'),
            ),
            "HTTP 400: bad_data: parse error",
        ),
        (
            {"status": "error", "errorType": "timeout", "error": "query timed out"},
            None,
            "timeout: query timed out",
        ),
        (
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            None,
            "is not an instant vector",
        ),
        ("<html>", None, "not a Prometheus API answer"),
    ],
)
def test_client_errors_are_one_line(body: Any, error: Exception | None, says: str) -> None:
    client = PrometheusClient("http://p:9090", opener=opener_of(body, error))
    with pytest.raises(CollectorError, match=says) as exc:
        client.query("up")
    assert "\n" not in str(exc.value)


def test_nan_and_inf_values_are_left_out() -> None:
    body = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"instance": "a"}, "value": [1, "NaN"]},
                {"metric": {"instance": "b"}, "value": [1, "+Inf"]},
                {"metric": {"instance": "c"}, "value": [1, "2.5"]},
            ],
        },
    }
    assert PrometheusClient("http://p", opener=opener_of(body)).query("x") == [
        ({"instance": "c"}, 2.5)
    ]


def test_not_a_url() -> None:
    with pytest.raises(CollectorError, match="not an http"):
        PrometheusClient("prometheus:9090")


def test_run_writes_json_or_says_why_not(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = argparse.Namespace(
        prometheus="http://127.0.0.1:1", job="kvmtop", format="json", sort="incidents"
    )
    out = io.StringIO()
    assert print_rows(args, out) == 1 and out.getvalue() == ""
    err = capsys.readouterr().err
    assert err.startswith("kvmtop fleet: Prometheus at http://127.0.0.1:1:")
    assert err.count("\n") == 1
    answers = {expr: RESULTS[name] for name, expr in queries("kvmtop").items()}
    monkeypatch.setattr(PrometheusClient, "query", lambda self, expr, at_s=None: answers[expr])
    assert print_rows(args, out) == 0
    rows = json.loads(out.getvalue())
    assert {r["hostname"] for r in rows} == {"vm", "replay-demo", "replay-old"}
    assert rows[0]["incidents"][0]["rank"] == 1


GUESTS = {
    name: [(labels, value) for labels, value in series]
    for name, series in CAPTURED["guests"].items()
}


class CapturedClient(PrometheusClient):
    """Answers every query from the lab capture, or fails like an unreachable server."""

    def __init__(self, failing: bool = False) -> None:
        super().__init__("http://prometheus.lab:9090")
        self.failing = failing
        self._answers = {expr: RESULTS[n] for n, expr in queries("kvmtop").items()}
        self._answers |= {
            expr: GUESTS[n] for n, expr in queries("kvmtop", CAPTURED["guests_of"]).items()
        }

    def query(self, expr: str, at_s: float | None = None) -> Any:
        if self.failing:
            raise CollectorError("Prometheus at http://prometheus.lab:9090: connection refused")
        return self._answers[expr]


def test_guest_rows_of_one_host() -> None:
    rows = CapturedClient().guests("kvmtop", CAPTURED["guests_of"])
    names = [r.name for r in rows]
    assert names == sorted(names) and {"lab-memleak", "lab-steal-a"} <= set(names)
    steal = {r.name: r.steal_pct for r in rows}
    assert steal["lab-steal-a"] is not None and steal["lab-steal-a"] > 20
    # Host findings (no guest label) belong to no guest row.
    assert sum(r.criticals + r.warnings for r in rows) == sum(
        v for labels, v in GUESTS["findings"] if labels.get("guest")
    )


async def test_the_screen_sorts_filters_and_opens_a_host() -> None:
    from kvmtop.fleet_app import FleetApp, GuestsScreen
    from kvmtop.views.fleet import FleetGuests, FleetTable
    from tests.app.builders import wait_until

    app = FleetApp(CapturedClient(), every_s=3600)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.query_one(FleetTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        assert table.rows[table.row_keys[0]].incidents  # incidents first
        await pilot.press("s")  # steal
        assert app.sort == "steal"
        top = table.rows[table.row_keys[0]]
        assert top.steal is not None
        assert top.steal.value == max(r.steal.value for r in app.rows if r.steal)
        await pilot.press("slash", *"replay")
        await wait_until(pilot, lambda: table.row_count == 2)
        await pilot.press("escape")
        await wait_until(pilot, lambda: table.row_count == 3)
        demo = CAPTURED["guests_of"]
        table.move_cursor(table.row_keys.index(demo))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, GuestsScreen))
        guests = app.screen.query_one(FleetGuests)
        assert guests.row_count == len(GUESTS["state"])
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, GuestsScreen))


async def test_an_unreachable_prometheus_is_said_and_nothing_freezes() -> None:
    from kvmtop.fleet_app import FleetApp
    from kvmtop.views.fleet import FleetTable
    from tests.app.builders import wait_until

    app = FleetApp(CapturedClient(failing=True), every_s=3600)
    async with app.run_test(size=(160, 30)) as pilot:
        await wait_until(pilot, lambda: app.error is not None)
        status = str(app.query_one("#fleet-status").render())
        assert "Last refresh failed" in status and "connection refused" in status
        assert app.query_one(FleetTable).row_count == 0
        await pilot.press("s", "r")  # keys still answer
        assert app.sort == "steal"
