"""UI test environment: UTC, no user configuration, no blinking cursor."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Input


@pytest.fixture(autouse=True)
def deterministic_ui(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """TZ=UTC, an empty config home (no user themes), and a cursor that never blinks."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)
    yield
    monkeypatch.undo()
    time.tzset()
