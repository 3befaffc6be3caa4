"""Layer rules, checked by machine: headless modules never load the TUI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "modules",
    [
        "kvmtop.feed, kvmtop.batch, kvmtop.sampler, kvmtop.config",
        "kvmtop.model.rates, kvmtop.model.snapshot, kvmtop.model.window",
        "kvmtop.cli",
        "kvmtop.report, kvmtop.export",
    ],
)
def test_headless_imports_leave_textual_out(modules: str) -> None:
    code = (
        f"import sys; import {modules}; print('textual' in sys.modules, 'libvirt' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    assert out == ["False", "False"]


def test_import_linter_contracts() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter not installed (pip install -e '.[dev]')")
    result = subprocess.run([exe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
