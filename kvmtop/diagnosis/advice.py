"""Doctor's last stage: host settings worth changing (vCPU:pCPU, memory reserve, THP,
the I/O scheduler of the devices backing guest disks, halt polling), each with the
exact setting.

Layer: beside the sampler (reads collectors; never imports textual).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from kvmtop.collectors.topology import BlockTopology
from kvmtop.detectors.settings import OvercommitSettings
from kvmtop.diagnosis.checks import OK, SKIP, WARN, Check, Examination, read_under
from kvmtop.model.sample import BlockDevSample, GuestSample, HostSample
from kvmtop.model.units import NS_PER_S


def advice_checks(exam: Examination) -> Iterator[Check]:
    """Host settings worth changing, each with the setting to change."""
    host = exam.host_sample
    running = [g for g in exam.guests if g.state == "running"]
    s = exam.env.overcommit
    if host is not None and host.ncpu and running:
        vcpus = sum(g.vcpus_current or 0 for g in running)
        ratio = vcpus / host.ncpu
        detail = f"{vcpus} vCPUs of {len(running)} running guests on {host.ncpu} CPUs"
        if ratio > s.vcpu_ratio:
            yield Check(
                "advice.vcpu_ratio",
                WARN,
                "vCPU:pCPU",
                f"{ratio:.1f} ({detail}) > {s.vcpu_ratio:g}: busy guests will steal "
                "from each other",
                "reduce vCPUs (virsh setvcpus NAME N --config), move guests to "
                "another host, or raise [detectors.overcommit] vcpu_ratio if "
                "intended",
            )
        else:
            yield Check("advice.vcpu_ratio", OK, "vCPU:pCPU", f"{ratio:.1f} ({detail})")
    yield from _memory_reserve(exam, host, running, s)
    if host is not None:
        yield _thp(exam, host)
        yield from _io_schedulers(exam, host, running)
    yield _halt_poll(exam, host, running)


def _memory_reserve(
    exam: Examination,
    host: HostSample | None,
    running: Sequence[GuestSample],
    s: OvercommitSettings,
) -> Iterator[Check]:
    if host is None or not host.mem_total_bytes or not running:
        return
    sizes = []
    for g in running:
        info = exam.libvirt.domain_info(g.uuid)
        size = info.max_memory_bytes if info is not None else None
        if size is None and g.balloon is not None:
            size = g.balloon.maximum_bytes
        sizes.append(size or 0)
    total = host.mem_total_bytes
    reserve = 100.0 * (total - sum(sizes)) / total
    detail = (
        f"{reserve:.0f}% of {total / 2**30:.1f} GiB left after the guests' "
        f"maximum memory ({sum(sizes) / 2**30:.1f} GiB)"
    )
    if reserve < s.mem_reserve_pct:
        yield Check(
            "advice.memory_reserve",
            WARN,
            "host memory reserve",
            f"{detail} < {s.mem_reserve_pct:g}%: guests can push the host into reclaim",
            "lower guests' maximum memory (virsh setmaxmem NAME SIZE --config), move "
            "guests, or add RAM",
        )
    else:
        yield Check("advice.memory_reserve", OK, "host memory reserve", detail)


def _thp(exam: Examination, host: HostSample) -> Check:
    path = "/sys/kernel/mm/transparent_hugepage/enabled"
    mode = host.thp_enabled
    if mode is None:
        return Check(
            "advice.thp", SKIP, "transparent huge pages", f"{path} absent (kernel without THP)"
        )
    if mode == "never":
        return Check(
            "advice.thp",
            WARN,
            "transparent huge pages",
            "never: guest RAM on 4 KiB pages (more TLB misses and page walks)",
            f"echo madvise > {path} (QEMU madvises guest RAM; persist with "
            "transparent_hugepage=madvise on the kernel command line)",
        )
    return Check("advice.thp", OK, "transparent huge pages", mode)


def _io_schedulers(
    exam: Examination, host: HostSample, running: Sequence[GuestSample]
) -> Iterator[Check]:
    """The I/O scheduler of every host disk under a running guest's disk."""
    blocks = BlockTopology(exam.env.root, exam.env.stat)
    users: dict[str, list[str]] = {}
    for g in running:
        info = exam.libvirt.domain_info(g.uuid)
        for d in info.disks if info is not None else ():
            disk, _why = blocks.resolve(d.source)  # network storage: no host disk
            if disk is not None:
                users.setdefault(disk, []).append(f"{g.name}:{d.target}")
    devices = {b.name: b for b in host.blockdevs}
    for name, on in sorted(users.items()):
        yield _scheduler(name, devices.get(name), on)


