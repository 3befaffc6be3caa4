"""Doctor's first stage: the data sources (privileges, host /proc, libvirt and its
version's fields) and each running guest (accelerator, KVM statistics, balloon).

Layer: beside the sampler (reads collectors; never imports textual).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.libvirt.connect import LIBVIRT_MISSING
from kvmtop.collectors.libvirt.domxml import DomainInfo
from kvmtop.diagnosis.checks import (
    BALLOON_PERIOD_HINT_S,
    FAIL,
    LIBVIRT_DELAY,
    LIBVIRT_VM_GROUP,
    OK,
    QEMU_QUERY_STATS,
    WARN,
    Check,
    Examination,
    dotted,
    version,
)
from kvmtop.model.sample import GuestSample


def privileges_check(exam: Examination) -> Check:
    """Root, or what a user without it misses."""
    if exam.env.euid == 0:
        return Check("privileges", OK, "privileges", "running as root")
    return Check(
        "privileges",
        WARN,
        "privileges",
        # proc(5): /proc/PID/task/TID/schedstat is 0444 (steal works for anyone);
        # /proc/PID/fd is 0500 and debugfs/tracefs mount 0700 (fs/debugfs/inode.c).
        f"not root (uid {exam.env.euid}): libvirt needs the libvirt group; KVM "
        "debugfs, tracepoints and other users' /proc/PID/fd (finding unmanaged VMs) need root",
        "run as root (sudo kvmtop ...), or add the user to the libvirt group for "
        "libvirt stats alone",
    )


def host_checks(exam: Examination) -> Iterator[Check]:
    """Host /proc (required), run-queue delay, PSI and other baseline gaps."""
    probe = exam.host.probe()
    if not probe.available:
        yield Check(
            "host",
            FAIL,
            "host /proc",
            probe.reason or "unusable",
            "kvmtop needs procfs: mount -t proc proc /proc",
            required=True,
        )
        return
    exam.host_sample = sample = exam.host.collect()
    yield Check(
        "host",
        OK,
        "host /proc",
        f"kernel {sample.kernel or '?'}, {sample.ncpu} CPUs, "
        f"{(sample.mem_total_bytes or 0) / 2**30:.1f} GiB RAM",
    )
    gaps = exam.host.last_gaps

    def gap(prefix: str) -> str:
        return next((g for g in gaps if g.startswith(prefix)), f"{prefix} unreadable")

    if sample.run_delay_ns is None:
        yield Check(
            "schedstat",
            WARN,
            "host run-queue delay",
            gap("/proc/schedstat"),
            "rebuild the kernel with CONFIG_SCHEDSTATS=y (no run-time switch); guest "
            "steal is unaffected (libvirt vcpu.N.delay, /proc/PID/task/TID/schedstat)",
        )
    else:
        yield Check("schedstat", OK, "host run-queue delay", "/proc/schedstat present")
    if not sample.pressure:
        yield Check(
            "psi",
            WARN,
            "host pressure (PSI)",
            gap("/proc/pressure"),
            "boot with psi=1 (kernel with CONFIG_PSI=y, Linux >= 4.20)",
        )
    else:
        yield Check(
            "psi", OK, "host pressure (PSI)", "/proc/pressure/" + ",".join(sorted(sample.pressure))
        )
    other = [g for g in gaps if not g.startswith(("/proc/schedstat", "/proc/pressure"))]
    if other:
        yield Check("host.gaps", WARN, "host baseline gaps", "; ".join(other))


def libvirt_checks(exam: Examination) -> Iterator[Check]:
    """The libvirt connection, the fields its version has, and its domain stats
    (which fill `exam.guests`)."""
    probe = exam.libvirt_probe = exam.libvirt.probe()
    uri = exam.env.uri or "(default URI)"
    if not probe.available:
        reason = probe.reason or "unavailable"
        if reason == LIBVIRT_MISSING:
            fix = (
                "pip install 'kvmtop[libvirt]' (builds libvirt-python: needs "
                "libvirt-dev and pkg-config, or the distro's python3-libvirt)"
            )
        elif "permission denied" in reason:
            fix = "run as root, or add the user to the libvirt group"
        else:
            fix = (
                f"start the libvirt daemon (libvirtd, or virtqemud with the modular "
                f"daemons) or pass another URI with -c (now {uri})"
            )
        status = FAIL if exam.env.uri_explicit else WARN
        yield Check("libvirt", status, "libvirt", reason, fix, required=exam.env.uri_explicit)
        return
    d = probe.detail
    yield Check(
        "libvirt",
        OK,
        "libvirt",
        f"{d.get('uri', uri)}: libvirt {d.get('libvirt', '?')} "
        f"(client {d.get('libvirt_client', '?')}), {d.get('hypervisor', '?')}",
    )
    daemon = version(d.get("libvirt"))
    if daemon is not None and daemon < LIBVIRT_DELAY:
        yield Check(
            "libvirt.delay",
            WARN,
            "libvirt vcpu.N.delay",
            f"libvirt {dotted(daemon)} has no vcpu.N.delay (since "
            f"{dotted(LIBVIRT_DELAY)}): steal comes from vCPU threads' schedstat "
            "(needs root)",
            f"upgrade libvirt to >= {dotted(LIBVIRT_DELAY)}",
        )
    elif daemon is not None:
        yield Check(
            "libvirt.delay",
            OK,
            "libvirt vcpu.N.delay",
            f"libvirt {dotted(daemon)} reports vCPU delay (steal)",
        )
    qemu = version(d.get("hypervisor"))
    if daemon is not None and daemon < LIBVIRT_VM_GROUP:
        yield Check(
            "libvirt.vm_group",
            WARN,
            "KVM binary stats via libvirt",
            f"libvirt {dotted(daemon)} has no vm stats group nor vcpu.N.<stat>.sum "
            f"(since {dotted(LIBVIRT_VM_GROUP)}): exits come from debugfs (root, "
            "no lockdown) or tracepoints",
            f"upgrade libvirt to >= {dotted(LIBVIRT_VM_GROUP)} with QEMU >= "
            f"{dotted(QEMU_QUERY_STATS)}",
        )
    elif qemu is not None and qemu < QEMU_QUERY_STATS:
        yield Check(
            "libvirt.vm_group",
            WARN,
            "KVM binary stats via libvirt",
            f"QEMU {dotted(qemu)} has no query-stats (since "
            f"{dotted(QEMU_QUERY_STATS)}): libvirt cannot export KVM counters",
            f"upgrade QEMU to >= {dotted(QEMU_QUERY_STATS)}",
        )
    elif daemon is not None:
        yield Check(
            "libvirt.vm_group",
            OK,
            "KVM binary stats via libvirt",
            f"libvirt {dotted(daemon)}, {d.get('hypervisor', 'QEMU ?')}",
        )
    try:
        guests = exam.libvirt.collect(0)
    except CollectorError as exc:
        yield Check("libvirt.stats", WARN, "libvirt domain stats", str(exc))
        return
    usable = exam.sched_probe is not None and exam.sched_probe.available
    exam.guests = exam.sched.enrich(guests) if usable else guests


def guest_checks(exam: Examination) -> Iterator[Check]:
    """The guests libvirt defines, then each running guest's own checks."""
    if exam.libvirt_probe is None or not exam.libvirt_probe.available:
        return
    running = [g for g in exam.guests if g.state == "running"]
    accel = Counter(g.accel or "unknown" for g in running)
    mix = ", ".join(f"{n} {kind}" for kind, n in sorted(accel.items()))
    yield Check(
        "guests",
        OK,
        "guests",
        f"{len(exam.guests)} defined, {len(running)} running ({mix or 'none'})",
    )
    for g in sorted(running, key=lambda g: g.name):
        yield from _guest(exam, g, exam.libvirt.domain_info(g.uuid))


