"""KVM internals of a guest over an interval: exits by source, tracepoints, halt polling.

Layer: model (pure). No I/O.
"""

from __future__ import annotations

import msgspec

from kvmtop.model.rates.counters import known_sum, rate
from kvmtop.model.sample import GuestSample
from kvmtop.model.units import NS_PER_S

# KVM binary-stat categories shown per guest (x86 names, arch/x86/kvm/x86.c
# kvm_vcpu_stats_desc). "exits" is the total; the rest are categories, not the
# hardware exit reasons (those need the kvm:kvm_exit tracepoint).
EXIT_CATEGORIES: tuple[str, ...] = (
    "halt_exits",
    "io_exits",
    "mmio_exits",
    "irq_exits",
    "irq_window_exits",
    "nmi_window_exits",
    "request_irq_exits",
    "signal_exits",
    "insn_emulation",
    "hypercalls",
)

EXIT_SOURCE_BINARY = "libvirt-binary-stats"
EXIT_SOURCE_DEBUGFS = "debugfs"
EXIT_SOURCE_TRACEPOINTS = "tracepoints"

TRACE_SOURCE = "tracepoints"
"""`SourceStatus.name` of per-reason tracing. Its detail names the guests traced
(TRACE_ATTACHED: UUIDs joined by ", ") and the perf counters open (TRACE_FDS); its
reason says why a guest asked for could not be traced."""
TRACE_ATTACHED = "attached"
TRACE_FDS = "fds"

NA_KVM_EXIT_SILENT = (
    "kvm:kvm_exit silent on this host (PVM?); exits split by category from binary stats "
    "and kvm_pio/kvm_userspace_exit"
)
NA_NO_EXIT_SPLIT = (
    "no source splits exits (no KVM binary stats, debugfs counters refused or absent, "
    "per-reason tracing off)"
)

HALT_POLL_HINT_MIN_PCT = 1.0
"""[H] Failed halt polling below this share of one core is not worth a hint."""

# The categories that count one per exit. insn_emulation counts emulated
# instructions, which can be many per exit when KVM emulates a whole block
# (invalid guest state on VMX, real mode under PVM: about 5 per port write on the
# lab's port-I/O probe), so it is shown as a category but not used to split exits.
EXIT_SPLIT_CATEGORIES: tuple[str, ...] = tuple(c for c in EXIT_CATEGORIES if c != "insn_emulation")

# A category whose binary stat stays 0 while a tracepoint counts the same exits:
# under PVM, port I/O goes through the instruction emulator, which fires kvm_pio
# but never bumps io_exits (only the VMX/SVM I/O exit handlers do, arch/x86/kvm/
# vmx/vmx.c handle_io, svm/svm.c io_interception). mmio_exits counts MMIO exits to
# userspace, which kvm_userspace_exit reports by reason.
_CATEGORY_FROM_TRACE: tuple[tuple[str, str], ...] = (
    ("io_exits", "kvm_pio:total"),
    ("mmio_exits", "kvm_userspace_exit:MMIO"),
)


def kvm_exit_silent(kvm_exit: float | None, exits: float | None) -> bool | None:
    """Whether the kvm:kvm_exit tracepoint stays silent while KVM counts exits.

    Args:
        kvm_exit: kvm_exit events counted over an interval (any unit: count or rate).
        exits: KVM's own exit counter (binary stats or debugfs) over the same interval.

    Returns:
        True when the tracepoint saw nothing while exits happened (measured on the
        PVM test machine, Linux 6.18: 0 kvm_exit events against ~3,600 exits/s),
        False when it fired or nothing exited, None when either side is unknown.
    """
    if kvm_exit is None or exits is None:
        return None
    return kvm_exit == 0 and exits > 0


class KvmRates(msgspec.Struct, frozen=True, gc=False):
    """What `derive_kvm` adds to a guest's rates."""

    exits_per_s: float | None
    exit_categories: dict[str, float]
    exits_by_reason: dict[str, float] | None
    exit_source: str | None
    tracepoint_rates: dict[str, float]
    halt_poll_cpu_pct: float | None
    halt_poll_hint: str | None


# The KVM stats `derive_kvm` reads, with their binary-stats key (cumulative: "sum").
_KVM_STATS: tuple[tuple[str, str], ...] = tuple(
    (name, f"{name}.sum")
    for name in ("exits", *EXIT_CATEGORIES, "halt_poll_success_ns", "halt_poll_fail_ns")
)


