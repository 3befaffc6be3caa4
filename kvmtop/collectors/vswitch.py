"""Open vSwitch: every port with its bridge and counters, every datapath with its
hit/missed/lost lookups.

Layer: collectors (I/O). Talks JSON-RPC to OVS's own unix sockets instead of running
`ovs-vsctl` and `ovs-appctl`: the two commands (fork + exec of each) cost many times
the CPU and wall time of the two socket calls per refresh
(bench/results/measurements.md#ovs-sockets-vs-cli). The refresh still runs on a slow
tier (`every_s`, 10 s by default) and is carried forward in between: ovs-vswitchd
pushes `Interface.statistics` into OVSDB
only every `other_config:stats-update-interval` (5000 ms by default, vswitch.xml),
so faster reads would only see steps. `HostSample.ovs_mono_ns` says when the values
were read: rate OVS counters over its difference, and only between samples where it
changed.

- OVSDB (RFC 7047 "transact" with three selects) on `<rundir>/db.sock`: Bridge
  (name, datapath_type, ports), Port (interfaces), Interface (name, statistics).
- ovs-vswitchd's unixctl server (lib/unixctl.c, JSON-RPC whose result is the
  command's text) on `<rundir>/ovs-vswitchd.<pid>.ctl`, pid from
  `ovs-vswitchd.pid`: `dpctl/show -s`, the same text `ovs-appctl dpctl/show -s`
  prints. It works for the userspace datapath (`datapath_type=netdev`), where
  `ovs-dpctl show` cannot (it only opens kernel datapaths).

`rundir` is OVS's run directory (OVS_RUNDIR; Debian and Red Hat packages use
/var/run/openvswitch, a source build /usr/local/var/run/openvswitch). Never imports
textual.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kvmtop.collectors.base import CollectorError, Probe, probe_read
from kvmtop.collectors.host import read_text
from kvmtop.model.sample import HostSample, OvsDatapathSample, OvsPortSample
from kvmtop.model.units import NS_PER_S

RUNDIRS = ("var/run/openvswitch", "run/openvswitch", "usr/local/var/run/openvswitch")
"""Where OVS keeps its sockets, relative to root, in the order tried (OVS_RUNDIR
overrides, as for OVS's own tools: lib/dirs.c ovs_rundir)."""

_PORT_STATS = {
    "rx_packets": "rx_packets",
    "tx_packets": "tx_packets",
    "rx_dropped": "rx_dropped",
    "tx_dropped": "tx_dropped",
    "rx_errors": "rx_errors",
    "tx_errors": "tx_errors",
}
"""OVSDB Interface.statistics keys (vswitch.xml "Statistics") → OvsPortSample fields."""

_LOOKUPS = re.compile(r"lookups: hit:(\d+) missed:(\d+) lost:(\d+)")


@dataclass(frozen=True, slots=True)
class DatapathStats:
    """One datapath block of `dpctl/show -s`: "<type>@<name>:" and its lookups."""

    type: str
    name: str
    hit: int | None
    missed: int | None
    lost: int | None


# --------------------------------------------------------------------------- parsers


def _ovs_set(value: Any) -> list[Any]:
    """Members of an OVSDB set (RFC 7047 §5.1): `["set", [...]]`, or one bare atom."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        return list(value[1])
    return [value]


def _ovs_uuid(value: Any) -> str | None:
    """The UUID string of an OVSDB `["uuid", "..."]` atom."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "uuid":
        return str(value[1])
    return None


def _ovs_map(value: Any) -> dict[str, Any]:
    """An OVSDB `["map", [[k, v], ...]]` as a dict."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "map":
        return {str(k): v for k, v in value[1]}
    return {}


def parse_ovsdb_ports(result: Any) -> tuple[tuple[OvsPortSample, ...], dict[str, str]]:
    """Ports and bridge datapath types from the reply of `_OVSDB_QUERY`.

    One `OvsPortSample` per Interface (a bond port has several: its members), named
    after the interface, with the bridge of the Port that holds it; a bridge's own
    internal interface has the bridge's name. Interfaces in no bridge are left out.

    Returns:
        (ports sorted by bridge and name, bridge name → datapath type), with an
        empty `datapath_type` read as "system" (vswitch.xml: the default).

    Raises:
        ValueError: the reply is not three select results or carries an error.
    """
    if not isinstance(result, list) or len(result) != 3:
        raise ValueError(f"OVSDB: expected 3 select results, got {str(result)[:200]}")
    for op in result:
        if not isinstance(op, dict) or "rows" not in op:
            raise ValueError(f"OVSDB select failed: {str(op)[:200]}")
    bridges, ports, interfaces = (op["rows"] for op in result)
    bridge_of_port: dict[str, str] = {}
    types: dict[str, str] = {}
    for row in bridges:
        types[row["name"]] = row.get("datapath_type") or "system"
        for member in _ovs_set(row["ports"]):
            if (u := _ovs_uuid(member)) is not None:
                bridge_of_port[u] = row["name"]
    bridge_of_iface: dict[str, str] = {}
    for row in ports:
        bridge = bridge_of_port.get(_ovs_uuid(row["_uuid"]) or "")
        if bridge is None:
            continue
        for member in _ovs_set(row["interfaces"]):
            if (u := _ovs_uuid(member)) is not None:
                bridge_of_iface[u] = bridge
    out = []
    for row in interfaces:
        bridge = bridge_of_iface.get(_ovs_uuid(row["_uuid"]) or "")
        if bridge is None:
            continue
        stats = _ovs_map(row.get("statistics"))
        values = {
            field: int(v) if isinstance(v, int) else None
            for key, field in _PORT_STATS.items()
            for v in [stats.get(key)]
        }
        out.append(OvsPortSample(name=row["name"], bridge=bridge, **values))
    out.sort(key=lambda p: (p.bridge, p.name))
    return tuple(out), types


def parse_dpctl_show(text: str) -> list[DatapathStats]:
    """The datapaths in `dpctl/show -s` text (lib/dpctl.c show_dpif).

    Each block starts with an unindented "<type>@<name>:" line; its "lookups: hit:H
    missed:M lost:L" line gives the counters (None when absent).
    """
    out: list[DatapathStats] = []
    current: tuple[str, str] | None = None
    counters: tuple[int, int, int] | None = None

    def flush() -> None:
        if current is not None:
            hit, missed, lost = counters if counters is not None else (None, None, None)
            out.append(DatapathStats(current[0], current[1], hit, missed, lost))

    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":") and "@" in line:
            flush()
            dp_type, _, name = line.rstrip()[:-1].partition("@")
            current, counters = (dp_type, name), None
        elif current is not None and (m := _LOOKUPS.search(line)) is not None:
            counters = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    flush()
    return out


def datapath_samples(
    datapaths: Sequence[DatapathStats], bridge_types: dict[str, str]
) -> tuple[OvsDatapathSample, ...]:
    """Datapath samples with the bridges on each.

    ovs-vswitchd opens one datapath per datapath type and puts every bridge of
    that type on it ("dpif backer", ofproto/ofproto-dpif.c; named "ovs-<type>"), so
    a bridge belongs to the datapath whose type equals its `datapath_type`.
    """
    return tuple(
        OvsDatapathSample(
            name=f"{dp.type}@{dp.name}",
            hit=dp.hit,
            missed=dp.missed,
            lost=dp.lost,
            bridges=tuple(sorted(b for b, t in bridge_types.items() if t == dp.type)),
        )
        for dp in datapaths
    )


# --------------------------------------------------------------------------- JSON-RPC

_OVSDB_QUERY: list[Any] = [
    "Open_vSwitch",
    {"op": "select", "table": "Bridge", "where": [], "columns": ["name", "datapath_type", "ports"]},
    {"op": "select", "table": "Port", "where": [], "columns": ["_uuid", "interfaces"]},
    {"op": "select", "table": "Interface", "where": [], "columns": ["_uuid", "name", "statistics"]},
]


def json_rpc(path: str, method: str, params: list[Any], timeout_s: float) -> Any:
    """One JSON-RPC 1.0 call on a unix stream socket; the reply's `result`.

    Raises:
        CollectorError: the socket is absent or refuses, the call times out, or the
            reply carries an error.
    """
    request = json.dumps({"method": method, "params": params, "id": 0}).encode()
    decoder = json.JSONDecoder()
    buf = ""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            sock.sendall(request)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise CollectorError(f"{path}: connection closed before the reply")
                buf += chunk.decode("utf-8", "replace")
                try:
                    reply, _ = decoder.raw_decode(buf)
                except ValueError:
                    continue  # the reply is not complete yet
                break
    except OSError as e:
        raise CollectorError(f"{path}: {e.strerror or e}") from e
    if not isinstance(reply, dict):
        raise CollectorError(f"{path}: {method}: unexpected reply {buf[:200]!r}")
    if reply.get("error") is not None:
        raise CollectorError(f"{path}: {method}: {reply['error']}")
    return reply.get("result")


# --------------------------------------------------------------------------- collector


@dataclass(frozen=True, slots=True)
class _Snapshot:
    ports: tuple[OvsPortSample, ...]
    datapaths: tuple[OvsDatapathSample, ...]
    mono_ns: int


class VswitchCollector:
    """OVS ports and datapaths into `HostSample`, refreshed every `every_s` seconds.

    A host enricher: `enrich_host(host)` returns the host sample with `ovs_ports`,
    `ovs_datapaths` and `ovs_mono_ns` set from the last refresh (a new one when due).
    Without OVS (no socket under any run directory) `probe()` says so and the fields
    stay empty.
    """

    name = "vswitch"

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        every_s: float = 10.0,
        timeout_s: float = 1.0,
        rundir: str | None = None,
        rpc: Callable[[str, str, list[Any], float], Any] = json_rpc,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """Create the collector.

        Args:
            root: filesystem root the run directory is under.
            every_s: refresh period; 0 refreshes every call.
            timeout_s: per-call socket timeout (a hung daemon costs at most this).
            rundir: OVS run directory (absolute, under root); default $OVS_RUNDIR or
                the first of `RUNDIRS` holding db.sock.
            rpc: the JSON-RPC call (tests replay captured replies).
            clock: monotonic clock in ns.
        """
        self._base = str(root).rstrip("/")
        self._every_ns = int(every_s * NS_PER_S)
        self._timeout_s = timeout_s
        self._rundir = rundir or os.environ.get("OVS_RUNDIR")
        self._rpc = rpc
        self._clock = clock
        self._last: _Snapshot | None = None
        self.last_gaps: tuple[str, ...] = ()
        """What the last refresh could not read (e.g. ovs-vswitchd down)."""

    def probe(self) -> Probe:
        """Refresh once; unavailable when OVSDB cannot be reached."""
        return probe_read(self, self._refresh, self._detail)

    def _detail(self, snap: _Snapshot) -> dict[str, str]:
        """The probe's facts for the sources view."""
        return {
            "rundir": self._find_rundir(),
            "every_s": f"{self._every_ns / NS_PER_S:g}",
            "datapaths": ", ".join(d.name for d in snap.datapaths) or "none",
        }

    def enrich_host(self, host: HostSample) -> HostSample:
        """`host` with the OVS fields of the last refresh, refreshing when due.

        Raises:
            CollectorError: OVSDB unreachable at a due refresh (the fields are then
                left empty rather than carried forward stale).
        """
        now = self._clock()
        if self._last is None or now - self._last.mono_ns >= self._every_ns:
            self._last = None
            self._last = self._refresh()
        return replace(
            host,
            ovs_ports=self._last.ports,
            ovs_datapaths=self._last.datapaths,
            ovs_mono_ns=self._last.mono_ns,
        )

    def _find_rundir(self) -> str:
        if self._rundir is not None:
            return self._base + self._rundir
        for rel in RUNDIRS:
            if os.path.exists(f"{self._base}/{rel}/db.sock"):
                return f"{self._base}/{rel}"
        raise CollectorError(
            "Open vSwitch not running or not installed: no db.sock in "
            + ", ".join(f"/{r}" for r in RUNDIRS)
        )

    def _refresh(self) -> _Snapshot:
        """Read OVSDB and the datapaths now.

        Raises:
            CollectorError: OVSDB unreachable or its reply malformed. An unreachable
                ovs-vswitchd only empties the datapaths (noted in `last_gaps`).
        """
        rundir = self._find_rundir()
        gaps: list[str] = []
        result = self._rpc(f"{rundir}/db.sock", "transact", _OVSDB_QUERY, self._timeout_s)
        try:
            ports, bridge_types = parse_ovsdb_ports(result)
        except (ValueError, KeyError, TypeError) as e:
            raise CollectorError(f"OVSDB reply not understood: {e}") from e
        datapaths: tuple[OvsDatapathSample, ...] = ()
        try:
            pid = read_text(f"{rundir}/ovs-vswitchd.pid").strip()
            text = self._rpc(
                f"{rundir}/ovs-vswitchd.{pid}.ctl", "dpctl/show", ["-s"], self._timeout_s
            )
            datapaths = datapath_samples(parse_dpctl_show(str(text)), bridge_types)
        except (OSError, CollectorError) as e:
            gaps.append(f"ovs-vswitchd unreachable, datapath counters unavailable: {e}")
        self.last_gaps = tuple(gaps)
        return _Snapshot(ports, datapaths, self._clock())
