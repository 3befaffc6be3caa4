"""libvirt collector: one bulk stats call per tick over a read-only connection.

Layer: collectors (I/O). libvirt-python is an optional extra, imported lazily: without
it `probe()` says how to install it and `collect()` raises `CollectorError`; nothing
else in kvmtop breaks.

Per tick the collector makes exactly one `virConnectGetAllDomainStats` call
(libvirt-python `virConnect.getAllDomainStats`, libvirt >= 1.2.8) and parses the
records with `kvmtop.collectors.libvirt_parse`. The domain XML (accelerator, disk
sources, bridges, balloon period) is fetched once per domain start, never per tick.

Balloon stats are fetched only every `balloon_every` ticks. On the other ticks each
guest carries the previous `BalloonSample` object forward unchanged (same object,
not a copy; dropped when the domain restarts). The data carries its own age
(`last_update_s`, set when the guest last reported), so consumers can tell fresh
from repeated values and must take balloon deltas (faults, swap) between samples
whose `last_update_s` differ. Leaving `balloon` None on those ticks would instead
make every consumer remember the last value and would blank the memory columns of
a recording sliced or replayed from an off tick.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kvmtop.collectors.base import CollectorError, Probe
from kvmtop.collectors.libvirt_parse import (
    DomainInfo,
    DomainLinks,
    DomainStatsParser,
    parse_domain_xml,
)
from kvmtop.model.sample import BalloonSample, GuestSample

NAME = "libvirt"
"""Collector name, as in `Probe.name` and `SourceStatus.name`."""

LIBVIRT_MISSING = "libvirt-python not installed (pip install 'kvmtop[libvirt]')"
"""Probe reason when the optional libvirt binding cannot be imported."""

# Transports that reach another host even when the URI has no host part
# (libvirt "Connection URIs": driver[+transport]://[user@][host][:port]/path).
_REMOTE_TRANSPORTS = frozenset({"ssh", "libssh", "libssh2", "tcp", "tls"})


def import_libvirt() -> Any | None:
    """Import libvirt-python on first use; None when it is not installed.

    Also replaces libvirt's default error handler: virDefaultErrorFunc prints every
    error to stderr ("libvirt: XML-RPC error : ..."), which would scribble over the
    TUI. Errors still arrive as `libvirt.libvirtError` exceptions.
    """
    try:
        import libvirt
    except ImportError:
        return None
    libvirt.registerErrorHandler(_ignore_libvirt_error, None)
    return libvirt


def _ignore_libvirt_error(_ctx: object, _error: object) -> None:
    """virErrorFunc that drops the message (the exception carries it)."""


def is_local_uri(uri: str) -> bool:
    """Whether a libvirt URI talks to this host.

    `qemu:///system`, `qemu:///session`, `qemu+unix:///system` and `test:///default`
    are local; a URI with a host (`qemu+ssh://host/system`, `qemu://host/system`) or
    a network transport is remote, and host-local facts (QEMU pid, /proc, debugfs)
    do not apply to its guests.
    """
    parts = urlsplit(uri)
    _, _, transport = parts.scheme.partition("+")
    return not parts.netloc and transport not in _REMOTE_TRANSPORTS


def format_version(number: int) -> str:
    """libvirt packs versions as major * 1,000,000 + minor * 1,000 + release."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


def describe_libvirt_error(uri: str, message: str) -> str:
    """Turn a libvirt connection error message into a short sentence naming the URI."""
    lowered = message.lower()
    if "no such file or directory" in lowered and "socket" in lowered:
        return f"libvirt daemon not running for {uri} (socket missing: {message})"
    if "connection refused" in lowered:
        return f"libvirt daemon not running for {uri} (connection refused)"
    if "permission denied" in lowered or "access denied" in lowered:
        return (
            f"permission denied opening {uri}: run as root or as a member of the "
            "libvirt group"
        )
    if "authentication" in lowered:
        return f"authentication failed for {uri}: {message}"
    return f"libvirt at {uri} unreachable: {message}"


@dataclass(slots=True)
class _DomainEntry:
    """What the collector remembers about one domain between ticks.

    Keyed by UUID; valid for one `dom_id` (a restart gets a new ID and a new entry).
    `parser` reads its stats with what the XML (`parser.links`) and the pidfile
    (`parser.pid`) said.
    """

    dom_id: int | None
    info: DomainInfo | None = None
    xml_fetched: bool = False
    balloon: BalloonSample | None = None
    parser: DomainStatsParser = dataclasses.field(
        default_factory=lambda: DomainStatsParser(DomainLinks())
    )


