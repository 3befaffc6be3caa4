#!/usr/bin/env python3
"""Scenario definitions, libvirt domain XML and manifest.json for the kvmtop lab.

Called by ``tests/lab/lab``; standard library only, so it runs with the
host's ``/usr/bin/python3`` before any virtualenv exists.

    labgen.py plan SCENARIO --state-dir DIR --linux-type qemu --linux-reason TEXT
                   --probe-type kvm|none --probe-reason TEXT
        writes DIR/domains/<name>.xml, DIR/domains/plan.tsv, DIR/domains/faults.txt,
        DIR/domains/bridges.txt and DIR/manifest.json
    labgen.py modorder MODDIR NAME...
        prints the .ko paths (relative to MODDIR) of NAME and their
        dependencies, dependencies first
    labgen.py vmlinux BZIMAGE OUT
        writes the uncompressed ELF kernel inside BZIMAGE to OUT (what the Linux
        guests boot: QEMU's PVH entry, no decompression in the guest)
    labgen.py scenarios
        prints the scenario names
    labgen.py cpu [SECONDS]
        CPU used by each lab guest and daemon over SECONDS (default 10)
    labgen.py flowing --state-dir DIR [--seconds S]
        prints the guests whose network or disk workload moves at less than a
        quarter of its manifest rate (exit status 1 when there is one)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import struct
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

LAB_NS = "http://kvmtop.dev/lab/1"
UUID_NS = uuid.UUID("6c0c6d8e-2f55-4c1a-9d3b-6b76c7a5e0b1")

# Network layout (all inside 10.213.0.0/16, which only the lab uses).
BRIDGES = {
    "linux": {
        "name": "labbr0",
        "host_ip": "10.213.1.1/24",
        "uplink_ip": "10.213.1.254/24",
        "uplink_veth": "labup0",
        "uplink_peer": "labup1",
    },
    "ovs": {
        "name": "labovs0",
        "host_ip": "10.213.2.1/24",
        "uplink_ip": "10.213.2.254/24",
        "uplink_veth": "labov0",
        "uplink_peer": "labov1",
    },
}
UPLINK_NETNS = "lab-up"
# UDP port of the kvmload controls: cpu takes "duty=N", memleak "restart", netpeer "stall=N".
CTL_PORT = 7000

# KVM probe images (guest/probe.S): variant -> (VARIANT number, exit-causing
# instructions per timer wake-up).  MMIO exits are far dearer than port I/O
# ones (measured under PVM: 200 stores per wake-up took 44 % of a core and
# could not keep up with the tick), hence the smaller count.  Under the nested
# lab's emulated SVM every exit is dearer still (measured in L1: 165 µs of vCPU
# time per port write, so 200 per wake-up took 46 % of a CPU and kept up with
# only 75 % of the ticks): `pio20` is the port-I/O probe for that scenario.
PROBES = {"hlt": (0, 0), "pio": (1, 200), "pio20": (1, 20), "mmio": (2, 20), "cpuid": (3, 200)}
# What the VARIANT number makes the probe do after each wake-up (guest/probe.S).
PROBE_KINDS = {0: "hlt", 1: "pio", 2: "mmio", 3: "cpuid"}
PROBE_WHAT = {
    "hlt": "sti; hlt only (timer wake-ups)",
    "pio": "outb to port 0x80 (ignored by QEMU) per timer wake-up",
    "mmio": "byte store to unassigned 0x80000000 (unreal mode) per timer wake-up",
    "cpuid": "cpuid per timer wake-up",
}

# The BIOS timer (PIT channel 0, 1193182/65536 Hz) wakes `hlt`.  On top of the
# designed exits each wake-up costs a few of its own: the hlt exit itself and
# SeaBIOS's IRQ0 handler (PIC EOI ...).  Measured on the reference PVM host
# with `virsh domstats --vcpu` over 20-30 s: 1.2-1.6 exits per wake-up beyond
# the designed ones (README.md).
PIT_HZ = 1193182 / 65536
BASE_EXITS_PER_WAKE = 1.3
# SeaBIOS's IRQ0 handler writes the PIC EOI: one port I/O exit per wake-up on
# VMX/SVM hosts (not measurable here: PVM leaves io_exits at 0).
BASE_IO_EXITS_PER_WAKE = 1.0


@dataclass
class Guest:
    """One guest of a scenario."""

    name: str
    kind: str  # "linux" or "probe"
    workload: str = "idle"  # linux: kvmload specs joined by '+'; probe: variant
    ip: str | None = None
    bridge: str | None = None  # key of BRIDGES
    vcpus: int = 1
    memory_mib: int = 128
    disk_mib: int = 64
    contention_group: str | None = None
    contend_duty: int | None = None
    notes: str = ""


@dataclass
class Scenario:
    """A named set of guests plus the faults applied right after bring-up."""

    name: str
    description: str
    guests: list[Guest]
    faults: list[list[str]] = field(default_factory=list)
    # The interval kvmtop runs at in the lab tests on this scenario (manifest.json).
    kvmtop_interval_s: float = 2.0


def mac_for_ip(ip: str) -> str:
    """The MAC address a lab guest with this IP gets (52:54:00:d5:<3rd>:<4th>)."""
    octets = [int(x) for x in ip.split("/")[0].split(".")]
    return f"52:54:00:d5:{octets[2]:02x}:{octets[3]:02x}"


def _probe(variant: str) -> Guest:
    """A boot-sector probe guest, named after what it does (`pio20` is lab-probe-pio)."""
    num, count = PROBES[variant]
    kind = PROBE_KINDS[num]
    what = PROBE_WHAT[kind]
    return Guest(
        name=f"lab-probe-{kind}",
        kind="probe",
        workload=variant,
        memory_mib=16,
        disk_mib=0,
        notes=f"KVM probe: {what}" if kind == "hlt" else f"KVM probe: {count} x {what}",
    )


def _idle() -> Guest:
    return Guest(
        "lab-idle", "linux", "idle", "10.213.1.10/24", "linux", notes="boots and does nothing"
    )


def _steal(half: str, demo: bool = False, duty: int = 10, contend_duty: int = 100) -> Guest:
    """lab-steal-a/-b: `duty` % busy; `lab fault contend` pins the pair onto one host
    CPU and raises both to `contend_duty` %."""
    other = "b" if half == "a" else "a"
    if demo:
        notes = f"contended from the start (pinned with lab-steal-{other}, 100 % busy)"
    else:
        notes = (
            f"{duty} % busy; `lab fault contend` raises it to {contend_duty} % and pins it with "
            f"lab-steal-{other} onto one host CPU"
        )
    return Guest(
        f"lab-steal-{half}",
        "linux",
        f"cpu:loops=1,duty={duty},ctl={CTL_PORT}",
        f"10.213.1.{14 if half == 'a' else 15}/24",
        "linux",
        contention_group="steal",
        contend_duty=contend_duty,
        notes=notes,
    )


def _netpeer() -> Guest:
    return Guest(
        "lab-netpeer",
        "linux",
        f"netpeer:port=9000,ctl={CTL_PORT}",
        "10.213.1.12/24",
        "linux",
        notes="UDP sink for lab-net; `lab fault stall lab-netpeer S` takes its eth0 "
        "down for S seconds (a guest not draining its RX ring)",
    )


def _net(pps: int, uplink_pps: int) -> Guest:
    """lab-net: UDP to lab-netpeer at `pps` and to the uplink namespace at `uplink_pps`."""
    return Guest(
        "lab-net",
        "linux",
        f"net:dst=10.213.1.12,port=9000,pps={pps},size=1000,"
        f"mac={mac_for_ip('10.213.1.12')}"
        f"+net:dst=10.213.1.254,port=9001,pps={uplink_pps},size=1400",
        "10.213.1.11/24",
        "linux",
        notes="UDP to lab-netpeer over labbr0 (a permanent ARP entry for it, so "
        "the flow goes on while lab-netpeer is stalled), and to the uplink namespace "
        "(through labup0, where `lab fault shape` applies)",
    )


def _memleak() -> Guest:
    return Guest(
        "lab-memleak",
        "linux",
        f"memleak:rate=5,max=96,ctl={CTL_PORT}",
        "10.213.1.16/24",
        "linux",
        memory_mib=192,
        notes="leaks a steady 5 MiB/min up to 96 MiB (19 min), then frees all and "
        "starts over; `lab fault leak lab-memleak` restarts it from zero at a known "
        "time. 192 MiB: the initramfs and kernel leave about 120 MiB usable",
    )


def _disk(iops: int) -> Guest:
    return Guest(
        "lab-disk",
        "linux",
        f"disk:mode=rw,iops={iops},bs=4096",
        "10.213.1.17/24",
        "linux",
        notes=f"{iops} random 4 KiB O_DIRECT IOPS on vda, half reads half "
        "writes; `lab fault iotune lab-disk N` throttles it",
    )


def _cpu(duty: int) -> Guest:
    return Guest(
        "lab-cpu",
        "linux",
        f"cpu:loops=1,duty={duty}",
        "10.213.1.13/24",
        "linux",
        notes=f"one loop busy {duty} % of every 100 ms",
    )


SCENARIOS: dict[str, Scenario] = {
    "test": Scenario(
        name="test",
        description="what the end-to-end tests need: every workload kind, two contention "
        "guests, an OVS guest and three KVM probes",
        guests=[
            _idle(),
            _net(500, 100),
            _netpeer(),
            _cpu(50),
            _steal("a"),
            _steal("b"),
            _memleak(),
            _disk(50),
            Guest(
                "lab-ovs",
                "linux",
                "net:dst=10.213.2.254,port=9002,pps=50,size=500",
                "10.213.2.10/24",
                "ovs",
                notes="on the OVS bridge (userspace datapath); light UDP to the uplink namespace",
            ),
            _probe("hlt"),
            _probe("pio"),
            _probe("mmio"),
        ],
    ),
    "kvm": Scenario(
        name="kvm",
        description="the guests of `test` that the nested lab's L1 host runs under its own "
        "KVM (SVM emulated by TCG): every workload kind at rates its one emulated CPU "
        "keeps up with (every L2 exit is emulated: measured in L1, 20 disk IOPS cost 22 % "
        "of a CPU, 100 packets/s 23 %), no OVS guest, no MMIO probe",
        guests=[
            _idle(),
            _net(50, 10),
            _netpeer(),
            _cpu(20),
            # Contended at 90 %, not 100 %: an L2 vCPU that spins without ever exiting
            # keeps its L1 CPU in guest mode, and under TCG's emulated SVM a host
            # interrupt can be missed there (measured: L1 CPU 0 stuck in L2 for minutes
            # after `contend` at 100 %, then RCU stalls and a hung L1). A vCPU that
            # halts 10 ms in 100 returns to L1 at least that often.
            _steal("a", duty=5, contend_duty=90),
            _steal("b", duty=5, contend_duty=90),
            _memleak(),
            _disk(10),
            _probe("hlt"),
            _probe("pio20"),
        ],
        # One emulated CPU: a bulk stats call takes 0.7-1.4 s there (10 guests) and a
        # kvmtop tick 0.57 s of CPU; at 2 s kvmtop and the session recording left the
        # guests too little CPU to keep their rates (a probe's PIT at 12 of 18 Hz).
        kvmtop_interval_s=5.0,
    ),
    "demo": Scenario(
        name="demo",
        description="a small host where things visibly go wrong: a leak, a contended pair, "
        "a throttled disk, a flood through a saturated uplink",
        guests=[
            _idle(),
            Guest(
                "lab-memleak",
                "linux",
                "memleak:rate=12,max=96",
                "10.213.1.16/24",
                "linux",
                # 8 minutes of steady growth per cycle: the leak check judges a series
                # of 3 (urgent) to 5 minutes.
                memory_mib=192,
                notes="leaks 12 MiB/min up to 96 MiB (8 min), frees it and starts over",
            ),
            _steal("a", demo=True),
            _steal("b", demo=True),
            Guest(
                "lab-disk",
                "linux",
                "disk:mode=rw,iops=200,bs=4096",
                "10.213.1.17/24",
                "linux",
                notes="wants 200 IOPS, throttled to 20 by <iotune>",
            ),
            Guest(
                "lab-net",
                "linux",
                "net:dst=10.213.1.254,port=9001,pps=1500,size=1200",
                "10.213.1.11/24",
                "linux",
                notes="14.9 Mbit/s of UDP into an uplink shaped to 4 Mbit/s: drops",
            ),
            _probe("pio"),
            _probe("cpuid"),
        ],
        faults=[["contend"], ["iotune", "lab-disk", "20"], ["shape", "4mbit"]],
    ),
}


# ---------------------------------------------------------------------------
# workload strings


Workload = dict[str, Any]  # {"kind": str, "params": {name: int | float | str}}


def parse_workload(workload: str) -> list[Workload]:
    """Parse ``kind:k=v,...+kind:...`` into ``[{"kind": ..., "params": {...}}]``.

    Numeric values become int or float; everything else stays a string.
    """
    parts: list[Workload] = []
    for spec in workload.split("+"):
        kind, _, rest = spec.partition(":")
        params: dict[str, object] = {}
        for item in filter(None, rest.split(",")):
            key, _, value = item.partition("=")
            params[key] = _number(value)
        parts.append({"kind": kind, "params": params})
    return parts


def _number(value: str) -> object:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def expected_values(guest: Guest, scenario: Scenario, pvm: bool) -> dict[str, Any]:
    """Values a test can compare measurements with, derived from the workload.

    `pvm` says whether /dev/kvm is PVM, which counts port I/O exits only in
    `exits` (io_exits stays 0) and emulates CPUID without an exit.
    """
    exp: dict[str, Any] = {}
    if guest.kind == "probe":
        num, count = PROBES[guest.workload]
        variant = PROBE_KINDS[num]
        exiting = 0 if variant == "hlt" or (variant == "cpuid" and pvm) else count
        pio = count if variant == "pio" else 0
        exp["wake_hz"] = round(PIT_HZ, 4)
        exp["exits_per_wake"] = count
        exp["halt_exits_per_s"] = round(PIT_HZ, 1)
        exp["exits_per_s"] = round(PIT_HZ * (exiting + BASE_EXITS_PER_WAKE), 1)
        exp["pio_exits_per_s"] = round(PIT_HZ * pio, 1)
        exp["io_exits_per_s"] = 0.0 if pvm else round(PIT_HZ * (pio + BASE_IO_EXITS_PER_WAKE), 1)
        exp["mmio_exits_per_s"] = round(PIT_HZ * count, 1) if variant == "mmio" else 0.0
        exp["formula"] = (
            f"exits_per_s = wake_hz * (exits_per_wake + {BASE_EXITS_PER_WAKE}); "
            "wake_hz = 1193182/65536 (BIOS PIT tick)"
            + (
                "; PVM: io_exits stays 0 (port I/O exits are counted in exits "
                "only) and CPUID exits are not counted"
                if pvm
                else ""
            )
        )
        return exp
    cpu = 0.0
    for part in parse_workload(guest.workload):
        kind, p = part["kind"], part["params"]
        if kind == "cpu":
            cpu += float(p.get("loops", 1)) * float(p.get("duty", 100))
            if guest.contend_duty is not None:
                exp["contend_cpu_pct"] = min(
                    100.0 * guest.vcpus, float(p.get("loops", 1)) * guest.contend_duty
                )
        elif kind == "memleak":
            rate = float(p.get("rate", 8))
            exp["leak_mib_per_min"] = rate
            exp["leak_bytes_per_s"] = round(rate * 1048576 / 60, 1)
            exp["leak_max_bytes"] = int(float(p.get("max", 48)) * 1048576)
            exp["leak_cycle_s"] = round(float(p.get("max", 48)) / rate * 60, 1) if rate else None
        elif kind == "disk":
            mode = str(p.get("mode", "rw"))
            iops = float(p.get("iops", 200))
            exp["disk_iops"] = iops
            exp["disk_bs"] = int(p.get("bs", 4096))
            exp["disk_read_iops"] = iops if mode == "r" else iops / 2 if mode == "rw" else 0.0
            exp["disk_write_iops"] = iops if mode == "w" else iops / 2 if mode == "rw" else 0.0
        elif kind == "net":
            pps = float(p.get("pps", 1000))
            size = int(p.get("size", 1000))
            exp.setdefault("tx_flows", []).append(
                {
                    "dst": p.get("dst"),
                    "port": p.get("port"),
                    "pps": pps,
                    "payload_bytes": size,
                    "wire_bytes_per_s": pps * (size + 42),
                }
            )
            exp["tx_pps"] = exp.get("tx_pps", 0.0) + pps
            exp["tx_wire_bytes_per_s"] = exp.get("tx_wire_bytes_per_s", 0.0) + pps * (size + 42)
        elif kind == "netpeer":
            port = p.get("port", 9000)
            ip = (guest.ip or "").split("/")[0]
            rx = 0.0
            for other in scenario.guests:
                for op in parse_workload(other.workload) if other.kind == "linux" else []:
                    q = op["params"]
                    if op["kind"] == "net" and q.get("dst") == ip and q.get("port") == port:
                        rx += float(q.get("pps", 0))
            exp["rx_pps"] = rx
    exp["expected_cpu_pct"] = min(cpu, 100.0 * guest.vcpus)
    return exp


# ---------------------------------------------------------------------------
# domain XML


def guest_uuid(name: str) -> str:
    """Deterministic UUID per guest name, so the manifest is stable across runs."""
    return str(uuid.uuid5(UUID_NS, f"kvmtop-lab/{name}"))


def guest_mac(guest: Guest) -> str:
    """MAC address derived from the guest's IP."""
    assert guest.ip
    return mac_for_ip(guest.ip)


def cmdline(guest: Guest) -> str:
    """Kernel command line of a Linux guest."""
    # no_timer_check: under TCG on a busy host the kernel's IO-APIC timer
    # check can fail and panic ("IO-APIC + timer doesn't work!").
    # iommu=noaperture: no early PCI scan for an AGP/GART aperture
    # (arch/x86/kernel/aperture_64.c), a guest has none; in the nested lab that
    # scan's port I/O exits took 1.5-1.8 s of each boot.
    args = [
        "console=ttyS0",
        "quiet",
        "no_timer_check",
        "iommu=noaperture",
        "panic=10",
        f"kvmtop.name={guest.name}",
        f"kvmtop.workload={guest.workload}",
    ]
    if guest.ip:
        args.append(f"kvmtop.ip={guest.ip}")
    return " ".join(args)


_file_digests: dict[Path, str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's content (cached per run)."""
    if path not in _file_digests:
        _file_digests[path] = (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
        )
    return _file_digests[path]


def domain_xml(guest: Guest, dom_type: str, state: Path, scenario: str) -> tuple[str, str]:
    """Return (xml, definition hash) for a guest.

    The hash covers the XML and the content of the kernel, initramfs or probe
    image it boots, so `lab up` restarts exactly the guests whose definition
    or boot files changed.
    """
    name = guest.name
    console = state / "console" / f"{name}.log"
    lines = [
        f"<domain type='{dom_type}'>",
        f"  <name>{name}</name>",
        f"  <uuid>{guest_uuid(name)}</uuid>",
        f"  <title>kvmtop lab ({scenario}): {escape(guest.workload)}</title>",
        "  <metadata>",
        f"    <lab:lab xmlns:lab='{LAB_NS}'><lab:scenario>{scenario}</lab:scenario>"
        "<lab:hash>@HASH@</lab:hash></lab:lab>",
        "  </metadata>",
        f"  <memory unit='MiB'>{guest.memory_mib}</memory>",
        f"  <currentMemory unit='MiB'>{guest.memory_mib}</currentMemory>",
        f"  <vcpu placement='static'>{guest.vcpus}</vcpu>",
        "  <os>",
        "    <type arch='x86_64' machine='pc'>hvm</type>",
    ]
    if guest.kind == "linux":
        lines += [
            f"    <kernel>{state}/kernel/vmlinux</kernel>",
            f"    <initrd>{state}/initramfs.cpio</initrd>",
            f"    <cmdline>{escape(cmdline(guest))}</cmdline>",
        ]
    else:
        lines += ["    <boot dev='hd'/>"]
    lines += [
        "  </os>",
        "  <features><acpi/><apic/></features>",
        "  <clock offset='utc'/>",
        "  <on_poweroff>destroy</on_poweroff>",
        "  <on_reboot>restart</on_reboot>",
        "  <on_crash>destroy</on_crash>",
        "  <devices>",
        "    <emulator>/usr/bin/qemu-system-x86_64</emulator>",
    ]
    if guest.kind == "linux":
        lines += [
            "    <disk type='file' device='disk'>",
            "      <driver name='qemu' type='qcow2'/>",
            f"      <source file='{state}/disks/{name}.qcow2'/>",
            "      <target dev='vda' bus='virtio'/>",
            "    </disk>",
        ]
        bridge = BRIDGES[guest.bridge or "linux"]["name"]
        lines += [
            "    <interface type='bridge'>",
            f"      <mac address='{guest_mac(guest)}'/>",
            f"      <source bridge='{bridge}'/>",
        ]
        if guest.bridge == "ovs":
            lines += ["      <virtualport type='openvswitch'/>"]
        lines += [
            "      <model type='virtio'/>",
            "    </interface>",
            "    <memballoon model='virtio'><stats period='2'/></memballoon>",
        ]
    else:
        lines += [
            "    <disk type='file' device='disk'>",
            "      <driver name='qemu' type='raw'/>",
            f"      <source file='{state}/images/probe-{guest.workload}.img'/>",
            "      <target dev='vda' bus='virtio'/>",
            "      <readonly/>",
            "    </disk>",
            "    <memballoon model='none'/>",
        ]
    lines += [
        "    <serial type='file'>",
        f"      <source path='{console}'/>",
        "      <target port='0'/>",
        "    </serial>",
        "    <controller type='usb' model='none'/>",
        "  </devices>",
        "</domain>",
    ]
    xml = "\n".join(lines) + "\n"
    if guest.kind == "linux":
        # vmlinux is derived from vmlinuz (`vmlinux`): hashing the smaller file is as good.
        boot_files = [state / "kernel" / "vmlinuz", state / "initramfs.cpio"]
    else:
        boot_files = [state / "images" / f"probe-{guest.workload}.img"]
    inputs = xml + "".join(file_digest(p) for p in boot_files)
    digest = hashlib.sha256(inputs.encode()).hexdigest()[:16]
    return xml.replace("@HASH@", digest), digest


# ---------------------------------------------------------------------------
# commands


def plan(args: argparse.Namespace) -> None:
    """Write domain XML, the plan table, the fault list and manifest.json."""
    scenario = SCENARIOS[args.scenario]
    state = Path(args.state_dir)
    ddir = state / "domains"
    ddir.mkdir(parents=True, exist_ok=True)
    for old in ddir.glob("*.xml"):
        old.unlink()
    rows: list[str] = []
    guests: list[dict[str, object]] = []
    skipped: list[str] = []
    for g in scenario.guests:
        if g.kind == "probe" and args.probe_type == "none":
            skipped.append(g.name)
            continue
        dom_type = args.probe_type if g.kind == "probe" else args.linux_type
        reason = args.probe_reason if g.kind == "probe" else args.linux_reason
        xml, digest = domain_xml(g, dom_type, state, scenario.name)
        (ddir / f"{g.name}.xml").write_text(xml)
        disk = (
            str(state / "disks" / f"{g.name}.qcow2")
            if g.kind == "linux"
            else str(state / "images" / f"probe-{g.workload}.img")
        )
        base_duty = next(
            (
                str(w["params"].get("duty", 100))
                for w in parse_workload(g.workload)
                if w["kind"] == "cpu"
            ),
            "-",
        )
        ctl = next(
            (str(w["params"]["ctl"]) for w in parse_workload(g.workload) if "ctl" in w["params"]),
            "-",
        )
        rows.append(
            "\t".join(
                [
                    g.name,
                    g.kind,
                    digest,
                    disk,
                    str(g.disk_mib),
                    str(g.vcpus),
                    (g.ip or "-").split("/")[0],
                    g.contention_group or "-",
                    str(g.contend_duty or "-"),
                    base_duty,
                    ctl,
                ]
            )
        )
        guests.append(
            {
                "name": g.name,
                "uuid": guest_uuid(g.name),
                "kind": g.kind,
                "libvirt_type": dom_type,
                "libvirt_type_reason": reason,
                "vcpus": g.vcpus,
                "memory_mib": g.memory_mib,
                "workload": g.workload,
                "workload_params": (
                    parse_workload(g.workload)
                    if g.kind == "linux"
                    else [
                        {
                            "kind": f"probe-{PROBE_KINDS[PROBES[g.workload][0]]}",
                            "params": {"count": PROBES[g.workload][1]},
                        }
                    ]
                ),
                "bridge": BRIDGES[g.bridge]["name"] if g.bridge else None,
                "ip": g.ip.split("/")[0] if g.ip else None,
                "mac": guest_mac(g) if g.ip else None,
                "disk": disk,
                "disk_format": "qcow2" if g.kind == "linux" else "raw",
                "console_log": str(state / "console" / f"{g.name}.log"),
                "contention_group": g.contention_group,
                "contend_duty_pct": g.contend_duty,
                "expected": expected_values(g, scenario, args.pvm),
                "definition_hash": digest,
                "notes": g.notes,
            }
        )
    (ddir / "plan.tsv").write_text("".join(r + "\n" for r in rows))
    # The bridges the scenario's guests use: `lab up` starts Open vSwitch only for "ovs".
    used = sorted({g.bridge for g in scenario.guests if g.bridge})
    (ddir / "bridges.txt").write_text("".join(b + "\n" for b in used))
    (ddir / "faults.txt").write_text("".join(" ".join(f) + "\n" for f in scenario.faults))
    manifest = {
        "scenario": scenario.name,
        "description": scenario.description,
        "state_dir": str(state),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host_cpus": os.cpu_count(),
        "kvmtop_interval_s": scenario.kvmtop_interval_s,
        "accel": {
            "linux": args.linux_type,
            "linux_reason": args.linux_reason,
            "probe": args.probe_type,
            "probe_reason": args.probe_reason,
        },
        "skipped_guests": skipped,
        "bridges": {
            k: {
                "name": v["name"],
                "host_ip": v["host_ip"],
                "uplink_ip": v["uplink_ip"],
                "uplink_veth": v["uplink_veth"],
            }
            for k, v in BRIDGES.items()
        },
        "uplink_netns": UPLINK_NETNS,
        "ctl_port": CTL_PORT,
        "faults_on_up": scenario.faults,
        "probe": {
            "count_per_wake": {k: v[1] for k, v in PROBES.items()},
            "wake_hz": round(PIT_HZ, 4),
            "base_exits_per_wake": BASE_EXITS_PER_WAKE,
            "pio_port": "0x80",
            "mmio_address": "0x80000000",
        },
        "pvm": args.pvm,
        "guests": {g["name"]: g for g in guests},
    }
    tmp = state / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(state / "manifest.json")


# Compressed payload formats of a bzImage the standard library decompresses, by magic.
# One stream each: the kernel's build appends the uncompressed size after it
# (scripts/Makefile.lib size_append), which a multi-stream decompress reads as a
# damaged second stream.
_PAYLOADS = {
    b"\xfd7zXZ\x00": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ),
    b"\x1f\x8b": lambda: zlib.decompressobj(wbits=31),
}


def vmlinux(bzimage: Path, out: Path) -> None:
    """Write the uncompressed ELF kernel a bzImage carries.

    A Linux guest booted from the ELF with `<kernel>` takes QEMU's PVH entry (the
    kernel's Xen PVH ELF note, CONFIG_PVH=y in Debian's amd64 kernels): no real-mode
    setup and no in-guest decompression. Measured in the nested lab's L1, one L2 guest
    reached its /init in 10.9 s instead of 20.3 s, the XZ decompression alone being
    10 s of emulated CPU. The payload's place is in the setup header
    (Documentation/arch/x86/boot.rst, protocol 2.08+): `setup_sects` at 0x1f1,
    `payload_offset` and `payload_length` at 0x248 and 0x24c, the offset counted from
    the protected-mode code that follows the (setup_sects + 1) setup sectors.
    """
    data = bzimage.read_bytes()
    if data[0x202:0x206] != b"HdrS":
        sys.exit(f"labgen: {bzimage} is not a bzImage (no HdrS header)")
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = data[start : start + length]
    stream = next((fn for magic, fn in _PAYLOADS.items() if payload.startswith(magic)), None)
    if stream is None:
        sys.exit(f"labgen: {bzimage}: payload format {payload[:6].hex()} is neither xz nor gzip")
    elf = stream().decompress(payload)
    if not elf.startswith(b"\x7fELF"):
        sys.exit(f"labgen: {bzimage}: the payload is not an ELF kernel")
    tmp = out.with_suffix(".new")
    tmp.write_bytes(elf)
    tmp.replace(out)


def modorder(moddir: str, names: list[str]) -> None:
    """Print module paths in load order (dependencies first)."""
    root = Path(moddir)
    paths = {p.stem: p for p in root.rglob("*.ko")}
    order: list[str] = []

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in order:
            return
        path = paths.get(name) or paths.get(name.replace("_", "-"))
        if path is None:
            sys.exit(f"labgen: module {name} not found under {moddir}")
        deps = subprocess.run(
            ["modinfo", "-F", "depends", str(path)], check=True, capture_output=True, text=True
        ).stdout.strip()
        for dep in filter(None, deps.split(",")):
            visit(dep)
        order.append(name)

    for n in names:
        visit(n)
    for n in order:
        p = paths.get(n) or paths[n.replace("_", "-")]
        print(p.relative_to(root))


def _lab_processes() -> dict[int, str]:
    """pid -> label of QEMU processes of lab guests and of the lab's daemons."""
    procs: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        exe = os.path.basename(argv[0].decode(errors="replace"))
        if exe.startswith("qemu-system"):
            for a in argv:
                if a.startswith(b"guest=lab-"):
                    procs[int(d.name)] = a.split(b",")[0][6:].decode()
        elif exe in ("libvirtd", "virtlogd", "ovs-vswitchd", "ovsdb-server"):
            procs[int(d.name)] = exe
    return procs


