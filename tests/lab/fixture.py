"""pytest plugin: the kvmtop lab (real libvirt/QEMU guests) as a session fixture.

Register it from ``tests/conftest.py`` with
``pytest_plugins = ["tests.lab.fixture"]``.  Tests marked ``@pytest.mark.lab``
take the ``lab`` fixture, which brings up the ``test`` scenario with
``tests/lab/lab up test`` (a running lab is reused), loads its
``manifest.json`` and, at the end of the session, runs ``lab down`` unless
``KVMTOP_LAB_KEEP=1`` or another pytest session is still using the lab
(each session holds a lease file ``<state dir>/leases/<pid>``).

Tests marked ``@pytest.mark.lab_recording`` judge a recording of the whole
session (tests/lab/recording.py): when one is selected, they are moved to the
end of the run and the ``lab`` fixture starts ``kvmtop record`` on the lab as
soon as it is up, so their ten minutes of observation overlap the other tests.

Tests marked ``@pytest.mark.nested`` hold on any KVM host: they read the host facts
that decide what to expect (lockdown, the loaded KVM module, whether kvm:kvm_exit
fires, the manifest) themselves. They run here with the rest and again inside the
nested lab's SVM host (tests/lab/nested.py), where ``KVMTOP_LAB_SCENARIO=kvm``
makes this fixture bring up the ``kvm`` scenario instead of ``test``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.lab.prometheus import SessionPrometheus, start_prometheus
from tests.lab.recording import SessionRecording, start_recording

LAB_SCRIPT = Path(__file__).resolve().with_name("lab")
DEFAULT_STATE_DIR = Path("/var/lib/kvmtop-lab")
# The scenario the `lab` fixture brings up: `test` on this host, `kvm` inside the nested
# lab's L1 host (tests/lab/nested.py sets KVMTOP_LAB_SCENARIO there).
SCENARIO = os.environ.get("KVMTOP_LAB_SCENARIO", "test")
NESTED_MARK = "nested"
UP_TIMEOUT_S = 1200
RECORDING_MARK = "lab_recording"
PROMETHEUS_MARK = "lab_prometheus"
_WANT_RECORDING = pytest.StashKey[bool]()
_WANT_PROMETHEUS = pytest.StashKey[bool]()
# One recording per session: modules that import `lab` into their namespace
# (tests/collectors/test_processes.py, test_tracepoints.py) get their own instance of
# this session fixture, and each must not restart the leak or start a recorder again.
_RECORDING = pytest.StashKey[SessionRecording]()
_PROMETHEUS = pytest.StashKey[SessionPrometheus]()


@dataclass(frozen=True)
class LabGuest:
    """One guest of the running lab, as listed in manifest.json."""

    name: str
    uuid: str
    kind: str  # "linux" (TCG or KVM) or "probe" (boot-sector KVM probe)
    libvirt_type: str  # "kvm" or "qemu"
    libvirt_type_reason: str
    vcpus: int
    memory_mib: int
    workload: str
    workload_params: list[dict[str, Any]]
    bridge: str | None
    ip: str | None
    mac: str | None
    disk: str
    console_log: str
    contention_group: str | None
    expected: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> LabGuest:
        """Build a guest from one ``guests`` entry of manifest.json."""
        return cls(
            name=entry["name"],
            uuid=entry["uuid"],
            kind=entry["kind"],
            libvirt_type=entry["libvirt_type"],
            libvirt_type_reason=entry["libvirt_type_reason"],
            vcpus=int(entry["vcpus"]),
            memory_mib=int(entry["memory_mib"]),
            workload=entry["workload"],
            workload_params=list(entry["workload_params"]),
            bridge=entry.get("bridge"),
            ip=entry.get("ip"),
            mac=entry.get("mac"),
            disk=entry["disk"],
            console_log=entry["console_log"],
            contention_group=entry.get("contention_group"),
            expected=dict(entry.get("expected", {})),
        )

    @property
    def is_kvm(self) -> bool:
        """True when libvirt runs this guest with KVM acceleration."""
        return self.libvirt_type == "kvm"


@dataclass
class Lab:
    """The running lab: its guests and a handle on the fault knobs."""

    state_dir: Path
    scenario: str
    guests: dict[str, LabGuest]
    manifest: dict[str, Any]
    script: Path = LAB_SCRIPT
    recording: SessionRecording | None = None
    """The session's `kvmtop record` (only when a `lab_recording` test is selected)."""
    prometheus: SessionPrometheus | None = None
    """The session's Prometheus, Alertmanager and kvmtop endpoints (with the recording)."""

    @classmethod
    def load(cls, state_dir: Path, script: Path = LAB_SCRIPT) -> Lab:
        """Read ``state_dir/manifest.json``."""
        manifest = json.loads((state_dir / "manifest.json").read_text())
        guests = {name: LabGuest.from_manifest(entry) for name, entry in manifest["guests"].items()}
        return cls(
            state_dir=state_dir,
            scenario=manifest["scenario"],
            guests=guests,
            manifest=manifest,
            script=script,
        )

    def run(self, *args: str, timeout: float = 120) -> str:
        """Run ``tests/lab/lab ARGS`` and return its combined output; raise on failure."""
        proc = subprocess.run(
            [str(self.script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_lab_env(self.state_dir),
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"lab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout + proc.stderr

    def fault(self, name: str, *args: str) -> str:
        """Apply a runtime fault: contend, uncontend, duty, leak, stall, iotune,
        shape, unshape, reset (journaled in ``run/faults/journal``)."""
        return self.run("fault", name, *args)

    def contention_group(self, group: str) -> list[LabGuest]:
        """Guests that ``fault contend`` pins together."""
        return [g for g in self.guests.values() if g.contention_group == group]

    @property
    def kvm_guests(self) -> list[LabGuest]:
        """Guests running under KVM (the probes here; every guest on a VMX/SVM host)."""
        return [g for g in self.guests.values() if g.is_kvm]


def _lab_env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["KVMTOP_LAB_DIR"] = str(state_dir)
    return env


def _take_lease(state_dir: Path) -> Path:
    leases = state_dir / "leases"
    leases.mkdir(parents=True, exist_ok=True)
    lease = leases / str(os.getpid())
    lease.write_text("")
    return lease


def _other_live_leases(state_dir: Path) -> list[int]:
    """Pids of other processes that hold a lease and are still alive."""
    alive = []
    for lease in (state_dir / "leases").glob("*"):
        if not lease.name.isdigit() or int(lease.name) == os.getpid():
            continue
        try:
            os.kill(int(lease.name), 0)
        except ProcessLookupError:
            lease.unlink(missing_ok=True)
            continue
        except PermissionError:
            pass
        alive.append(int(lease.name))
    return alive


def kvmtop_interval_s(state_dir: Path | None = None) -> float:
    """The interval kvmtop runs at in lab tests on the scenario that is up (its
    manifest's `kvmtop_interval_s`: 2 s, 5 s in the nested lab's slow L1)."""
    state = state_dir or Path(os.environ.get("KVMTOP_LAB_DIR", str(DEFAULT_STATE_DIR)))
    manifest = json.loads((state / "manifest.json").read_text())
    return float(manifest.get("kvmtop_interval_s", 2.0))


def lab_unavailable_reason() -> str | None:
    """Why the lab cannot run on this machine, or None when it can."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm is missing: the kvmtop lab needs a KVM host"
    if os.geteuid() != 0:
        return "the kvmtop lab needs root (libvirtd, bridges, network namespaces)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``lab`` marker."""
    config.addinivalue_line(
        "markers",
        "lab: needs the real libvirt/QEMU/KVM lab (tests/lab/lab up test); "
        "skipped without /dev/kvm or root",
    )
    config.addinivalue_line(
        "markers",
        f"{RECORDING_MARK}: judges the session-long lab recording; runs after every other test",
    )
    config.addinivalue_line(
        "markers",
        f"{PROMETHEUS_MARK}: judges the session's Prometheus and Alertmanager scraping "
        f"kvmtop (tests/lab/prometheus.py; also a {RECORDING_MARK} test)",
    )
    config.addinivalue_line(
        "markers",
        f"{NESTED_MARK}: a lab test that holds on every KVM host, deciding what to expect "
        "from facts it reads itself; also run inside the nested lab's SVM host "
        "(`tests/lab/lab nested test`)",
    )


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move `lab_recording` tests to the end and note that the lab should be recorded."""
    last = [i for i in items if i.get_closest_marker(RECORDING_MARK)]
    if last:
        items[:] = [i for i in items if not i.get_closest_marker(RECORDING_MARK)] + last
    config.stash[_WANT_RECORDING] = bool(last)
    config.stash[_WANT_PROMETHEUS] = any(i.get_closest_marker(PROMETHEUS_MARK) for i in last)


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Bring up (or reuse) the scenario (``test``, or ``$KVMTOP_LAB_SCENARIO``) and yield it.

    Faults left over from an earlier session are cleared first (unless another
    session is using the lab right now).  When a `lab_recording` test is selected,
    the session recording starts here (tests/lab/recording.py).  At the end of
    the session the lab is taken down unless ``KVMTOP_LAB_KEEP=1`` or another
    live pytest session holds a lease on it.
    """
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    state_dir = Path(os.environ.get("KVMTOP_LAB_DIR", str(DEFAULT_STATE_DIR)))
    lease = _take_lease(state_dir)
    env = _lab_env(state_dir)
    if not _other_live_leases(state_dir):
        # Only this session's own lease: another scenario left running (e.g. by
        # `make demo`) may be switched to the test scenario.
        env["KVMTOP_LAB_FORCE"] = "1"
    proc = subprocess.run(
        [str(LAB_SCRIPT), "up", SCENARIO],
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
        env=env,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"`lab up {SCENARIO}` failed ({proc.returncode}):\n{proc.stdout}{proc.stderr[-6000:]}",
            pytrace=False,
        )
    lab_ = Lab.load(state_dir)
    if not _other_live_leases(state_dir):  # leftovers of a crashed session
        lab_.fault("reset")
    if pytestconfig.stash.get(_WANT_RECORDING, False):
        if _RECORDING not in pytestconfig.stash:
            pytestconfig.stash[_RECORDING] = start_recording(
                lab_, tmp_path_factory.mktemp("lab-recording")
            )
        wanted = pytestconfig.stash.get(_WANT_PROMETHEUS, False)
        if wanted and _PROMETHEUS not in pytestconfig.stash:
            pytestconfig.stash[_PROMETHEUS] = start_prometheus(
                tmp_path_factory.mktemp("lab-prometheus"),
                pytestconfig.stash[_RECORDING].config,
                kvmtop_interval_s(state_dir),
            )
        lab_.recording = pytestconfig.stash[_RECORDING]
        lab_.prometheus = pytestconfig.stash.get(_PROMETHEUS, None)
    try:
        yield lab_
    finally:
        if lab_.recording is not None:
            lab_.recording.close()  # idempotent: every instance ends with the session
        if lab_.prometheus is not None:
            lab_.prometheus.close()
        lease.unlink(missing_ok=True)
        if os.environ.get("KVMTOP_LAB_KEEP") != "1" and not _other_live_leases(state_dir):
            subprocess.run(
                [str(LAB_SCRIPT), "down"],
                capture_output=True,
                text=True,
                timeout=300,
                # This session's lab only: a nested lab (tests/lab/nested.py) may be in use.
                env={**_lab_env(state_dir), "KVMTOP_LAB_KEEP_NESTED": "1"},
            )


def warm_arp(*addrs: str) -> None:
    """One ICMP echo to each address so the host's ARP table knows it (test set-up
    only: the lab's guests never talk to the host on their own); skips the test when
    this process may not send ICMP."""
    from kvmtop.collectors.base import CollectorError
    from kvmtop.collectors.rtt_probers import IcmpProber

    try:
        prober = IcmpProber()
    except CollectorError as e:
        pytest.skip(str(e))
    try:
        for addr in addrs:
            prober.send(addr, addr, None, time.monotonic_ns())
        time.sleep(1.0)  # TCG guests answer slowly
        prober.collect(time.monotonic_ns(), 10**12)
    finally:
        prober.close()
