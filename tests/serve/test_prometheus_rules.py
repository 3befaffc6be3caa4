"""The Prometheus side of `kvmtop serve`, checked by Prometheus's own `promtool`
(Debian's `prometheus` package, which `tests/lab/lab install` installs):

- contrib/prometheus/prometheus.yml and its rule file pass `promtool check config`
  and `promtool check rules`;
- every alert rule has unit tests (contrib/prometheus/kvmtop-alerts.test.yml) that
  `promtool test rules` passes: it fires on what it is for, with the labels an
  on-call engineer needs, and stays silent on a healthy host;
- what kvmtop exports for a real recording (the shipped demo, replayed through the
  shared pipeline into serve's exporter) passes `promtool check metrics`.
The live endpoint's exposition is checked the same way in the lab
(tests/serve/test_serve.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from kvmtop.config import Settings
from kvmtop.feed.replay import ReplayFeed
from kvmtop.headless.exporter import Exporter
from kvmtop.store.reader import StoreReader
from kvmtop.wiring import build_pipeline
from tests.serve.prom import promtool

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib" / "prometheus"
RULES = CONTRIB / "kvmtop-alerts.yml"
RULE_TESTS = CONTRIB / "kvmtop-alerts.test.yml"
EXAMPLE = ROOT / "examples" / "lab-sample.kvmtop"


def test_config_and_rules_pass_promtool_check() -> None:
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 14 rules found" in rules.stdout, rules.stdout
    config = promtool("check", "config", str(CONTRIB / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_rule_fires_and_stays_silent_in_its_unit_tests() -> None:
    alerts = re.findall(r"^\s+- alert: (\w+)", RULES.read_text(), re.M)
    tests = RULE_TESTS.read_text()
    healthy = tests[tests.index("a healthy host raises nothing") :]
    for alert in alerts:
        # A firing case (exp_alerts with labels) and a silent one on the healthy host.
        firing = re.search(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels:", tests)
        assert firing, f"{alert}: no unit test where it fires"
        assert f"alertname: {alert}, exp_alerts: []" in healthy, f"{alert}: no silent case"
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_exported_metrics_of_a_real_recording_pass_promtool_check_metrics() -> None:
    """The demo recording (a leak, a saturated switch, pinning, over-commit: findings
    and incidents of every kind) replayed into serve's exporter: its last tick's
    exposition, as a scrape gets it, lints clean."""
    exporter = Exporter()
    feed = ReplayFeed(StoreReader(EXAMPLE), build_pipeline(Settings()))
    try:
        while (snapshot := feed.next()) is not None:
            sample = feed.reader.read(feed.position) if feed.position is not None else None
            assert sample is not None
            exporter.publish(sample, snapshot, 0.05)
    finally:
        feed.close()
    text = exporter.exposition(openmetrics=False, gzip=False).decode()
    assert "kvmtop_incident{" in text and "kvmtop_finding{" in text
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr
