"""Doctor's second stage: KVM's own sources (debugfs, tracepoints, perf_event_paranoid)
and whether `kvm:kvm_exit` fires at all, measured over `measure_s` on a running KVM
guest against KVM's exit count.

Layer: beside the sampler (reads collectors; never imports textual).
"""

from __future__ import annotations

import time
from pathlib import Path

from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.host import selected_word
from kvmtop.collectors.kvmdebugfs import LOCKDOWN_REASON
from kvmtop.diagnosis.checks import OK, SKIP, WARN, Check, Examination, read_under
from kvmtop.model.rates.kvm import kvm_exit_silent
from kvmtop.model.sample import GuestSample


def debugfs_check(exam: Examination) -> Check:
    """KVM's debugfs counters: readable, refused by lockdown, or absent."""
    probe = exam.debugfs.probe()
    title = "KVM debugfs"
    if probe.reason == LOCKDOWN_REASON:
        mode = read_under(exam.env.root, "sys/kernel/security/lockdown")
        shown = f" (lockdown: {selected_word(mode) or mode})" if mode else ""
        refused = probe.detail.get("refused", "").split(", ")
        # The counters kvmtop would use first, then how many more.
        key = [n for n in ("exits", "halt_exits", "io_exits", "mmio_exits") if n in refused]
        return Check(
            "debugfs",
            WARN,
            title,
            f"kernel lockdown{shown}: {len(refused)} cumulative KVM counters refused "
            f"with EPERM ({', '.join(key or refused[:4])}, ...); gauges still read "
            f"({probe.detail.get('readable', 'none')})",
            "lockdown cannot be lifted at run time (boot without Secure Boot / "
            "lockdown= or use libvirt >= 8.9 with QEMU >= 7.1: KVM binary stats are "
            "not subject to lockdown)",
        )
    if not probe.available:
        fix = None
        if "not mounted" in (probe.reason or ""):
            fix = (
                "mount -t debugfs none /sys/kernel/debug (kvmtop mounts it itself when run as root)"
            )
        elif "module not loaded" in (probe.reason or ""):
            fix = "modprobe kvm_intel or kvm_amd"
        return Check("debugfs", WARN, title, probe.reason or "unavailable", fix)
    return Check(
        "debugfs", OK, title, f"cumulative counters readable ({probe.detail.get('path', '')})"
    )


def tracefs_check(exam: Examination) -> Check:
    """The KVM tracepoints that count exits by reason."""
    probe = exam.trace_probe = exam.tracepoints.probe()
    title = "KVM tracepoints (exit reasons)"
    if probe.available:
        return Check(
            "tracepoints",
            OK,
            title,
            f"{probe.detail.get('counters_per_vcpu', '?')} counters per vCPU, ISA "
            f"{probe.detail.get('isa', '?')}, tracefs {probe.detail.get('tracefs', '?')}",
        )
    reason = probe.reason or "unavailable"
    fix = None
    if "tracefs not mounted" in reason:
        fix = "mount -t tracefs none /sys/kernel/tracing (kvmtop mounts it as root)"
    elif "module not loaded" in reason:
        fix = "modprobe kvm_intel or kvm_amd"
    return Check("tracepoints", WARN, title, reason, fix)


def paranoid_check(exam: Examination) -> Check:
    """Whether perf_event_paranoid lets this user count tracepoints."""
    raw = read_under(exam.env.root, "proc/sys/kernel/perf_event_paranoid")
    title = "perf_event_paranoid"
    if raw is None or not raw.lstrip("-").isdigit():
        return Check(
            "perf_event_paranoid",
            SKIP,
            title,
            "/proc/sys/kernel/perf_event_paranoid absent (no CONFIG_PERF_EVENTS?)",
        )
    value = int(raw)
    # kernel/events/core.c perf_allow_tracepoint(): unprivileged tracepoint events
    # need paranoid <= -1; CAP_PERFMON (Linux 5.8) or CAP_SYS_ADMIN bypass it.
    if exam.env.euid == 0:
        return Check(
            "perf_event_paranoid",
            OK,
            title,
            f"{value} (root bypasses it with CAP_PERFMON/CAP_SYS_ADMIN)",
        )
    if value > -1:
        return Check(
            "perf_event_paranoid",
            WARN,
            title,
            f"{value}: unprivileged processes cannot count KVM tracepoints",
            "run as root or with CAP_PERFMON, or sysctl kernel.perf_event_paranoid=-1",
        )
    return Check("perf_event_paranoid", OK, title, f"{value}: tracepoints allowed")


def kvm_exit_check(exam: Examination) -> Check:
    """Count kvm:kvm_exit on one running KVM guest against KVM's own exit count."""
    title = "kvm:kvm_exit tracepoint"
    cid = "kvm_exit"
    kvm = [
        g
        for g in exam.guests
        if g.state == "running" and g.accel == "kvm" and any(v.tid for v in g.vcpus)
    ]
    if exam.trace_probe is None or not exam.trace_probe.available:
        return Check(cid, SKIP, title, "not measured: tracepoints unavailable")
    if not kvm or exam.env.measure_s <= 0:
        return Check(cid, SKIP, title, "not measured: no running KVM guest with known vCPU threads")
    failures = []
    for guest in kvm:  # the next one when a guest goes away meanwhile
        try:
            before, after = _count_exits(exam, guest)
            break
        except CollectorError as exc:
            failures.append(f"{guest.name}: {exc}")
    else:
        return Check(cid, SKIP, title, f"not measured ({'; '.join(failures)})")
    traced, exits = (_delta(before, after, "trace"), _delta(before, after, "exits"))
    silent = kvm_exit_silent(traced, exits)
    if silent is None:
        return Check(
            cid,
            SKIP,
            title,
            f"not measured on {guest.name}: KVM's own exit "
            "counter is unknown (no binary stats, debugfs refused)",
        )
    if silent:
        return Check(
            cid,
            WARN,
            title,
            f"silent: 0 events on {guest.name} in {exam.env.measure_s:g} s while KVM "
            f"counted {exits:.0f} exits (PVM or another exit path that bypasses "
            "VMX/SVM): exits split by category from binary stats and kvm_pio / "
            "kvm_userspace_exit, not by hardware reason",
            "none on this host: a property of the hypervisor module "
            f"({', '.join(_kvm_modules(exam.env.root)) or 'kvm'})",
        )
    return Check(cid, OK, title, f"{traced:.0f} events on {guest.name} in {exam.env.measure_s:g} s")


def _count_exits(
    exam: Examination, guest: GuestSample
) -> tuple[dict[str, float], dict[str, float]]:
    """Exits by tracepoint and by KVM's counter, before and after `measure_s`."""
    exam.tracepoints.attach(guest.uuid, [v.tid for v in guest.vcpus if v.tid])
    try:
        first = _exit_counts(exam, guest.uuid, 0)
        time.sleep(exam.env.measure_s)
        second = _exit_counts(exam, guest.uuid, 1)
    finally:
        exam.tracepoints.detach(guest.uuid)
    return first, second


def _exit_counts(exam: Examination, uuid: str, tick: int) -> dict[str, float]:
    guests = exam.sched.enrich(exam.libvirt.collect(tick))
    g = next((g for g in guests if g.uuid == uuid), None)
    if g is None:
        raise CollectorError("the guest went away")
    traced = exam.tracepoints.enrich([g])[0]
    out: dict[str, float] = {}
    total = traced.exit_reasons.get("kvm_exit:total")
    if total is not None:
        out["trace"] = total
    sums = [v.kvm.get("exits.sum") for v in g.vcpus]
    known = [s for s in sums if s is not None]
    if known:
        out["exits"] = sum(known)
    elif "exits" in g.debugfs:
        out["exits"] = g.debugfs["exits"]
    return out


def _delta(before: dict[str, float], after: dict[str, float], key: str) -> float | None:
    if key not in before or key not in after or after[key] < before[key]:
        return None
    return after[key] - before[key]


def _kvm_modules(root: Path) -> list[str]:
    try:
        return sorted(p.name for p in (root / "sys/module").iterdir() if p.name.startswith("kvm_"))
    except OSError:
        return []