def _scheduler(name: str, dev: BlockDevSample | None, users: list[str]) -> Check:
    cid, title = f"advice.io_scheduler:{name}", f"I/O scheduler of {name}"
    shown = ", ".join(users[:4]) + (f" (+{len(users) - 4})" if len(users) > 4 else "")
    if dev is None or dev.scheduler is None:
        return Check(cid, SKIP, title, f"scheduler of {name} unknown (backs {shown})")
    kind = {True: "rotational", False: "non-rotational", None: "unknown"}[dev.rotational]
    detail = f"{dev.scheduler} on {kind} {name} (backs {shown})"
    # block/Kconfig.iosched: mq-deadline suits seeking disks, bfq trades CPU per
    # request for fairness, which flash rarely needs.
    if dev.rotational is True and dev.scheduler == "none":
        better, why = "mq-deadline", ": no request sorting or merging for a seeking disk"
    elif dev.rotational is False and dev.scheduler == "bfq":
        better, why = "none", ": bfq costs CPU per request that flash does not need"
    else:
        return Check(cid, OK, title, detail)
    queue = f"/sys/block/{name.replace('/', '!')}/queue/scheduler"
    return Check(
        cid,
        WARN,
        title,
        detail + why,
        f'echo {better} > {queue} (persist with a udev rule: ACTION=="add|change", '
        f'KERNEL=="{name}", ATTR{{queue/scheduler}}="{better}")',
    )


def _halt_poll(exam: Examination, host: HostSample | None, running: Sequence[GuestSample]) -> Check:
    path = "sys/module/kvm/parameters/halt_poll_ns"
    raw = read_under(exam.env.root, path)
    title = "halt polling"
    if raw is None or not raw.isdigit():
        return Check("advice.halt_poll", SKIP, title, f"/{path} absent (kvm not loaded)")
    poll_ns = int(raw)
    fix = f"echo 0 > /{path} (persist: options kvm halt_poll_ns=0 in /etc/modprobe.d/kvm.conf)"
    vcpus = sum(g.vcpus_current or 0 for g in running)
    ncpu = host.ncpu if host is not None else 0
    if poll_ns and ncpu and vcpus / ncpu > exam.env.overcommit.vcpu_ratio:
        return Check(
            "advice.halt_poll",
            WARN,
            title,
            f"halt_poll_ns={poll_ns} on an overcommitted host ({vcpus} vCPUs on {ncpu} "
            "CPUs): polling burns CPU that other vCPUs are waiting for",
            fix,
        )
    # Since boot: time polled in vain vs polled with success (KVM binary stats).
    fail = sum(v.kvm.get("halt_poll_fail_ns.sum", 0) for g in running for v in g.vcpus)
    success = sum(v.kvm.get("halt_poll_success_ns.sum", 0) for g in running for v in g.vcpus)
    if poll_ns and fail > success and fail > NS_PER_S:
        return Check(
            "advice.halt_poll",
            WARN,
            title,
            f"halt_poll_ns={poll_ns}: polling mostly fails ({fail / NS_PER_S:.1f} s in vain "
            f"vs {success / NS_PER_S:.1f} s useful since the guests started)",
            f"echo {poll_ns // 2} > /{path}, or load cpuidle-haltpoll in the guests",
        )
    return Check("advice.halt_poll", OK, title, f"halt_poll_ns={poll_ns}")
