"""Facts about the host the tests run on, read by the tests themselves.

A test decides what to expect from these (is the kernel locked down, which KVM module
is loaded, does kvm:kvm_exit fire, are schedstats compiled in), never from kvmtop's
own probes and never from "this is such-and-such machine": the same test then holds
on this project's PVM hosts and inside the nested lab's SVM host
(tests/lab/nested.py). Setting up what a test needs (mounting tracefs, debugfs,
securityfs as the product or an operator's host would) lives here too.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS = Path("/sys/kernel/debug")
SECURITYFS = Path("/sys/kernel/security")
_MOUNTS = {TRACEFS: "tracefs", DEBUGFS: "debugfs", SECURITYFS: "securityfs"}


def _mounted(target: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(target) for line in f)


def ensure_mounted(target: Path) -> None:
    """Mount tracefs, debugfs or securityfs at its usual place when it is not (as kvmtop
    and an operator's host do); skips the test when this process may not mount."""
    if _mounted(target):
        return
    if os.geteuid() != 0:
        pytest.skip(f"{_MOUNTS[target]} is not mounted at {target} and mounting it needs root")
    subprocess.run(["mount", "-t", _MOUNTS[target], _MOUNTS[target], str(target)], check=True)


def lockdown() -> str:
    """The kernel lockdown mode (`none`, `integrity`, `confidentiality`), from
    securityfs (security/lockdown/lockdown.c: the active mode is in brackets)."""
    ensure_mounted(SECURITYFS)
    path = SECURITYFS / "lockdown"
    if not path.exists():
        return "none"  # kernel without the lockdown LSM
    text = path.read_text()
    return text[text.index("[") + 1 : text.index("]")]


def kvm_modules() -> set[str]:
    """The KVM modules loaded: `kvm` plus `kvm_intel`, `kvm_amd` or `kvm_pvm`."""
    names = ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm")
    return {m for m in names if Path("/sys/module", m).is_dir()}


def kvm_isa() -> str | None:
    """`vmx`, `svm` or `pvm`: what kind of KVM this host runs."""
    mods = kvm_modules()
    for module, isa in (("kvm_pvm", "pvm"), ("kvm_intel", "vmx"), ("kvm_amd", "svm")):
        if module in mods:
            return isa
    return None


def schedstats() -> bool:
    """Whether the kernel keeps scheduler statistics (/proc/schedstat, CONFIG_SCHEDSTATS)."""
    return Path("/proc/schedstat").exists()


def debugfs_counters_readable() -> bool:
    """Whether KVM's cumulative debugfs counters read (they are refused under lockdown)."""
    ensure_mounted(DEBUGFS)
    try:
        (DEBUGFS / "kvm" / "exits").read_text()
    except OSError:
        return False
    return True


def kvm_exit_events(seconds: float = 2.0) -> int:
    """How many kvm:kvm_exit events this host's guests produce in `seconds`, counted in
    a tracefs instance of the test's own (not through kvmtop). 0 means the event is
    silent here (PVM never emits it; a host with no running KVM guest neither)."""
    ensure_mounted(TRACEFS)
    instance = TRACEFS / "instances" / f"kvmtop-test-{os.getpid()}"
    instance.mkdir()
    try:
        event = instance / "events" / "kvm" / "kvm_exit" / "enable"
        event.write_text("1")
        time.sleep(seconds)
        event.write_text("0")
        entries = instance / "per_cpu"
        total = 0
        for cpu in entries.iterdir():
            # "entries: N" counts events in the ring, "overrun" those it dropped.
            stats = dict(
                line.split(": ", 1)
                for line in (cpu / "stats").read_text().splitlines()
                if ": " in line
            )
            total += int(stats.get("entries", 0)) + int(stats.get("overrun", 0))
        return total
    finally:
        instance.rmdir()


def kvm_exit_reason_names() -> set[str]:
    """Every exit reason name this kernel's kvm:kvm_exit format prints (the SVM and VMX
    `__print_symbolic` tables of arch/x86/kvm/trace.h), read with a plain pattern of
    the test's own rather than kvmtop's format parser."""
    ensure_mounted(TRACEFS)
    text = (TRACEFS / "events/kvm/kvm_exit/format").read_text()
    return set(re.findall(r'\{\s*-?[0-9a-fx]+(?:\s*\+\s*\d+)?\s*,\s*"([^"]+)"\s*\}', text))
