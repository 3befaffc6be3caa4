"""Per-reason KVM exit counts from perf tracepoints, for the guests asked for.

Layer: collectors (I/O). Never imports textual.

Like the kernel's tools/kvm/kvm_stat, every count is a counting-mode perf event on
a KVM tracepoint, one per (tracepoint × filter value): `kvm:kvm_exit` with
`exit_reason == N` for each reason of the running kernel's table, read from the
event's `format` file (`kvmtop.collectors.tracefs`), `kvm:kvm_userspace_exit`
split by `reason`, and plain or lightly filtered counts of `kvm_pio`,
`kvm_emulate_insn`, `kvm_vcpu_wakeup` and others. Unlike kvm_stat, events are
opened per vCPU thread of the guests attached (the detail screen, a recording)
and only while attached, so the cost is bounded: about 120 fds per vCPU.

Counts are cumulative since attach, keyed "<tracepoint>:<name>" in
`GuestSample.exit_reasons` ("kvm_exit:HLT", "kvm_userspace_exit:IO",
"kvm_pio:write", "kvm_exit:total"). Whether `kvm_exit` is silent while the binary
stats show exits (a PVM host) is judged by the model, from these facts.
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from msgspec.structs import replace

from kvmtop.collectors import tracefs
from kvmtop.collectors.base import CollectorError, Probe
from kvmtop.collectors.host import read_text
from kvmtop.collectors.kvmdebugfs import mount_pseudo_fs
from kvmtop.collectors.perf import OpenFn, PerfError, PerfGroup
from kvmtop.model.rates.kvm import TRACE_ATTACHED, TRACE_FDS, TRACE_SOURCE
from kvmtop.model.sample import GuestSample

# arch/x86/kvm/trace.h: the `isa` field of kvm_exit and kvm_nested_vmexit.
KVM_ISA_VMX = 1
KVM_ISA_SVM = 2
# The kernel modules that provide each (arch/x86/kvm/Makefile).
_ISA_MODULES = (("kvm_intel", KVM_ISA_VMX), ("kvm_amd", KVM_ISA_SVM))

DEFAULT_MAX_FDS = 8192
"""Upper bound on perf fds open at once, over all attached guests."""
_FD_HEADROOM = 64
"""Descriptors left free for everything else when raising RLIMIT_NOFILE."""

Clause = tuple[str, str, int]
"""(field, operator, value) of one ftrace filter predicate."""


@dataclass(frozen=True, slots=True)
class Split:
    """How one tracepoint is counted.

    Attributes:
        event: tracepoint name under events/kvm/.
        total: also count every occurrence (key "<event>:total").
        table_field: one counter per entry of this field's `__print_symbolic` table.
        guard: predicates ANDed into every table counter.
        strip: prefix removed from table names ("KVM_EXIT_IO" → "IO").
        extra: further named counters, each a conjunction of predicates.
    """

    event: str
    total: bool = False
    table_field: str | None = None
    guard: tuple[Clause, ...] = ()
    strip: str = ""
    extra: tuple[tuple[str, tuple[Clause, ...]], ...] = ()


# Field names and meanings from the 6.18 format files (tests/fixtures/tracefs) and
# arch/x86/kvm/trace.h, include/trace/events/kvm.h.
SPLITS: tuple[Split, ...] = (
    Split("kvm_exit", total=True, table_field="exit_reason"),
    # print fmt: errno < 0 prints "restart" for -EINTR (-4) and "error" otherwise,
    # the reason only when errno >= 0.
    Split(
        "kvm_userspace_exit",
        table_field="reason",
        guard=(("errno", ">=", 0),),
        strip="KVM_EXIT_",
        extra=(
            ("restart", (("errno", "==", -errno.EINTR),)),
            ("error", (("errno", "<", 0), ("errno", "!=", -errno.EINTR))),
        ),
    ),
    Split(
        "kvm_pio", total=True, extra=(("read", (("rw", "==", 0),)), ("write", (("rw", "!=", 0),)))
    ),
    Split("kvm_mmio", table_field="type"),
    Split("kvm_emulate_insn", total=True, extra=(("failed", (("failed", "!=", 0),)),)),
    Split(
        "kvm_vcpu_wakeup",
        total=True,
        extra=(("wait", (("waited", "!=", 0),)), ("poll", (("waited", "==", 0),))),
    ),
    Split("kvm_msr", extra=(("read", (("write", "==", 0),)), ("write", (("write", "!=", 0),)))),
    Split("kvm_cpuid", total=True),
    Split("kvm_hypercall", total=True),
    Split("kvm_page_fault", total=True),
    Split("kvm_inj_virq", total=True),
)


@dataclass(frozen=True, slots=True)
class Counter:
    """One perf event to open on every traced thread."""

    key: str
    event_id: int
    filter: str | None = None


def _render(clauses: Iterable[Clause], fields: Mapping[str, tracefs.Field]) -> str | None:
    """The ftrace filter text, or None when a field does not exist on this kernel."""
    parts = []
    for name, op, value in clauses:
        f = fields.get(name)
        if f is None:
            return None
        parts.append(f"{name} {op} {tracefs.filter_literal(f, value)}")
    return " && ".join(parts)


def build_counters(
    formats: Mapping[str, tracefs.EventFormat], isa: int | None, splits: Sequence[Split] = SPLITS
) -> tuple[tuple[Counter, ...], list[str]]:
    """The counters to open per thread, from the running kernel's format files.

    Args:
        formats: parsed format files by event name (absent events are skipped).
        isa: the host's KVM_ISA_* value, selecting between tables guarded by `isa`
            (VMX or SVM reasons); None when unknown, which leaves guarded tables out.
        splits: what to count.

    Returns:
        The counters, and notes on what was left out and why.

    A VMX table is masked with 0xffff (the basic exit reason); an `exit_reason == N`
    filter compares the whole field, so exits with flag bits set (FAILED_VMENTRY)
    are only in "kvm_exit:total".
    """
    counters: list[Counter] = []
    notes: list[str] = []
    for split in splits:
        fmt = formats.get(split.event)
        if fmt is None:
            notes.append(f"{split.event}: tracepoint absent")
            continue
        named: dict[str, str | None] = {"total": None} if split.total else {}
        if split.table_field is not None:
            named.update(_table_filters(split, fmt, isa, notes))
        for name, clauses in split.extra:
            flt = _render(clauses, fmt.fields)
            if flt is None:
                notes.append(f"{split.event}:{name}: field missing on this kernel")
            else:
                named[name] = flt
        counters += [Counter(f"{fmt.name}:{n}", fmt.id, flt) for n, flt in named.items()]
    return tuple(counters), notes


def _table_filters(
    split: Split, fmt: tracefs.EventFormat, isa: int | None, notes: list[str]
) -> dict[str, str]:
    """name → filter for each entry of the symbolic table(s) `split` counts by."""
    assert split.table_field is not None
    tables = fmt.tables_for(split.table_field)
    chosen = [
        t for t in tables if t.condition is None or (isa is not None and t.condition.holds(isa))
    ]
    if not tables:
        notes.append(f"{split.event}: no symbolic table for {split.table_field}")
    elif not chosen:
        notes.append(
            f"{split.event}: host ISA unknown (neither kvm_intel nor kvm_amd loaded), "
            f"per-{split.table_field} counters off"
        )
    out: dict[str, str] = {}
    for table in chosen:
        guard = list(split.guard)
        if table.condition is not None:
            guard.append((table.condition.field, table.condition.op, table.condition.value))
        for value, name in table.values.items():
            flt = _render([*guard, (split.table_field, "==", value)], fmt.fields)
            if flt is None:
                notes.append(f"{split.event}: field missing for {name}")
                continue
            label = name.removeprefix(split.strip)
            out[label if label not in out else f"{label}#{value:#x}"] = flt
    return out


def detect_isa(root: Path) -> tuple[int | None, str]:
    """The host's KVM ISA from the loaded vendor module, and a description."""
    module = root / "sys" / "module"
    for name, isa in _ISA_MODULES:
        if (module / name).is_dir():
            return isa, name
    try:
        loaded = sorted(p.name for p in module.iterdir() if p.name.startswith("kvm"))
    except OSError:
        loaded = []
    return None, f"loaded: {', '.join(loaded) or 'no kvm module'}"