def _vm_stat_rates(
    prev: GuestSample, cur: GuestSample, dt_s: float
) -> tuple[dict[str, float], str | None]:
    """Rates of the `_KVM_STATS` summed over vCPUs (binary stats), else debugfs.

    Returns:
        {name: per second} for the names known on both sides, and the source used.
    """
    before = {v.index: v.kvm for v in prev.vcpus}
    pairs = [(before[v.index], v.kvm) for v in cur.vcpus if v.index in before]
    binary: dict[str, float] = {}
    if len(pairs) == 1:
        # One vCPU (most small guests): its rates are the sums.
        p, c = pairs[0]
        binary = {
            name: r
            for name, key in _KVM_STATS
            if (r := rate(p.get(key), c.get(key), dt_s)) is not None
        }
    else:
        for name, key in _KVM_STATS:
            total = known_sum([rate(p.get(key), c.get(key), dt_s) for p, c in pairs])
            if total is not None:
                binary[name] = total
    if binary:
        return binary, EXIT_SOURCE_BINARY
    # debugfs vCPU stats are already summed over the VM's vCPUs (kvm_main.c
    # kvm_get_stat_per_vcpu).
    debugfs = {
        name: r
        for name, _ in _KVM_STATS
        if (r := rate(prev.debugfs.get(name), cur.debugfs.get(name), dt_s)) is not None
    }
    return debugfs, (EXIT_SOURCE_DEBUGFS if debugfs else None)


def derive_kvm(prev: GuestSample, cur: GuestSample, dt_s: float, na: dict[str, str]) -> KvmRates:
    """Exits (total, categories, by reason), tracepoint rates and halt polling.

    Exits come from the best source present: libvirt's KVM binary stats, else
    debugfs, else the kvm_exit tracepoint. `exits_by_reason` holds hardware exit
    reasons when per-reason kvm_exit counters fire; otherwise the exit categories
    (completed from tracepoints where a category's stat stays 0, see
    _CATEGORY_FROM_TRACE) plus "other" for exits no category covers.
    """
    stats, source = _vm_stat_rates(prev, cur, dt_s)
    exits = stats.get("exits")
    categories = {c: stats[c] for c in EXIT_CATEGORIES if c in stats}
    # Untraced (no tracepoint counts: the usual case), the three tracepoint dicts are
    # empty; they are not built by comprehensions over nothing for every KVM guest.
    trace = (
        {
            key: r
            for key, value in cur.exit_reasons.items()
            if (r := rate(prev.exit_reasons.get(key), value, dt_s)) is not None
        }
        if cur.exit_reasons
        else {}
    )
    kvm_exit_total = trace.get("kvm_exit:total")
    silent = kvm_exit_silent(kvm_exit_total, exits)
    reasons = (
        {
            k.partition(":")[2]: v
            for k, v in trace.items()
            if k.startswith("kvm_exit:") and k != "kvm_exit:total"
        }
        if trace
        else {}
    )

    if exits is None and kvm_exit_total:
        exits, source = kvm_exit_total, EXIT_SOURCE_TRACEPOINTS
    by_reason: dict[str, float] | None = None
    if reasons and kvm_exit_total:
        by_reason = {r: v for r, v in reasons.items() if v > 0}
        # Exits with flag bits (VMX FAILED_VMENTRY) or reasons missing from the
        # table match no `exit_reason == N` filter.
        unmatched = kvm_exit_total - sum(reasons.values())
        if unmatched > 0:
            by_reason["other"] = unmatched
        source = EXIT_SOURCE_TRACEPOINTS
    elif categories:
        by_reason = {c: categories[c] for c in EXIT_SPLIT_CATEGORIES if categories.get(c)}
        for category, key in _CATEGORY_FROM_TRACE:
            if not by_reason.get(category) and trace.get(key):
                by_reason[category] = trace[key]
        if exits is not None and exits - sum(by_reason.values()) > 0:
            by_reason["other"] = exits - sum(by_reason.values())
    if silent:
        na["exits_by_reason"] = NA_KVM_EXIT_SILENT
    elif by_reason is None:
        na["exits_by_reason"] = NA_NO_EXIT_SPLIT

    poll_ok = stats.get("halt_poll_success_ns")
    poll_fail = stats.get("halt_poll_fail_ns")
    poll_pct = known_sum((poll_ok, poll_fail))
    poll_pct = None if poll_pct is None else 100.0 * poll_pct / NS_PER_S
    hint = None
    if poll_fail is not None and poll_fail > (poll_ok or 0.0):
        fail_pct = 100.0 * poll_fail / NS_PER_S
        if fail_pct >= HALT_POLL_HINT_MIN_PCT:
            hint = (
                f"halt polling mostly fails: {fail_pct:.1f}% of a core polled and then "
                "slept anyway; lower the kvm module's halt_poll_ns "
                "(/sys/module/kvm/parameters/halt_poll_ns) or load cpuidle-haltpoll in "
                "the guest, which turns host polling off for it"
            )
    return KvmRates(
        exits_per_s=exits,
        exit_categories=categories,
        exits_by_reason=by_reason,
        exit_source=source,
        tracepoint_rates=(
            {k: v for k, v in trace.items() if v > 0 or k.endswith(":total")} if trace else {}
        ),
        halt_poll_cpu_pct=poll_pct,
        halt_poll_hint=hint,
    )
