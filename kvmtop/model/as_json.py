"""kvmtop's values as JSON: batch lines, the report's JSON, JSON lines exports and
`fleet --batch --format json`.

Layer: model (pure). The schema is documented in README.md ("Batch JSON"). A value
that cannot be known is null, never 0, and every name is kept exact (`json_text`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from kvmtop.model.fields import FIELDS
from kvmtop.model.finding import Finding
from kvmtop.model.fleet import HostRow
from kvmtop.model.incident import Incident, Member
from kvmtop.model.rates.disk import DiskRates
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.rates.host import HostRates
from kvmtop.model.rates.net import NicRates
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.units import NS_PER_MS


def json_text(obj: Any, *, indent: int | None = None) -> str:
    """`obj` as JSON text, compact on one line unless `indent` is given.

    ASCII only (`ensure_ascii`, json's default, kept on purpose): every other
    character is written as a `\\uXXXX` escape, control characters as `\\u001b` or
    `\\n`. A parser reads back the exact string (a name stays data, byte for byte),
    and no control, C1 or bidi character reaches a terminal the JSON is printed on.
    Batch JSON, `kvmtop report --format json` and `kvmtop export --format jsonl`
    all write through here.
    """
    separators = (",", ":") if indent is None else None
    return json.dumps(obj, ensure_ascii=True, indent=indent, separators=separators)


def _round(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


def disk_json(d: DiskRates, host: HostRates | None) -> dict[str, Any]:
    """One guest disk next to the host device under it (`host_*` null when unknown)."""
    dev = host.disk(d.host_dev) if host is not None else None
    return {
        "target": d.target,
        "path": d.path,
        "iops": _round(d.iops),
        "read_iops": _round(d.read_iops),
        "write_iops": _round(d.write_iops),
        "flush_iops": _round(d.flush_iops),
        "read_bytes_per_s": _round(d.read_bytes_per_s),
        "write_bytes_per_s": _round(d.write_bytes_per_s),
        "read_ms": _round(d.read_ms),
        "write_ms": _round(d.write_ms),
        "flush_ms": _round(d.flush_ms),
        "host_device": d.host_dev,
        "host_read_ms": _round(dev.read_ms) if dev else None,
        "host_write_ms": _round(dev.write_ms) if dev else None,
        "host_util_pct": _round(dev.util_pct) if dev else None,
        "host_queue_depth": _round(dev.queue_depth) if dev else None,
    }


def nic_json(n: NicRates, host: HostRates | None) -> dict[str, Any]:
    """One guest vNIC (guest point of view) with its switch, uplinks and RTTs."""
    uplinks = host.switch_uplinks.get(n.bridge, ()) if host is not None and n.bridge else ()
    return {
        "ifname": n.name,
        "bridge": n.bridge,
        "switch": n.switch,
        "uplink": uplinks[0] if uplinks else None,
        "uplinks": list(uplinks),
        "rx_bps": _round(n.rx_bps),
        "tx_bps": _round(n.tx_bps),
        "rx_pps": _round(n.rx_pps),
        "tx_pps": _round(n.tx_pps),
        "rx_drops_per_s": _round(n.rx_drops_per_s),
        "tx_drops_per_s": _round(n.tx_drops_per_s),
        "addr": n.addr,
        "rtt_ms": _round(n.rtt_ms),
        "rtt_p95_ms": _round(n.rtt_p95_ms),
        "host_rtt_ms": _round(n.host_rtt_ms),
        "rtt_reason": n.rtt_reason,
    }


_GUEST_PLAN: tuple[tuple[str, Callable[[GuestRates], Any], int | None], ...] = tuple(
    (f.json, f.json_value or f.value, f.digits) for f in FIELDS if f.json is not None
)
"""Per JSON field of the catalogue: name, getter, decimals (None: as it is)."""


def guest_json(g: GuestRates, host: HostRates | None = None) -> dict[str, Any]:
    """The batch JSON object of one guest: the catalogue's JSON fields
    (`kvmtop.model.fields.FIELDS`), then its vCPUs, disks, vNICs, threads and `na`;
    `host` resolves each disk's host device and each vNIC's uplinks (without it those
    are null)."""
    out: dict[str, Any] = {}
    for name, get, digits in _GUEST_PLAN:
        v = get(g)
        out[name] = v if digits is None or v is None else round(v, digits)
    out["vcpu"] = [
        {
            "index": v.index,
            "cpu_pct": _round(v.cpu_pct),
            "steal_pct": _round(v.steal_pct),
            "exits_per_s": _round(v.exits_per_s),
        }
        for v in g.vcpu
    ]
    out["disks"] = [disk_json(d, host) for d in g.disks]
    out["nics"] = [nic_json(n, host) for n in g.nics]
    out["threads"] = [
        {
            "tid": t.tid,
            "kind": t.kind,
            "name": t.name,
            "cpu_pct": _round(t.cpu_pct),
            "delay_pct": _round(t.delay_pct),
        }
        for t in g.threads
    ]
    out["na"] = dict(g.na)
    return out


def host_json(h: HostRates, snap: Snapshot) -> dict[str, Any]:
    """The batch JSON object of the host baseline."""
    s = snap.summary
    return {
        "ncpu": h.ncpu,
        "cpu_busy_pct": _round(h.cpu_busy_pct),
        "cpu_steal_pct": _round(h.cpu_steal_pct),
        "cpu_iowait_pct": _round(h.cpu_iowait_pct),
        "run_delay_pct": _round(h.run_delay_pct),
        "psi_cpu_some_pct": _round(h.psi_cpu_some_pct),
        "psi_mem_some_pct": _round(h.psi_mem_some_pct),
        "psi_mem_full_pct": _round(h.psi_mem_full_pct),
        "psi_io_some_pct": _round(h.psi_io_some_pct),
        "psi_io_full_pct": _round(h.psi_io_full_pct),
        "mem_total_bytes": h.mem_total_bytes,
        "mem_used_bytes": h.mem_used_bytes,
        "load1": h.load1,
        "softnet_drops_per_s": _round(h.softnet_drops_per_s),
        "exits_per_s": _round(s.exits_per_s),
        "guests_running": s.guests_running,
        "vcpus_running": s.vcpus_running,
        "vcpu_pcpu_ratio": _round(s.vcpu_pcpu_ratio),
        "mem_overcommit_ratio": _round(s.mem_overcommit_ratio),
        "self_cpu_pct": _round(h.self_cpu_pct),
        "self_rss_bytes": h.self_rss_bytes,
        "disks": [
            {
                "name": d.name,
                "read_iops": _round(d.read_iops),
                "write_iops": _round(d.write_iops),
                "read_ms": _round(d.read_ms),
                "write_ms": _round(d.write_ms),
                "util_pct": _round(d.util_pct),
            }
            for d in h.disks
        ],
        "nets": [
            {
                "name": n.name,
                "kind": n.kind,
                "speed_mbps": n.speed_mbps,
                "rx_bps": _round(n.rx_bps),
                "tx_bps": _round(n.tx_bps),
                "util_pct": _round(n.util_pct),
            }
            for n in h.nets
        ],
        "na": dict(h.na),
    }


def finding_json(f: Finding) -> dict[str, Any]:
    """The batch JSON object of one finding."""
    return {
        "detector": f.detector,
        "severity": f.severity,
        "guest": f.guest,
        "subject": f.subject,
        "subject_name": f.subject_name,
        "message": f.message,
        "since": f.since_s,
        "evidence": dict(f.evidence),
        "baseline": dict(f.baseline),
        "cause": f.cause,
        "cause_guests": list(f.cause_guests),
    }


def member_json(m: Member) -> dict[str, Any]:
    """The batch JSON object of one finding of an incident."""
    return {
        "detector": m.detector,
        "subject": m.subject,
        "subject_name": m.subject_name,
        "guest": m.guest,
        "severity": m.severity,
        "since": m.since_s,
        "message": m.message,
        "evidence": dict(m.evidence),
        "active": m.active,
    }


def incident_json(i: Incident) -> dict[str, Any]:
    """The batch JSON object of one incident (docs/detectors.md#incidents)."""
    return {
        "id": i.id,
        "cause": i.cause,
        "kind": i.kind,
        "title": i.title,
        "severity": i.severity,
        "since": i.since_s,
        "last_bad": i.last_bad_s,
        "active": i.active,
        "crossings": i.crossings,
        "rank": i.rank,
        "eta_s": _round(i.eta_s),
        "guests": list(i.guests),
        "members": [member_json(m) for m in i.members],
        "evidence": dict(i.evidence),
        "advice": i.advice,
    }


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    """One batch JSON line: {"time", "host", "guests", "incidents", "findings", "sources"}."""
    return {
        "time": round(snap.wall_s, 3),
        "interval_s": snap.interval_s,
        "host": host_json(snap.host, snap),
        "guests": [guest_json(g, snap.host) for g in snap.guests],
        "incidents": [incident_json(i) for i in snap.incidents],
        "findings": [finding_json(f) for f in snap.findings],
        "sources": [
            {
                "name": s.name,
                "ok": s.ok,
                "reason": s.reason,
                "duration_ms": s.duration_ns / NS_PER_MS,
            }
            for s in snap.sources
        ],
    }


def row_json(row: HostRow) -> dict[str, Any]:
    """One host as batch JSON (every field, and vcpu_ratio)."""
    return dataclasses.asdict(row) | {"vcpu_ratio": row.vcpu_ratio}
