"""Prometheus's own `promtool` (Debian package prometheus, which
`tests/lab/lab install` installs), for the serve tests."""

from __future__ import annotations

import shutil
import subprocess


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool with `args` (and `stdin`); its exit status is the caller's to judge."""
    tool = shutil.which("promtool")
    assert tool, "promtool not found: run `tests/lab/lab install` (Debian package prometheus)"
    return subprocess.run(
        [tool, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
