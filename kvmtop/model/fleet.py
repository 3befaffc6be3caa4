"""The fleet view: one row per kvmtop endpoint (host) from kvmtop's metrics in
Prometheus (`kvmtop fleet`).

Layer: model (pure). The queries are data here; `kvmtop.collectors.prometheus` runs
them, `build_rows` turns their results into rows.

Every query aggregates `by (instance)` (or keeps the top guest per instance with
`topk`), so one refresh returns a few series per host, whatever the number of guests
(the incidents query: one per open incident, a handful per host): at 500 hosts × 50
guests a refresh moves about `len(QUERIES)` × 500 series, not 25,000 per family.
The rates are over `RATE_WINDOW` (four scrapes at the 15 s of
contrib/prometheus/prometheus.yml).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RATE_WINDOW = "1m"

Result = Sequence[tuple[Mapping[str, str], float]]
"""One instant query's vector: (labels, value) per series."""

QUERIES: dict[str, str] = {
    "up": 'up{job="{job}"}',
    "host": 'kvmtop_host_info{job="{job}"}',
    "age_s": 'time() - kvmtop_last_sample_timestamp_seconds{job="{job}"}',
    "guests": 'count by (instance) (kvmtop_guest_state{job="{job}", state="running"})',
    "vcpus": 'sum by (instance) (kvmtop_guest_vcpus{job="{job}"} * on (instance, uuid) '
    'group_left kvmtop_guest_state{job="{job}", state="running"})',
    "cpus": 'kvmtop_host_cpus{job="{job}"}',
    "steal": "topk by (instance) (1, max by (instance, guest) (100 * "
    'rate(kvmtop_guest_vcpu_delay_seconds_total{job="{job}"}[' + RATE_WINDOW + "])))",
    "exits": 'sum by (instance) (rate(kvmtop_guest_vcpu_exits_total{job="{job}"}['
    + RATE_WINDOW
    + "]))",
    "iops": "topk by (instance) (1, sum by (instance, guest) ("
    'rate(kvmtop_guest_disk_read_requests_total{job="{job}"}[' + RATE_WINDOW + "]) + "
    'rate(kvmtop_guest_disk_write_requests_total{job="{job}"}[' + RATE_WINDOW + "])))",
    "net": "topk by (instance) (1, sum by (instance, guest) (8 * ("
    'rate(kvmtop_guest_nic_receive_bytes_total{job="{job}"}[' + RATE_WINDOW + "]) + "
    'rate(kvmtop_guest_nic_transmit_bytes_total{job="{job}"}[' + RATE_WINDOW + "]))))",
    "findings": 'count by (instance, severity) (kvmtop_finding{job="{job}", '
    'severity=~"warning|critical"})',
    "incidents": 'kvmtop_incident{job="{job}", active="true"} * on (instance, id) '
    'group_left kvmtop_incident_rank{job="{job}"}',
}
"""What a refresh asks Prometheus, by figure ({job}: the scrape job of kvmtop)."""


@dataclass(frozen=True)
class Peak:
    """The guest with the highest value of a figure on one host."""

    guest: str
    value: float


@dataclass(frozen=True)
class FleetIncident:
    """An open incident of a host, as Prometheus has it (rank 1: most urgent)."""

    cause: str
    kind: str
    severity: str
    rank: int


@dataclass(frozen=True)
class HostRow:
    """One kvmtop endpoint of the fleet. None: Prometheus has no value for it (a host
    without the metric, or one whose kvmtop does not answer: `up` says which)."""

    instance: str
    hostname: str | None = None
    mode: str | None = None
    up: bool = False
    age_s: float | None = None
    guests: int | None = None
    vcpus: int | None = None
    cpus: int | None = None
    steal: Peak | None = None
    exits_per_s: float | None = None
    iops: Peak | None = None
    net_bps: Peak | None = None
    warnings: int = 0
    criticals: int = 0
    incidents: tuple[FleetIncident, ...] = field(default=())

    @property
    def vcpu_ratio(self) -> float | None:
        """vCPUs of running guests per host CPU."""
        return None if self.vcpus is None or not self.cpus else self.vcpus / self.cpus


def _by_instance(result: Result) -> dict[str, tuple[Mapping[str, str], float]]:
    return {labels.get("instance", ""): (labels, value) for labels, value in result}


