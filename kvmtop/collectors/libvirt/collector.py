"""libvirt collector: one bulk stats call per tick over a read-only connection.

Layer: collectors (I/O). libvirt-python is an optional extra, imported lazily: without
it `probe()` says how to install it and `collect()` raises `CollectorError`; nothing
else in kvmtop breaks.

Per tick the collector makes exactly one `virConnectGetAllDomainStats` call
(libvirt-python `virConnect.getAllDomainStats`, libvirt >= 1.2.8) and parses the
records with `kvmtop.collectors.libvirt.domstats`. The domain XML (accelerator, disk
sources, bridges, balloon period; `domxml`) is fetched once per domain start, never
per tick.

Balloon stats are fetched only every `balloon_every` ticks. On the other ticks each
guest carries the previous `BalloonSample` object forward unchanged (same object,
not a copy; dropped when the domain restarts). The data carries its own age
(`last_update_s`, set when the guest last reported), so consumers can tell fresh
from repeated values and must take balloon deltas (faults, swap) between samples
whose `last_update_s` differ. Leaving `balloon` None on those ticks would instead
make every consumer remember the last value and would blank the memory columns of
a recording sliced or replayed from an off tick.

A stuck guest never holds up the tick (issue #16). The bulk call runs on a thread of
its own and the tick waits for it until a deadline; a guest whose QEMU does not answer
is reported as not responding (`GuestSample.not_responding_since_s`, its counters
unknown) and every other guest is read as usual. What libvirt does (9.0, the version
on the project's hosts; file and function of its source named, and measured in the
lab with one guest's QEMU stopped by SIGSTOP):

- `qemuConnectGetAllDomainStats` (src/qemu/qemu_driver.c) reads the domains one after
  another. For a domain it takes a query job when a requested group needs the QEMU
  monitor: `qemuDomainGetStatsWorkers[]` marks cpu (halt-poll times by query-stats),
  balloon (guest memory by qom-get), vcpu (query-cpus-fast, KVM stats by
  query-stats), block (query-blockstats), iothread, dirtyrate and vm; state,
  interface, perf and memory need none. With VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
  the job is `virDomainObjBeginJobNowait`: when another call holds it, the domain is
  read without the monitor (no balloon guest stats, no block counters, no KVM stats;
  cpu.time, vCPU times and vNIC counters still come from /proc and the cgroup).
- `qemuMonitorSend` (src/qemu/qemu_monitor.c) waits for QEMU's reply with
  `virCondWait`, without a timeout: a stopped or hung QEMU holds the call, and that
  domain's job, until it answers. NOWAIT does not help that call; it only lets later
  calls skip the domain. The wait releases the domain lock
  (`qemuDomainObjEnterMonitor`), so other calls can still look at the domain.
- `qemuDomainGetControlInfo` (src/qemu/qemu_driver.c, `virDomainGetControlInfo`)
  needs no job and no monitor: VIR_DOMAIN_CONTROL_OCCUPIED with `stateTime`, the ms
  since the pending monitor command was sent (`priv->monStart`).

Measured (lab, 12 guests, lab-net stopped 2 s per case): the state and interface
groups alone returned at once; cpu, balloon, vcpu, block and vm alone each blocked
for the whole stop, with control info [OCCUPIED, 0, ~2000 ms]. With one call blocked
on lab-net, a second NOWAIT call of every group returned in 40 ms with all 12 records,
lab-net's reduced from 53 keys to 28. A healthy call took 50-110 ms (median 82).

So each tick (`collect` with a deadline): one bulk call on its own thread, which waits
for the domains' jobs as any client does (another client holds one for milliseconds;
NOWAIT there would drop that domain's monitor groups whenever two monitors meet). When
it has not returned after `stall_after` (1.5 times the recent median call of the
same stats groups, within 10-50 % of the deadline), it keeps its connection and, over
a new one, the control info of the running domains says which monitor is occupied for
as long as a usual call: those guests are not responding, the call is abandoned (its
result, whose reads span the stall, is never used) and a NOWAIT call reads everyone
else, skipping the stuck domains' jobs. Overdue (twice the median) with no monitor
busy at all, the call waits for a job held between monitor commands (a block job, a
migration): it is abandoned the same way.
While an abandoned call is still waiting, every call is NOWAIT (a waiting one would
queue behind the stuck job) and the control info is checked every tick, so a guest is
shown as answering again from the tick its QEMU replied. At most `MAX_ABANDONED`
abandoned calls wait at once (libvirtd serves 5 calls per client, `max_client_requests`); past
the deadline with no answer at all, the guests seen last are reported as not read.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvmtop.collectors.base import CollectorError, Probe
from kvmtop.collectors.libvirt.calls import (
    CONTROL_OCCUPIED,
    MAX_ABANDONED,
    OVERDUE_FACTOR,
    STALL_FACTOR,
    Call,
    NoRecords,
    after_typical,
    late_domains,
    stats_groups,
)
from kvmtop.collectors.libvirt.connect import (
    LIBVIRT_MISSING,
    close_quietly,
    error_message,
    import_libvirt,
    is_connection_error,
    is_local_uri,
    open_read_only,
)
from kvmtop.collectors.libvirt.domxml import DomainInfo
from kvmtop.collectors.libvirt.entries import (
    PID_DIR,
    DomainEntry,
    clock_text,
    no_answer,
    refreshed,
)
from kvmtop.model.sample import GuestSample

NAME = "libvirt"
"""Collector name, as in `Probe.name` and `SourceStatus.name`."""

CONNECT_WAIT_S = 0.5
"""How long `probe()` waits for a connection to open (the rest happens in the
background: `collect` takes it up)."""


class LibvirtCollector:
    """Guests from libvirt: one `getAllDomainStats` per tick, read-only connection.

    Args:
        uri: libvirt URI; None lets libvirt pick its default (LIBVIRT_DEFAULT_URI ...).
        root: filesystem root for host-local files (QEMU pidfiles); tests pass a tree.
        balloon_every: request the balloon group on ticks where
            `tick % balloon_every == 0` (and on the first collect).
        open_fn: opens a connection for a URI; default `libvirt.openReadOnly`.
            Tests pass a function returning a fake connection.
        clock: monotonic seconds; wall: Unix seconds (injectable for tests).
    """

    name = NAME

    def __init__(
        self,
        uri: str | None = "qemu:///system",
        root: Path = Path("/"),
        *,
        balloon_every: int = 5,
        open_fn: Callable[[str | None], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if balloon_every < 1:
            raise ValueError(f"balloon_every must be >= 1, got {balloon_every}")
        self._uri = uri
        self._root = root
        self._balloon_every = balloon_every
        self._open_fn = open_fn
        self._lv: Any | None = None
        self._conn: Any | None = None
        self._effective_uri = uri or "(default URI)"
        self._local = False
        self._versions: dict[str, str] = {}
        self._entries: dict[str, DomainEntry] = {}
        self._collected = False
        self._clock = clock
        self._wall = wall
        self._waiting: list[Call[Any]] = []
        """Calls the tick stopped waiting for, each with the connection it keeps."""
        self._side: Any | None = None
        """The second connection, for the control info while a call is overdue."""
        self._side_opening: Call[tuple[Any, dict[str, str], str]] | None = None
        self._opening: Call[tuple[Any, dict[str, str], str]] | None = None
        self._durations: dict[int, deque[float]] = {}
        """The recent clean calls' durations (s), by stats groups: a call with the
        balloon group takes about twice as long (a QMP round trip per domain)."""

    # ------------------------------------------------------------------ public

    @property
    def uri(self) -> str:
        """The URI in use: the connection's own (`virConnectGetURI`) once opened."""
        return self._effective_uri

    @property
    def is_local(self) -> bool:
        """Whether the open connection is to this host (False before it is opened)."""
        return self._local

    def probe(self) -> Probe:
        """Open the connection if needed and report versions, or why it fails."""
        try:
            self._connection(CONNECT_WAIT_S)
        except CollectorError as exc:
            return Probe(NAME, False, str(exc), {"uri": self._effective_uri})
        return Probe(NAME, True, None, dict(self._versions))

    def version_info(self) -> dict[str, str]:
        """URI, libvirt daemon and client versions, hypervisor and version, hostname.

        Opens the connection if needed; recordings store this in their header.

        Raises:
            CollectorError: libvirt-python missing or the URI unreachable.
        """
        self._connection()
        return dict(self._versions)

    def domain_info(self, uuid: str) -> DomainInfo | None:
        """The parsed XML of a domain seen by the last `collect()`, if any."""
        entry = self._entries.get(uuid)
        return entry.info if entry is not None else None

    def collect(self, tick: int, deadline_s: float | None = None) -> tuple[GuestSample, ...]:
        """One sample per domain, active and inactive, from one bulk stats call.

        Args:
            tick: the sampler's tick counter; selects the ticks that carry balloon
                stats (`tick % balloon_every == 0`).
            deadline_s: how long the tick may wait for libvirt (None: as long as it
                takes). A guest whose QEMU does not answer within it is returned as
                not responding; when no call returns in time at all, the guests of the
                last tick are (see the module docstring).

        Raises:
            CollectorError: libvirt-python missing, the URI unreachable after one
                reconnect, or the stats call failing.
        """
        lv = self._libvirt()
        with_balloon = not self._collected or tick % self._balloon_every == 0
        try:
            records, stuck = self._all_domain_stats(lv, stats_groups(lv, with_balloon), deadline_s)
        except NoRecords as exc:
            return self.unanswered(str(exc))
        self._collected = True
        entries: dict[str, DomainEntry] = {}
        guests: list[GuestSample] = []
        now = self._wall()
        for dom, stats in records:
            uuid: str = dom.UUIDString()
            raw_id: int = dom.ID()
            # virDomainGetID: -1 ((unsigned int)-1 in C) for an inactive domain.
            dom_id = raw_id if raw_id >= 0 else None
            entry = refreshed(
                lv,
                dom,
                self._entries.get(uuid),
                dom_id,
                self._root / PID_DIR if self._local else None,
            )
            if entry is None:
                continue
            since = stuck.get(uuid)
            if since is not None and dom_id is not None:
                held_s = now - since
                sample = no_answer(
                    entry,
                    uuid,
                    dom.name(),
                    dom_id,
                    stats,
                    since,
                    f"not responding since {clock_text(since)}: its QEMU has not "
                    f"answered libvirt's monitor command for {held_s:.1f} s",
                )
            else:
                carried = None if with_balloon else entry.balloon
                sample = entry.parser.parse(uuid, dom.name(), dom_id, stats, carried)
                if with_balloon:
                    entry.balloon = sample.balloon
            entry.last, entry.silent_since_s = sample, None
            entries[uuid] = entry
            guests.append(sample)
        self._entries = entries
        return tuple(guests)

    def stall_after(self, deadline_s: float, groups: int) -> float:
        """How long a call of `groups` may take before the tick looks for a stuck guest:
        1.5 times the median of the recent such calls that went through, within 10-50 %
        of the deadline (half of it before any went through)."""
        return after_typical(self._durations.get(groups, ()), STALL_FACTOR, deadline_s)

    def unanswered(self, reason: str) -> tuple[GuestSample, ...]:
        """The guests of the last tick that had an answer, each marked not responding
        since the first tick without one, for `reason`; shut-off domains as they were.

        For a tick without records: no call returned in time, or the daemon is gone
        (stopped, restarting). Its guests still run (their QEMUs do not depend on
        libvirtd), so they stay listed with their values unknown instead of vanishing:
        a detector keeps its history of them across a libvirtd restart.
        """
        now = self._wall()
        guests = []
        for uuid, entry in self._entries.items():
            if entry.last is None:
                continue
            if entry.last.dom_id is None:  # a shut-off domain has nothing to miss
                guests.append(entry.last)
                continue
            if entry.silent_since_s is None:
                entry.silent_since_s = now
            since = entry.silent_since_s
            guests.append(
                no_answer(
                    entry,
                    uuid,
                    entry.last.name,
                    entry.last.dom_id,
                    {},
                    since,
                    f"not responding since {clock_text(since)}: {reason}",
                    entry.last,
                )
            )
        return tuple(guests)

    def close(self) -> None:
        """Close the libvirt connections (a later call reopens them)."""
        self._drop_connection()
        side, self._side = self._side, None
        if side is not None and self._lv is not None:
            close_quietly(self._lv, side)
        self._prune()

    # ------------------------------------------------------------------ connection

    def _libvirt(self) -> Any:
        """The libvirt module, imported on first use.

        Raises:
            CollectorError: libvirt-python is not installed.
        """
        if self._lv is None:
            self._lv = import_libvirt()
            if self._lv is None:
                raise CollectorError(LIBVIRT_MISSING)
        return self._lv

    def _connection(self, timeout_s: float | None = None) -> Any:
        """The open connection, reopened when `virConnectIsAlive` says it died.

        Opening waits at most `timeout_s` (None: as long as it takes): a libvirtd that
        is starting accepts the connection but answers only once its drivers are up
        (seconds, while it reconnects to the running QEMUs). The open goes on in the
        background and the next call takes it up.

        Raises:
            CollectorError: libvirt-python missing, the URI unreachable, or no answer
                within `timeout_s`.
        """
        lv = self._libvirt()
        if self._conn is not None:
            try:
                alive = bool(self._conn.isAlive())
            except lv.libvirtError:
                alive = False
            if alive:
                return self._conn
            self._drop_connection()
        if self._opening is None:
            self._opening = Call(
                functools.partial(open_read_only, lv, self._uri, self._open_fn), "open"
            ).start()
        if not self._opening.wait(timeout_s):
            raise CollectorError(
                f"libvirt at {self._uri or '(default URI)'}: no answer within "
                f"{timeout_s:g} s while connecting (the daemon may be starting)"
            )
        call, self._opening = self._opening, None
        if call.error is not None:
            raise call.error
        assert call.result is not None
        conn, self._versions, uri = call.result
        self._conn = conn
        self._effective_uri = uri
        self._local = is_local_uri(uri)
        return conn

    def _drop_connection(self) -> None:
        """Forget the connection, closing it if possible."""
        conn, self._conn = self._conn, None
        if conn is not None:
            close_quietly(self._libvirt(), conn)

    # ------------------------------------------------------------------ stats

    def _all_domain_stats(
        self, lv: Any, groups: int, deadline_s: float | None
    ) -> tuple[list[tuple[Any, dict[str, Any]]], dict[str, float]]:
        """One `getAllDomainStats` within the deadline, reopening the connection once
        if it broke.

        Flags: no state filter, so shut-off domains are listed too (they show as rows
        with the state group only). The first call of a tick waits for the domains'
        jobs as usual: another client's query (a second monitor, an exporter) holds
        one for milliseconds, and a NOWAIT call would read that domain without its
        monitor groups (no balloon, block or KVM stats) every time the two met;
        measured in the nested lab, two kvmtops 2 s apart with NOWAIT starved each
        other's balloon stats, and the leak check never had enough points. Only when
        the call is overdue (`_bounded_stats`) does the retry use
        VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT (libvirt >= 4.5), which reads a
        domain whose job is held (a hung monitor, a block job, a migration: up to
        30 s of VIR_JOB_WAIT_TIME otherwise) without its monitor groups.

        Returns:
            The records, and the running domains (UUID) whose QEMU monitor has not
            answered in time, with the wall time libvirt sent it the command.

        Raises:
            NoRecords: no call returned within the deadline.
        """
        failure: Any = None
        for _attempt in range(2):
            try:
                return self._bounded_stats(lv, groups, deadline_s)
            except lv.libvirtError as exc:
                if not is_connection_error(lv, exc, self._conn):
                    raise CollectorError(
                        f"libvirt at {self._effective_uri}: getAllDomainStats failed: "
                        f"{error_message(exc)}"
                    ) from exc
                self._drop_connection()
                failure = exc
                continue
        raise CollectorError(
            f"libvirt at {self._effective_uri} unreachable: {error_message(failure)}"
        ) from failure

    def _bounded_stats(
        self, lv: Any, groups: int, deadline_s: float | None
    ) -> tuple[list[tuple[Any, dict[str, Any]]], dict[str, float]]:
        """The stats call of `_all_domain_stats`, on its own thread, within the deadline.

        The control info goes over a second connection (`_sweep`). On the connection
        of the overdue call it would share that call's socket, and libvirt 9.0's client
        (src/rpc/virnetclient.c: one thread at a time reads the replies of every
        caller) then held replies to other threads until a further call came
        (measured: a 1 ms control info answered after 2 s, 3 sweeps of 5 blocked; on a
        second connection none). An abandoned call keeps its connection; the next call
        opens a new one.

        Raises:
            libvirtError: the call failed (raised from its thread).
            CollectorError: no connection could be opened.
            NoRecords: no call returned in time, or too many wait on stuck guests.
        """
        self._prune()
        end = None if deadline_s is None else self._clock() + deadline_s
        stall_after = None if deadline_s is None else self.stall_after(deadline_s, groups)
        if end is not None:
            self._side_connection(lv, 0.0)  # opened ahead, in the background
        overdue = (
            None
            if deadline_s is None
            else after_typical(self._durations.get(groups, ()), OVERDUE_FACTOR, deadline_s)
        )
        # A monitor busy for as long as a whole usual call is stuck (not merely slow: on
        # a loaded host, as the nested lab's L1, one guest's reply can take half a call).
        threshold = (overdue or 0.0) / OVERDUE_FACTOR
        stuck: dict[str, float] = {}
        swept = False
        # The first call waits for jobs, unless an abandoned call still holds a stuck
        # guest's (it would wait for that one); a retry skips held jobs (NOWAIT).
        nowait = lv.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        flags = nowait if self._waiting else 0
        while True:
            waiting = [c for c in self._waiting if c.name == "stats"]
            if len(waiting) >= MAX_ABANDONED:
                # No new call until one of them returns (within the deadline).
                if end is None or not waiting[0].wait(end - self._clock()):
                    raise NoRecords(
                        f"{MAX_ABANDONED} libvirt stats calls are still waiting on "
                        "guests that do not answer; no new call until one returns"
                    )
                self._prune()
                continue
            conn = self._connection(None if end is None else max(0.0, end - self._clock()))
            called = self._clock()
            call: Call[list[tuple[Any, dict[str, Any]]]] = Call(
                functools.partial(conn.getAllDomainStats, groups, flags), "stats", conn
            ).start()
            check_at = (
                None if end is None or stall_after is None else min(end, called + stall_after)
            )
            while not call.wait(None if check_at is None else check_at - self._clock()):
                assert end is not None and stall_after is not None
                if self._clock() >= end:
                    self._retire(call)
                    raise NoRecords(f"libvirt's stats call did not return within {deadline_s:g} s")
                occupied = self._sweep(lv, end)
                swept = True
                if occupied is None:
                    self._retire(call)
                    raise NoRecords(
                        f"libvirt did not answer within {deadline_s:g} s (control info)"
                    )
                late = late_domains(occupied, threshold)
                new = late.keys() - stuck.keys()
                stuck.update(late)
                quiet = not occupied and not flags
                assert overdue is not None
                if new or (quiet and self._clock() - called >= overdue):
                    # Either the call waits on a stuck monitor (its reads would span the
                    # stall), or, overdue with no monitor busy, on a job another client
                    # holds between its monitor commands (or a block job, a migration:
                    # up to VIR_JOB_WAIT_TIME). It is abandoned; a new NOWAIT call skips
                    # the held jobs (those domains without their monitor groups), over
                    # the second connection (open and answering: no wait for a new one;
                    # another second one opens in the background).
                    self._retire(call)
                    if self._conn is None:
                        self._conn, self._side = self._side, None
                    flags = nowait
                    break
                # A monitor busy for less than the threshold: look again when it would
                # reach it; none busy: when the call is overdue (or after the threshold).
                shorter = [threshold - held for held, _ in occupied.values() if held < threshold]
                now = self._clock()
                if shorter:
                    check_at = min(end, now + min(shorter))
                elif quiet and now < called + overdue:
                    check_at = min(end, called + overdue)
                else:
                    check_at = min(end, now + threshold)
            else:
                if call.error is not None:
                    raise call.error
                records = call.result if call.result is not None else []
                if not flags and not self._waiting:
                    # Every call that went through unretried, looked at or not: the
                    # median then follows a libvirtd that got slower (calls only under
                    # the check time would keep it low, and every later call looked at).
                    self._durations.setdefault(groups, deque(maxlen=9)).append(
                        self._clock() - called
                    )
                self._prune()
                if self._waiting and not swept and end is not None:
                    # Earlier calls still wait on a guest: which ones, this tick?
                    stuck.update(late_domains(self._sweep(lv, end) or {}, threshold))
                return records, stuck

    def _retire(self, call: Call[Any]) -> None:
        """Stop waiting for `call`: it keeps its connection (closed once it returns),
        the next call opens another."""
        if call.conn is not None and self._conn is call.conn:
            self._conn = None
        if call.conn is not None and self._side is call.conn:
            self._side = None
        self._waiting.append(call)

    def _prune(self) -> None:
        """Close the connections of abandoned calls that have returned."""
        still: list[Call[Any]] = []
        for call in self._waiting:
            if not call.done:
                still.append(call)
            elif call.conn is not None and self._lv is not None:
                close_quietly(self._lv, call.conn)
        self._waiting = still

    def _side_connection(self, lv: Any, timeout_s: float) -> Any | None:
        """The second connection, opened in the background; None while it is not
        open after `timeout_s`, or could not be opened (tried again next time)."""
        if self._side is not None:
            return self._side
        if self._side_opening is None:
            self._side_opening = Call(
                functools.partial(open_read_only, lv, self._uri, self._open_fn), "open"
            ).start()
        if not self._side_opening.wait(timeout_s):
            return None
        call, self._side_opening = self._side_opening, None
        if call.error is not None or call.result is None:
            return None
        self._side = call.result[0]
        return self._side

    def _sweep(self, lv: Any, end: float) -> dict[str, tuple[float, float]] | None:
        """Each running domain whose QEMU monitor is busy with a command: for how long
        (s) and since when (wall time). `virDomainGetControlInfo` (no job, no monitor;
        about 1 ms a domain here) over the second connection, on a thread of its own
        until `end`. None when libvirt did not answer by then."""
        side = self._side_connection(lv, end - self._clock())
        if side is None or any(c.name == "control" for c in self._waiting):
            return None  # no second connection, or the last sweep still waits

        def occupied() -> dict[str, tuple[float, float]]:
            busy: dict[str, tuple[float, float]] = {}
            for dom in side.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                try:
                    state, _details, state_ms = dom.controlInfo()
                except lv.libvirtError:  # shut down meanwhile
                    continue
                if state == CONTROL_OCCUPIED:
                    held = state_ms / 1000
                    busy[dom.UUIDString()] = (held, self._wall() - held)
            return busy

        call = Call(occupied, "control", side).start()
        if not call.wait(end - self._clock()):
            self._retire(call)
            return None
        if call.error is not None:
            if isinstance(call.error, lv.libvirtError):
                self._side = None
                close_quietly(lv, side)
                return {}
            raise call.error
        return call.result
