"""Per-vCPU scheduler statistics: run time and run-queue wait of QEMU vCPU threads.

Layer: collectors (I/O only). The run-queue wait (schedstat field 2) is what KVM
reports to the guest as steal, so this is the host-side steal source when libvirt
has no `vcpu.N.delay` (before 7.2) and a finer-grained one when it does.
Never imports textual.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from msgspec.structs import replace

from kvmtop.collectors import procfs
from kvmtop.collectors.base import Probe
from kvmtop.collectors.host import read_text
from kvmtop.model.sample import GuestSample, VcpuSample


@dataclass(frozen=True, slots=True)
class _Threads:
    """The vCPU threads found in one QEMU process at the last scan."""

    tids: dict[int, int]
    """vCPU index → thread id."""
    accel: str | None
    """"kvm" or "tcg" from the thread names, None when no vCPU thread was found."""
    vcpus_current: int | None
    """The guest's vCPU count at the scan; a change (hotplug) triggers a rescan."""


class SchedCollector:
    """Fills VcpuSample.tid/sched_run_ns/sched_delay_ns from /proc/PID/task/TID.

    vCPU threads are found by name and cached per QEMU pid; the cache is rebuilt when
    the pid is new, a cached thread vanished or the vCPU count changed.
    """

    name = "sched"

    def __init__(self, root: Path = Path("/")):
        """Create the collector.

        Args:
            root: directory holding `proc/` (a fake tree in tests).
        """
        self._proc = str(root).rstrip("/") + "/proc"
        self._cache: dict[int, _Threads] = {}
        self.last_gaps: tuple[str, ...] = ()
        """Guests the last `enrich()` found no vCPU threads for, one sentence each."""

    def paths_read(self) -> list[str]:
        """Glob patterns (relative to root) of every file this collector reads."""
        return [
            "proc/self/schedstat",
            "proc/[0-9]*/task/[0-9]*/comm",
            "proc/[0-9]*/task/[0-9]*/schedstat",
        ]

    def probe(self) -> Probe:
        """Check that per-task schedstat files exist and parse (CONFIG_SCHED_INFO)."""
        try:
            procfs.parse_task_schedstat(read_text(f"{self._proc}/self/schedstat"))
        except FileNotFoundError:
            return Probe(
                self.name,
                False,
                "/proc/self/schedstat absent: kernel built without CONFIG_SCHED_INFO; "
                "per-vCPU steal from schedstat unavailable",
            )
        except OSError as e:
            return Probe(self.name, False, f"/proc/self/schedstat unreadable: {e.strerror}")
        except ValueError as e:
            return Probe(self.name, False, str(e))
        return Probe(self.name, True)

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        """Return `guests` with per-vCPU schedstat filled in for those with a pid.

        A VcpuSample is added for a vCPU thread the guest did not list; `accel` is set
        from the thread names when unknown. A process that vanished mid-read leaves the
        guest unchanged.
        """
        gaps: list[str] = []
        out = tuple(self._enrich(g, g.pid, gaps) if g.pid is not None else g for g in guests)
        live = {g.pid for g in guests}
        for pid in self._cache.keys() - live:
            del self._cache[pid]
        self.last_gaps = tuple(gaps)
        return out

    def _enrich(self, guest: GuestSample, pid: int, gaps: list[str]) -> GuestSample:
        found = self._lookup(pid, guest.vcpus_current)
        if found is None:
            return guest
        threads, stats = found
        if not threads.tids:
            gaps.append(
                f"{guest.name} (pid {pid}): no thread named 'CPU n/KVM' or 'CPU n/TCG' "
                "(QEMU needs -name debug-threads=on; single-threaded TCG has none); "
                "per-vCPU schedstat unavailable"
            )
        vcpus = []
        for v in guest.vcpus:
            s = stats.pop(v.index, None)
            vcpus.append(replace(v, tid=s[0], sched_run_ns=s[1], sched_delay_ns=s[2]) if s else v)
        for index in sorted(stats):
            tid, run, delay = stats[index]
            vcpus.append(VcpuSample(index, tid=tid, sched_run_ns=run, sched_delay_ns=delay))
        return replace(guest, vcpus=tuple(vcpus), accel=guest.accel or threads.accel)

    def _lookup(
        self, pid: int, vcpus_current: int | None
    ) -> tuple[_Threads, dict[int, tuple[int, int, int]]] | None:
        """The vCPU threads of `pid` and their counters, rescanning when needed.

        Returns None when the process is gone or a vCPU schedstat does not parse.
        """
        cached = self._cache.get(pid)
        if cached is not None and cached.vcpus_current == vcpus_current:
            stats = self._read(pid, cached)
            if stats is not None:
                return cached, stats
        # New pid, vCPU hotplug, or a cached thread vanished: scan again.
        fresh = self._scan(pid, vcpus_current)
        stats = self._read(pid, fresh) if fresh is not None else None
        if fresh is None or stats is None:
            self._cache.pop(pid, None)
            return None
        self._cache[pid] = fresh
        return fresh, stats

    def _scan(self, pid: int, vcpus_current: int | None) -> _Threads | None:
        """Find the vCPU threads of `pid` by their comm (see procfs.parse_vcpu_comm).

        Returns None when the process is gone. A QEMU without vCPU thread names
        (debug-threads=off) yields an empty map, cached like any other.
        """
        task = f"{self._proc}/{pid}/task"
        try:
            entries = os.listdir(task)
        except OSError:
            return None
        tids: dict[int, int] = {}
        accel = None
        for tid in entries:
            try:
                found = procfs.parse_vcpu_comm(read_text(f"{task}/{tid}/comm"))
            except OSError:
                continue  # the thread exited during the scan
            if found is not None and tid.isdigit():
                tids[found[0]] = int(tid)
                accel = found[1]
        return _Threads(tids, accel, vcpus_current)

    def _read(self, pid: int, threads: _Threads) -> dict[int, tuple[int, int, int]] | None:
        """Read each vCPU thread's schedstat: {index: (tid, run_ns, delay_ns)}.

        Returns None when a thread is gone (its file vanished) or unparsable.
        """
        task = f"{self._proc}/{pid}/task"
        out = {}
        for index, tid in threads.tids.items():
            try:
                run, delay, _ = procfs.parse_task_schedstat(read_text(f"{task}/{tid}/schedstat"))
            except (OSError, ValueError):
                return None
            out[index] = (tid, run, delay)
        return out