def _proc_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


def _host_ticks() -> tuple[int, int]:
    vals = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals[:8]) - idle, sum(vals[:8])


def cpu_cost(seconds: float) -> None:
    """Print the CPU used by each lab guest and daemon over `seconds` (% of one core)."""
    hz = os.sysconf("SC_CLK_TCK")
    procs = _lab_processes()
    before = {p: _proc_ticks(p) for p in procs}
    hb = _host_ticks()
    time.sleep(seconds)
    ha = _host_ticks()
    rows = []
    for pid, label in procs.items():
        a, b = _proc_ticks(pid), before[pid]
        if a is not None and b is not None:
            rows.append((label, pid, 100.0 * (a - b) / hz / seconds))
    total = sum(r[2] for r in rows)
    ncpu = os.cpu_count() or 1
    for label, pid, pct in sorted(rows):
        print(f"{label:18} pid {pid:<8} {pct:6.1f} %")
    print(
        f"{'lab total':18} {'':12} {total:6.1f} % of one core ({total / ncpu:.1f} % of {ncpu} CPUs)"
    )
    busy = 100.0 * (ha[0] - hb[0]) / max(1, ha[1] - hb[1])
    print(
        f"{'host busy':18} {'':12} {busy * ncpu:6.1f} % of one core "
        f"({busy:.1f} % of {ncpu} CPUs, everything on the host)"
    )