def build_rows(results: Mapping[str, Result]) -> list[HostRow]:
    """One row per instance Prometheus scrapes for kvmtop (`up`), from the results of
    `queries()`, in the order of the instances."""
    got = {name: _by_instance(results.get(name, ())) for name in QUERIES}

    def value(name: str, instance: str) -> float | None:
        hit = got[name].get(instance)
        return None if hit is None else hit[1]

    def whole(name: str, instance: str) -> int | None:
        v = value(name, instance)
        return None if v is None else round(v)

    def peak(name: str, instance: str) -> Peak | None:
        hit = got[name].get(instance)
        return None if hit is None else Peak(hit[0].get("guest", ""), hit[1])

    severities: dict[tuple[str, str], int] = {
        (labels.get("instance", ""), labels.get("severity", "")): round(v)
        for labels, v in results.get("findings", ())
    }
    incidents: dict[str, list[FleetIncident]] = {}
    for labels, rank in results.get("incidents", ()):
        incidents.setdefault(labels.get("instance", ""), []).append(
            FleetIncident(
                labels.get("cause", ""),
                labels.get("kind", ""),
                labels.get("severity", ""),
                round(rank),
            )
        )
    rows = []
    for instance in sorted(got["up"]):
        host = got["host"].get(instance)
        rows.append(
            HostRow(
                instance=instance,
                hostname=None if host is None else host[0].get("hostname"),
                mode=None if host is None else host[0].get("mode"),
                up=value("up", instance) == 1.0,
                age_s=value("age_s", instance),
                guests=whole("guests", instance) or (0 if host is not None else None),
                vcpus=whole("vcpus", instance),
                cpus=whole("cpus", instance),
                steal=peak("steal", instance),
                exits_per_s=value("exits", instance),
                iops=peak("iops", instance),
                net_bps=peak("net", instance),
                warnings=severities.get((instance, "warning"), 0),
                criticals=severities.get((instance, "critical"), 0),
                incidents=tuple(sorted(incidents.get(instance, ()), key=lambda i: i.rank)),
            )
        )
    return rows


GUEST_QUERIES: dict[str, str] = {
    "state": 'kvmtop_guest_state{job="{job}", instance="{instance}"}',
    "cpu": '100 * rate(kvmtop_guest_cpu_seconds_total{job="{job}", instance="{instance}"}['
    + RATE_WINDOW
    + "])",
    "steal": 'max by (guest, uuid) (100 * rate(kvmtop_guest_vcpu_delay_seconds_total{job="{job}", '
    'instance="{instance}"}[' + RATE_WINDOW + "]))",
    "exits": 'sum by (guest, uuid) (rate(kvmtop_guest_vcpu_exits_total{job="{job}", '
    'instance="{instance}"}[' + RATE_WINDOW + "]))",
    # kvmtop_finding names the guest, not its UUID (host findings: guest="").
    "findings": 'count by (guest, severity) (kvmtop_finding{job="{job}", '
    'instance="{instance}", severity=~"warning|critical"})',
}
"""What Enter on a host asks (one host's guests: bounded by that host's guests)."""


@dataclass(frozen=True)
class GuestRow:
    """One guest of one host, as Prometheus has it."""

    uuid: str
    name: str
    state: str
    cpu_pct: float | None = None
    steal_pct: float | None = None
    exits_per_s: float | None = None
    warnings: int = 0
    criticals: int = 0


def _label(value: str) -> str:
    """A PromQL string literal's content."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def queries(job: str, instance: str | None = None) -> dict[str, str]:
    """QUERIES for the scrape job `job`, or with `instance` GUEST_QUERIES for that host."""
    texts = QUERIES if instance is None else GUEST_QUERIES
    return {
        name: text.replace("{job}", _label(job)).replace("{instance}", _label(instance or ""))
        for name, text in texts.items()
    }


def build_guest_rows(results: Mapping[str, Result]) -> list[GuestRow]:
    """One row per guest of the host (`state`), from `queries(job, instance)`'s results,
    by name."""

    def by_uuid(name: str) -> dict[str, float]:
        return {labels.get("uuid", ""): v for labels, v in results.get(name, ())}

    cpu, steal, exits = by_uuid("cpu"), by_uuid("steal"), by_uuid("exits")
    counts: dict[tuple[str, str], int] = {
        (labels.get("guest", ""), labels.get("severity", "")): round(v)
        for labels, v in results.get("findings", ())
    }
    rows = []
    for labels, _ in results.get("state", ()):
        u, name = labels.get("uuid", ""), labels.get("guest", "")
        rows.append(
            GuestRow(
                uuid=u,
                name=name,
                state=labels.get("state", ""),
                cpu_pct=cpu.get(u),
                steal_pct=steal.get(u),
                exits_per_s=exits.get(u),
                warnings=counts.get((name, "warning"), 0),
                criticals=counts.get((name, "critical"), 0),
            )
        )
    return sorted(rows, key=lambda r: (r.name, r.uuid))


SORTS: dict[str, Callable[[HostRow], Any]] = {
    "incidents": lambda r: (-len(r.incidents), -r.criticals, -r.warnings, r.instance),
    "steal": lambda r: (-(r.steal.value if r.steal else -1.0), r.instance),
    "exits": lambda r: (-(r.exits_per_s if r.exits_per_s is not None else -1.0), r.instance),
    "ratio": lambda r: (-(r.vcpu_ratio if r.vcpu_ratio is not None else -1.0), r.instance),
    "instance": lambda r: r.instance,
}
"""Row orders, the worst first; hosts that do not answer come before all (`ordered`)."""


def ordered(rows: Sequence[HostRow], sort: str, needle: str = "") -> list[HostRow]:
    """The rows to show: those whose host name or instance contains `needle`
    (case-insensitive), hosts not answering first, then by `sort` (a SORTS key)."""
    low = needle.lower()
    kept = [r for r in rows if low in (r.hostname or "").lower() or low in r.instance.lower()]
    return sorted(kept, key=lambda r: (r.up, SORTS[sort](r)))
