"""The command line as an operator meets it: bad URIs, no libvirt, batch output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def kvmtop(
    *args: str, block_libvirt: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m kvmtop ARGS` in a subprocess (optionally with libvirt unimportable)."""
    prelude = "import sys; " + ("sys.modules['libvirt'] = None; " if block_libvirt else "")
    code = prelude + "from kvmtop.cli import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(ROOT / "tests"),
            "XDG_CONFIG_HOME": "/nonexistent",
        },
    )


def test_unopenable_uri_is_a_clear_error_and_nonzero() -> None:
    pytest.importorskip("libvirt")
    result = kvmtop("-c", "test:///no/such/file.xml", "--batch", "--count", "1")
    assert result.returncode == 1
    assert "cannot open test:///no/such/file.xml" in result.stderr
    assert "Traceback" not in result.stderr


def test_explicit_uri_without_libvirt_python_is_an_error() -> None:
    result = kvmtop("-c", "test:///default", "--batch", "--count", "1", block_libvirt=True)
    assert result.returncode == 1
    assert "libvirt-python not installed" in result.stderr


def test_batch_runs_without_libvirt_python_and_says_why() -> None:
    result = kvmtop(
        "--batch", "--count", "1", "--interval", "0.5", "--format", "json", block_libvirt=True
    )
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.splitlines()[0])
    # Without libvirt, KVM processes on this host (if any) are still found, unmanaged.
    assert all(g["managed"] == "unmanaged" for g in line["guests"])
    assert line["host"]["cpu_busy_pct"] is not None
    libvirt = next(s for s in line["sources"] if s["name"] == "libvirt")
    assert not libvirt["ok"] and "libvirt-python not installed" in libvirt["reason"]


def test_batch_json_against_the_test_driver() -> None:
    pytest.importorskip("libvirt")
    result = kvmtop(
        "-c", "test:///default", "--batch", "--count", "2", "--interval", "0.5", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(lines) == 2
    guest = lines[-1]["guests"][0]
    assert guest["name"] == "test" and guest["state"] == "running"
    for key in (
        "uuid",
        "vcpus",
        "cpu_pct",
        "steal_pct",
        "steal_max_pct",
        "exits_per_s",
        "disk_iops",
        "disk_read_ms",
        "disk_write_ms",
        "net_rx_bps",
        "net_tx_bps",
        "net_drops_per_s",
        "mem_used_bytes",
    ):
        assert key in guest
    # The test driver reports no stats groups beyond state: unknown, never 0.
    assert guest["cpu_pct"] is None and guest["mem_used_bytes"] is None


def test_broken_explicit_config_is_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("interval_s = 'fast'\n")
    result = kvmtop("--config", str(cfg), "--batch", "--count", "1")
    assert result.returncode == 2
    assert "'interval_s' must be float" in result.stderr


@pytest.mark.parametrize("flag", [False, True])
def test_rtt_probe_only_with_the_flag(flag: bool) -> None:
    """Probing sends packets: the netprobe source exists only when --rtt asks for it."""
    pytest.importorskip("libvirt")
    extra = ("--rtt",) if flag else ()
    result = kvmtop(
        "-c", "test:///default", "--batch", "--count", "1", "--format", "json", *extra
    )
    assert result.returncode == 0, result.stderr
    sources = {s["name"]: s for s in json.loads(result.stdout.splitlines()[-1])["sources"]}
    assert ("netprobe" in sources) is flag
    if flag:
        assert sources["netprobe"]["ok"], sources["netprobe"]["reason"]