@dataclass
class _Trace:
    """Perf groups open for one attached guest."""

    requested: frozenset[int]
    pid: int | None = None
    groups: dict[int, PerfGroup] = field(default_factory=dict)
    retired: dict[str, int] = field(default_factory=dict)
    """Final counts of threads that went away, so totals stay cumulative."""


class TracepointCollector:
    """Counts KVM tracepoints per vCPU thread of attached guests (a GuestEnricher).

    Args:
        root: directory holding `sys/` (tracefs, modules); a fake tree in tests.
        mount: mount tracefs when absent (only when `root` is "/"); default: as root.
        isa: force the KVM_ISA_* value (tests; hosts where detection fails).
        max_fds: most perf fds open at once over all guests.
        splits: what to count (default SPLITS: about 120 counters per vCPU).
        open_fn: the perf_event_open call (tests inject failures).
    """

    name = TRACE_SOURCE

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        mount: bool | None = None,
        isa: int | None = None,
        max_fds: int = DEFAULT_MAX_FDS,
        splits: Sequence[Split] = SPLITS,
        open_fn: OpenFn | None = None,
    ) -> None:
        self._root = root
        self._mount = (os.geteuid() == 0) if mount is None else mount
        self._isa_override = isa
        self._max_fds = max_fds
        self._splits = tuple(splits)
        self._open_fn = open_fn
        self._lock = threading.Lock()
        self._counters: tuple[Counter, ...] | None = None
        self._detail: dict[str, str] = {}
        self._traces: dict[str, _Trace] = {}
        self.errors: dict[str, str] = {}
        """Per attached key, why tracing stopped for it during `enrich`."""

    def paths_read(self) -> list[str]:
        """Glob patterns (relative to root) of every file this collector reads."""
        return [
            "sys/kernel/tracing/events/kvm/*/format",
            "sys/kernel/debug/tracing/events/kvm/*/format",
            "sys/module/kvm*",
        ]

    # ------------------------------------------------------------------ probe

    def _tracefs(self) -> Path:
        """The tracefs directory holding events/kvm, mounting tracefs if allowed.

        Raises:
            CollectorError: tracefs is unavailable or has no KVM events.
        """
        candidates = (
            self._root / "sys/kernel/tracing",
            self._root / "sys/kernel/debug/tracing",  # before tracefs (Linux 4.1)
        )
        for path in candidates:
            try:
                if (path / "events").is_dir():
                    break
            except PermissionError:  # fs/tracefs/inode.c: TRACEFS_DEFAULT_MODE 0700
                raise CollectorError(f"{path}: permission denied (tracefs needs root)") from None
        else:
            path = candidates[0]
            if not (self._mount and self._root == Path("/") and path.is_dir()):
                raise CollectorError(f"tracefs not mounted (mount -t tracefs none {path})")
            failure = mount_pseudo_fs("tracefs", path)
            if failure is not None:
                raise CollectorError(f"tracefs not mounted; {failure}")
        if not (path / "events/kvm").is_dir():
            raise CollectorError(f"{path}/events/kvm absent (kvm module not loaded)")
        return path

    def _load(self) -> tuple[Counter, ...]:
        """Parse the format files and check the counters on our own thread.

        Each counter is opened once on the calling thread (tid 0), which proves
        perf_event_open is permitted and drops counters whose filter this kernel
        rejects (EINVAL) instead of failing every attach.

        Raises:
            CollectorError: tracefs unusable; PerfError: perf not permitted.
        """
        path = self._tracefs() / "events/kvm"
        formats: dict[str, tracefs.EventFormat] = {}
        unreadable: list[str] = []
        for split in self._splits:
            try:
                formats[split.event] = tracefs.parse_format(
                    read_text(path / split.event / "format")
                )
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                unreadable.append(f"{split.event}: unreadable format ({e})")
        isa, isa_text = detect_isa(self._root)
        if self._isa_override is not None:
            isa, isa_text = self._isa_override, f"forced; detected {isa_text}"
        counters, notes = build_counters(formats, isa, self._splits)
        notes = unreadable + notes
        usable: list[Counter] = []
        self._ensure_nofile(len(counters))
        with PerfGroup(0, open_fn=self._open_fn) as group:
            for counter in counters:
                try:
                    group.add(counter.event_id, counter.filter)
                except PerfError as e:
                    if e.errno != errno.EINVAL or counter.filter is None:
                        raise
                    notes.append(f"{counter.key}: filter {counter.filter!r} rejected")
                    continue
                usable.append(counter)
        self._detail = {
            "tracefs": str(path.parent.parent),
            "isa": {KVM_ISA_VMX: "vmx", KVM_ISA_SVM: "svm"}.get(isa or 0, "unknown")
            + f" ({isa_text})",
            "events": ", ".join(sorted(formats)),
            "counters_per_vcpu": str(len(usable)),
        }
        if notes:
            self._detail["notes"] = "; ".join(notes)
        return tuple(usable)

    def probe(self) -> Probe:
        """tracefs mounted (or mountable), perf permitted, which KVM events exist.

        The counter list is rebuilt only while no guest is attached, since open
        groups return their counts in the order of the list they were opened with.
        """
        with self._lock:
            try:
                if self._counters is None or not self._traces:
                    self._counters = self._load()
            except CollectorError as e:
                self._counters = None
                return Probe(self.name, False, str(e))
            detail = dict(self._detail)
            detail[TRACE_ATTACHED] = ", ".join(self._traces)
            detail[TRACE_FDS] = str(self._open_fds())
            return Probe(self.name, True, None, detail)

    # ------------------------------------------------------------------ fds

    def _open_fds(self) -> int:
        return sum(len(g) for t in self._traces.values() for g in t.groups.values())

    def open_fds(self) -> int:
        """Perf fds open right now over all attached guests."""
        with self._lock:
            return self._open_fds()

    @staticmethod
    def _ensure_nofile(extra: int) -> None:
        """Raise the RLIMIT_NOFILE soft limit so `extra` more fds fit (as kvm_stat does).

        Raises:
            PerfError: the hard limit is too low (EMFILE).
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = len(os.listdir("/proc/self/fd")) + extra + _FD_HEADROOM
        if soft != resource.RLIM_INFINITY and want > soft:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < want:
                raise PerfError(
                    f"tracing needs {extra} more fds but RLIMIT_NOFILE hard limit is {hard} "
                    "(raise it: ulimit -Hn, or LimitNOFILE=)",
                    errno.EMFILE,
                )

    # ------------------------------------------------------------------ attach

    def attach(self, key: str, tids: Iterable[int] = ()) -> None:
        """Start counting for one guest.

        Args:
            key: the guest's UUID, or its QEMU pid as a decimal string.
            tids: its vCPU thread ids; may be empty, in which case the tids come from
                the guest's `VcpuSample.tid` at the next `enrich`. Later changes of
                the guest's vCPU threads (hotplug, restart) are followed there too.

        Raises:
            CollectorError: tracefs unusable; PerfError: perf refused (the guest is
                left detached) or the fd budget would be exceeded.
        """
        with self._lock:
            if self._counters is None:
                self._counters = self._load()
            trace = self._traces.setdefault(key, _Trace(requested=frozenset(tids)))
            trace.requested = frozenset(tids)
            self.errors.pop(key, None)
            if trace.requested:
                try:
                    self._sync(trace, trace.requested)
                except PerfError:
                    self._close(self._traces.pop(key))
                    raise

    def detach(self, key: str) -> None:
        """Stop counting for a guest and close its fds (no-op when not attached).

        Closing can take a good part of a second: when the last perf event of a
        tracepoint goes, the kernel unregisters its probe and waits for an RCU grace
        period (kernel/tracepoint.c tracepoint_synchronize_unregister), much less
        while other events keep them registered
        (bench/results/measurements.md#tracepoint-detach-time). So the fds are closed
        outside the lock, and callers should detach off the UI thread.
        """
        with self._lock:
            trace = self._traces.pop(key, None)
            self.errors.pop(key, None)
        if trace is not None:
            self._close(trace)

    def attached(self) -> tuple[str, ...]:
        """Keys of the guests being traced."""
        with self._lock:
            return tuple(self._traces)

    def _sync(self, trace: _Trace, tids: frozenset[int]) -> None:
        """Open groups for new threads; retire groups of threads no longer wanted."""
        assert self._counters is not None
        for tid in set(trace.groups) - tids:
            group = trace.groups.pop(tid)
            try:
                self._accumulate(trace.retired, group.read())
            finally:
                group.close()
        new = sorted(tids - set(trace.groups))
        if not new:
            return
        needed = len(self._counters) * len(new)
        if self._open_fds() + needed > self._max_fds:
            raise PerfError(
                f"tracing budget exceeded: {needed} more fds needed, "
                f"{self._open_fds()} of {self._max_fds} in use",
                errno.EMFILE,
            )
        self._ensure_nofile(needed)
        for tid in new:
            group = PerfGroup(tid, open_fn=self._open_fn)
            try:
                for counter in self._counters:
                    group.add(counter.event_id, counter.filter)
                group.enable()
            except PerfError as e:
                group.close()
                if e.errno == errno.ESRCH:
                    continue  # the thread exited meanwhile; the next enrich catches up
                raise
            trace.groups[tid] = group

    def _accumulate(self, totals: dict[str, int], values: Sequence[int]) -> None:
        assert self._counters is not None
        for counter, value in zip(self._counters, values, strict=True):
            totals[counter.key] = totals.get(counter.key, 0) + value

    @staticmethod
    def _close(trace: _Trace) -> None:
        for group in trace.groups.values():
            group.close()
        trace.groups.clear()

    # ------------------------------------------------------------------ enrich

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        """Return `guests` with `exit_reasons` filled for the attached ones.

        A guest whose QEMU pid changed starts again from zero (the model drops the
        interval anyway). A perf failure stops tracing that guest: its fds are
        closed, `errors[key]` says why, and the guest is returned unchanged.
        """
        with self._lock:
            if not self._traces:
                return tuple(guests)
            return tuple(self._enrich(g) for g in guests)

    def _enrich(self, guest: GuestSample) -> GuestSample:
        key = guest.uuid if guest.uuid in self._traces else str(guest.pid)
        trace = self._traces.get(key)
        if trace is None or key in self.errors:
            return guest
        if trace.pid is not None and guest.pid is not None and guest.pid != trace.pid:
            self._close(trace)
            trace.retired.clear()
        trace.pid = guest.pid
        tids = frozenset(v.tid for v in guest.vcpus if v.tid) or trace.requested
        totals = dict(trace.retired)
        try:
            self._sync(trace, tids)
            for group in trace.groups.values():
                self._accumulate(totals, group.read())
        except PerfError as e:
            self._close(trace)
            self.errors[key] = str(e)
            return guest
        if not trace.groups and not trace.retired:
            return guest
        return replace(guest, exit_reasons=totals)

    def close(self) -> None:
        """Close every perf fd of every attached guest (slow, like `detach`)."""
        with self._lock:
            traces = list(self._traces.values())
            self._traces.clear()
            self.errors.clear()
        for trace in traces:
            self._close(trace)
