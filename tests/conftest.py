"""Test-wide set-up: the lab plugin (real guests, `lab` marker), a pinned locale, and
under CI=true no skip that tests/ci_skip_allowlist.txt does not name."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.lab.fixture"]

os.environ["TZ"] = "UTC"
time.tzset()

ALLOWLIST = Path(__file__).with_name("ci_skip_allowlist.txt")


def _allowed_skips() -> list[re.Pattern[str]]:
    lines = ALLOWLIST.read_text().splitlines() if ALLOWLIST.exists() else []
    return [re.compile(line) for line in lines if line.strip() and not line.startswith("#")]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI=true a skip whose reason is not allowlisted is a failure: CI provides
    every capability (the lab, mounts, packages), so a skip there hides a regression."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    if any(p.match(reason) for p in _allowed_skips()):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI=true, and {ALLOWLIST.name} does not allow this reason: {reason}"
    )