class LibvirtCollector:
    """Guests from libvirt: one `getAllDomainStats` per tick, read-only connection.

    Args:
        uri: libvirt URI; None lets libvirt pick its default (LIBVIRT_DEFAULT_URI ...).
        root: filesystem root for host-local files (QEMU pidfiles); tests pass a tree.
        balloon_every: request the balloon group on ticks where
            `tick % balloon_every == 0` (and on the first collect).
        open_fn: opens a connection for a URI; default `libvirt.openReadOnly`.
            Tests pass a function returning a fake connection.
    """

    name = NAME

    def __init__(
        self,
        uri: str | None = "qemu:///system",
        root: Path = Path("/"),
        *,
        balloon_every: int = 5,
        open_fn: Callable[[str | None], Any] | None = None,
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
        self._entries: dict[str, _DomainEntry] = {}
        self._collected = False

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
            self._connection()
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

    def collect(self, tick: int) -> tuple[GuestSample, ...]:
        """One sample per domain, active and inactive, from one bulk stats call.

        Args:
            tick: the sampler's tick counter; selects the ticks that carry balloon
                stats (`tick % balloon_every == 0`).

        Raises:
            CollectorError: libvirt-python missing, the URI unreachable after one
                reconnect, or the stats call failing.
        """
        lv = self._libvirt()
        with_balloon = not self._collected or tick % self._balloon_every == 0
        records = self._all_domain_stats(lv, self._stats_groups(lv, with_balloon))
        self._collected = True
        entries: dict[str, _DomainEntry] = {}
        guests: list[GuestSample] = []
        for dom, stats in records:
            uuid: str = dom.UUIDString()
            raw_id: int = dom.ID()
            # virDomainGetID: -1 ((unsigned int)-1 in C) for an inactive domain.
            dom_id = raw_id if raw_id >= 0 else None
            entry = self._entry(lv, dom, uuid, dom_id)
            if entry is None:
                continue
            carried = None if with_balloon else entry.balloon
            sample = entry.parser.parse(uuid, dom.name(), dom_id, stats, carried)
            if with_balloon:
                entry.balloon = sample.balloon
            entries[uuid] = entry
            guests.append(sample)
        self._entries = entries
        return tuple(guests)

    def close(self) -> None:
        """Close the libvirt connection (a later call reopens it)."""
        self._drop_connection()

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

    def _connection(self) -> Any:
        """The open connection, reopened when `virConnectIsAlive` says it died."""
        lv = self._libvirt()
        if self._conn is not None:
            try:
                alive = bool(self._conn.isAlive())
            except lv.libvirtError:
                alive = False
            if alive:
                return self._conn
            self._drop_connection()
        return self._open(lv)

    def _open(self, lv: Any) -> Any:
        """`virConnectOpenReadOnly`: stats and XML need no write access."""
        open_fn = self._open_fn if self._open_fn is not None else lv.openReadOnly
        shown = self._uri or "(default URI)"
        try:
            conn = open_fn(self._uri)
        except lv.libvirtError as exc:
            raise CollectorError(describe_libvirt_error(shown, _message(exc))) from exc
        if conn is None:  # libvirt-python < 5 returned None instead of raising
            raise CollectorError(f"libvirt at {shown} unreachable: open failed")
        try:
            uri: str = conn.getURI()
            hypervisor_type: str = conn.getType()
            self._versions = {
                "uri": uri,
                # virConnectGetLibVersion: the daemon's libvirt (remote side).
                "libvirt": format_version(conn.getLibVersion()),
                # virGetVersion: the client library kvmtop is linked against.
                "libvirt_client": format_version(lv.getVersion()),
                "hypervisor": f"{hypervisor_type} {format_version(conn.getVersion())}",
                "hostname": conn.getHostname(),
            }
        except lv.libvirtError as exc:
            _close_quietly(lv, conn)
            raise CollectorError(describe_libvirt_error(shown, _message(exc))) from exc
        self._conn = conn
        self._effective_uri = uri
        self._local = is_local_uri(uri)
        return conn

    def _drop_connection(self) -> None:
        """Forget the connection, closing it if possible."""
        conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(self._libvirt(), conn)

    def _is_connection_error(self, lv: Any, exc: Any) -> bool:
        """Whether a failed call means the connection itself is gone.

        A daemon restart shows up as VIR_ERR_SYSTEM_ERROR ("End of file while reading
        data", "Broken pipe") or VIR_ERR_INTERNAL_ERROR from VIR_FROM_RPC ("client
        socket is closed"); `virConnectIsAlive` then reports 0.
        """
        code = exc.get_error_code()
        if code in (
            lv.VIR_ERR_SYSTEM_ERROR,
            lv.VIR_ERR_RPC,
            lv.VIR_ERR_NO_CONNECT,
            lv.VIR_ERR_INVALID_CONN,
        ):
            return True
        if exc.get_error_domain() == lv.VIR_FROM_RPC:
            return True
        try:
            return self._conn is None or not self._conn.isAlive()
        except lv.libvirtError:
            return True

    # ------------------------------------------------------------------ stats

    @staticmethod
    def _stats_groups(lv: Any, with_balloon: bool) -> int:
        """The stats groups of one call (virDomainStatsTypes, libvirt-domain.h).

        STATE, CPU_TOTAL, VCPU, INTERFACE and BLOCK every tick; BALLOON only every
        `balloon_every` ticks (guests refresh their memory stats every few seconds
        anyway, and the group costs a QMP round trip per domain).

        The VM group (1 << 10, libvirt 8.9) is not requested. On libvirt 9.0 with
        QEMU 7.2 the VCPU group already carries the per-vCPU KVM binary stats
        (`vcpu.N.exits.sum`, `halt_exits`, `halt_wait_ns`, ... ~45 per vCPU) of KVM
        guests; VM adds only the 16 VM-wide `vm.*` stats (mmu_*, pages_4k/2m/1g,
        remote_tlb_flush), which no kvmtop view or detector uses, for one more QMP
        round trip per domain (query-stats). Measured in the lab (12 guests: 3 KVM,
        9 TCG; 2 CPUs at load average 13-16), calls interleaved, median of 25, two
        runs: fast 1079 / 1200 ms per call; adding VM +399 / +166 ms (+14 to +33 ms
        per domain), about what BALLOON adds (+365 / +192 ms). Not worth it every
        tick for no column; `vm_kvm` is parsed when present.
        """
        groups: int = (
            lv.VIR_DOMAIN_STATS_STATE
            | lv.VIR_DOMAIN_STATS_CPU_TOTAL
            | lv.VIR_DOMAIN_STATS_VCPU
            | lv.VIR_DOMAIN_STATS_INTERFACE
            | lv.VIR_DOMAIN_STATS_BLOCK
        )
        if with_balloon:
            groups |= lv.VIR_DOMAIN_STATS_BALLOON
        return groups

    def _all_domain_stats(self, lv: Any, groups: int) -> list[tuple[Any, dict[str, Any]]]:
        """One `getAllDomainStats`, reopening the connection once if it broke.

        Flags: no state filter, so shut-off domains are listed too (they show as rows
        with the state group only), and VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        (libvirt >= 4.5): without it a domain busy with a job (migration, block job,
        hung monitor) stalls the whole call for up to 30 s (QEMU_JOB_WAIT_TIME);
        with it that domain's monitor groups are just missing this tick.
        """
        flags = lv.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        failure: Any = None
        for _attempt in range(2):
            conn = self._connection()
            try:
                records: list[tuple[Any, dict[str, Any]]] = conn.getAllDomainStats(
                    groups, flags
                )
            except lv.libvirtError as exc:
                if not self._is_connection_error(lv, exc):
                    raise CollectorError(
                        f"libvirt at {self._effective_uri}: getAllDomainStats failed: "
                        f"{_message(exc)}"
                    ) from exc
                self._drop_connection()
                failure = exc
                continue
            return records
        raise CollectorError(
            f"libvirt at {self._effective_uri} unreachable: {_message(failure)}"
        ) from failure

    def _entry(self, lv: Any, dom: Any, uuid: str, dom_id: int | None) -> _DomainEntry | None:
        """The entry of a domain; its XML is read when it is new or restarted.

        Returns None when the domain vanished before its XML could be read
        (VIR_ERR_NO_DOMAIN): it is skipped this tick. Any other XMLDesc error leaves
        the XML facts unknown and is retried on the next tick.
        """
        entry = self._entries.get(uuid)
        if entry is None or entry.dom_id != dom_id:
            entry = _DomainEntry(dom_id=dom_id)
        if not entry.xml_fetched:
            try:
                xml: str = dom.XMLDesc(0)
            except lv.libvirtError as exc:
                if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                    return None
            else:
                entry.info = _parse_xml_or_none(xml)
                entry.xml_fetched = True
                entry.parser.links = DomainLinks.of(entry.info)
        if entry.parser.pid is None and dom_id is not None:
            entry.parser.pid = self._read_pid(dom.name())
        return entry

    def _read_pid(self, name: str) -> int | None:
        """QEMU pid from libvirt's pidfile `<root>/run/libvirt/qemu/<name>.pid`
        (qemu:///system; written by the QEMU driver at domain start). Local URIs only."""
        if not self._local:
            return None
        try:
            text = (self._root / "run/libvirt/qemu" / f"{name}.pid").read_text()
        except OSError:
            return None
        text = text.strip()
        return int(text) if text.isdigit() else None


def _message(exc: Any) -> str:
    """The libvirt error message of a libvirtError (first line), or its str()."""
    message = exc.get_error_message() if hasattr(exc, "get_error_message") else None
    text = message if isinstance(message, str) and message else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _parse_xml_or_none(xml: str) -> DomainInfo | None:
    """parse_domain_xml, or None for XML it cannot read (cached: it will not change)."""
    try:
        return parse_domain_xml(xml)
    except ValueError:
        return None


def _close_quietly(lv: Any, conn: Any) -> None:
    """`virConnectClose`, ignoring errors of an already-dead connection."""
    with contextlib.suppress(lv.libvirtError):
        conn.close()