def _domstats_counters(names: list[str]) -> dict[str, dict[str, int]]:
    """vNIC TX packets and disk requests of each domain, from one `virsh domstats`."""
    out = subprocess.run(
        ["virsh", "domstats", "--interface", "--block", *names],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    counters: dict[str, dict[str, int]] = {}
    current: dict[str, int] = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Domain:"):
            current = counters.setdefault(line.split("'")[1], {})
        elif "=" in line:
            key, _, value = line.partition("=")
            kind = (
                "tx"
                if key.endswith(".tx.pkts")
                else "disk"
                if key.endswith((".rd.reqs", ".wr.reqs"))
                else None
            )
            if kind is not None and value.isdigit():
                current[kind] = current.get(kind, 0) + int(value)
    return counters


def workloads_stalled(state_dir: Path, seconds: float) -> list[str]:
    """The guests whose network or disk workload moves less than a quarter of its
    manifest rate over `seconds` (host-side counters: vNIC TX packets, disk requests),
    one line each with what was seen."""
    guests = json.loads((state_dir / "manifest.json").read_text())["guests"]
    want = {
        name: {"tx": float(e.get("tx_pps", 0.0)), "disk": float(e.get("disk_iops", 0.0))}
        for name, g in guests.items()
        if (e := g.get("expected", {})).get("tx_pps") or e.get("disk_iops")
    }
    if not want:
        return []
    before = _domstats_counters(sorted(want))
    time.sleep(seconds)
    after = _domstats_counters(sorted(want))
    problems = []
    for name, rates in sorted(want.items()):
        for kind, rate in rates.items():
            if rate <= 0:
                continue
            seen = (after.get(name, {}).get(kind, 0) - before.get(name, {}).get(kind, 0)) / seconds
            if seen < 0.25 * rate:
                what = "vNIC TX packets/s" if kind == "tx" else "disk requests/s"
                problems.append(f"{name}: {what} {seen:.1f}, expected {rate:g}")
    return problems


def shell_vars() -> str:
    """Constants the bash entry point shares with this module, as `NAME=value` lines."""
    values = {
        "LINUX_BR": BRIDGES["linux"]["name"],
        "LINUX_HOST_IP": BRIDGES["linux"]["host_ip"],
        "LINUX_UPLINK_IP": BRIDGES["linux"]["uplink_ip"],
        "LINUX_UPLINK_VETH": BRIDGES["linux"]["uplink_veth"],
        "LINUX_UPLINK_PEER": BRIDGES["linux"]["uplink_peer"],
        "OVS_BR": BRIDGES["ovs"]["name"],
        "OVS_HOST_IP": BRIDGES["ovs"]["host_ip"],
        "OVS_UPLINK_IP": BRIDGES["ovs"]["uplink_ip"],
        "OVS_UPLINK_VETH": BRIDGES["ovs"]["uplink_veth"],
        "OVS_UPLINK_PEER": BRIDGES["ovs"]["uplink_peer"],
        "UPLINK_NETNS": UPLINK_NETNS,
        "CTL_PORT": CTL_PORT,
        "PROBES": " ".join(f"{k}:{v[0]}:{v[1]}" for k, v in PROBES.items()),
        "SCENARIOS": " ".join(sorted(SCENARIOS)),
    }
    return "\n".join(f"{k}='{v}'" for k, v in values.items())


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--state-dir", required=True)
    p.add_argument("--linux-type", required=True, choices=["kvm", "qemu"])
    p.add_argument("--linux-reason", required=True)
    p.add_argument("--probe-type", required=True, choices=["kvm", "none"])
    p.add_argument("--probe-reason", required=True)
    p.add_argument("--pvm", action="store_true", help="/dev/kvm is provided by kvm_pvm")
    m = sub.add_parser("modorder")
    m.add_argument("moddir")
    m.add_argument("names", nargs="+")
    v = sub.add_parser("vmlinux")
    v.add_argument("bzimage", type=Path)
    v.add_argument("out", type=Path)
    sub.add_parser("scenarios")
    sub.add_parser("shellvars")
    c = sub.add_parser("cpu")
    c.add_argument("seconds", type=float, nargs="?", default=10.0)
    f = sub.add_parser("flowing")
    f.add_argument("--state-dir", required=True)
    f.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    if args.cmd == "plan":
        plan(args)
    elif args.cmd == "modorder":
        modorder(args.moddir, args.names)
    elif args.cmd == "vmlinux":
        vmlinux(args.bzimage, args.out)
    elif args.cmd == "cpu":
        cpu_cost(args.seconds)
    elif args.cmd == "flowing":
        problems = workloads_stalled(Path(args.state_dir), args.seconds)
        print("\n".join(problems))
        sys.exit(1 if problems else 0)
    elif args.cmd == "shellvars":
        print(shell_vars())
    else:
        print("\n".join(sorted(SCENARIOS)))


if __name__ == "__main__":
    main()