def _guest(exam: Examination, g: GuestSample, info: DomainInfo | None) -> Iterator[Check]:
    if g.accel == "tcg":
        yield Check(
            f"guest.accel:{g.name}",
            WARN,
            f"{g.name}: accelerator",
            "runs under QEMU TCG emulation (domain type='qemu'): no KVM counters "
            "(exits, halt polling) for it",
            "use <domain type='kvm'> where /dev/kvm with VT-x/AMD-V is available",
        )
    elif g.accel == "kvm" and not any("exits.sum" in v.kvm for v in g.vcpus):
        yield Check(
            f"guest.kvm_stats:{g.name}",
            WARN,
            f"{g.name}: KVM statistics",
            "no KVM binary stats (vcpu.N.exits.sum) from libvirt for this KVM guest",
            f"libvirt >= {dotted(LIBVIRT_VM_GROUP)} with QEMU >= "
            f"{dotted(QEMU_QUERY_STATS)}; otherwise debugfs (root, no lockdown)",
        )
    yield _balloon(exam, g, info)


def _balloon(exam: Examination, g: GuestSample, info: DomainInfo | None) -> Check:
    cid, title = f"guest.balloon:{g.name}", f"{g.name}: balloon stats"
    period_fix = (
        f"virsh dommemstat {g.name} --period {BALLOON_PERIOD_HINT_S} --live "
        f"--config (XML: <memballoon model='virtio'><stats "
        f"period='{BALLOON_PERIOD_HINT_S}'/></memballoon>)"
    )
    if info is not None and info.memballoon_model == "none":
        return Check(
            cid,
            WARN,
            title,
            "no balloon device (<memballoon model='none'/>): guest memory used/"
            "available and leak detection unavailable",
            f"virsh edit {g.name}: <memballoon model='virtio'><stats "
            f"period='{BALLOON_PERIOD_HINT_S}'/></memballoon>, then restart the guest",
        )
    last = g.balloon.last_update_s if g.balloon is not None else None
    period = info.balloon_period_s if info is not None else None
    age = exam.env.now() - last if last else None
    if not last:
        why = (
            "stats period unset: the guest's memory stats are never refreshed"
            if not period
            else f"stats period {period} s but the guest never reported (virtio_balloon "
            "driver not loaded in the guest?)"
        )
        return Check(
            cid, WARN, title, why, period_fix if not period else "load virtio_balloon in the guest"
        )
    # A live period refreshes last-update every `period` seconds; allow for
    # a slow guest and for libvirt's own balloon cadence.
    if age is not None and age > max(3 * (period or BALLOON_PERIOD_HINT_S), 30):
        return Check(
            cid,
            WARN,
            title,
            f"balloon.last-update not advancing: last report {age:.0f} s ago"
            + (f" with period {period} s" if period else ", period unset"),
            period_fix,
        )
    return Check(
        cid,
        OK,
        title,
        f"live (period {period or '?'} s, last report {age:.0f} s ago)"
        if age is not None
        else "live",
    )
