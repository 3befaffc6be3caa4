"""Synthetic but realistically shaped samples for store tests and the store benchmark.

Shaped after what the collectors report on a libvirt 9 / QEMU 7.2 / Linux 6.1 host:
per vCPU the ~40 KVM binary stats libvirt re-exports (`vcpu.N.<name>.sum|cur|max`,
names from arch/x86/kvm/x86.c kvm_vcpu_stats_desc), per guest one disk, one NIC and
balloon stats refreshed every 5 ticks; per host every CPU's softnet row, a few block
devices, bridges, an uplink and one tap per guest. Counters grow at seeded random
rates, many stay constant (as most KVM stats do), so compression sees what it
would see on a real host. Used only where the real lab is absent.
"""

from __future__ import annotations

import random

from kvmtop.model.sample import (
    BalloonSample,
    BlockDevSample,
    CpuTimes,
    DiskSample,
    GuestSample,
    HostSample,
    NetDevSample,
    NicSample,
    PressureSample,
    Sample,
    SoftnetSample,
    SourceStatus,
    VcpuSample,
)
from kvmtop.model.units import NS_PER_S

VCPU_STATS = (
    "halt_successful_poll",
    "halt_attempted_poll",
    "halt_poll_invalid",
    "halt_wakeup",
    "halt_poll_success_ns",
    "halt_poll_fail_ns",
    "halt_wait_ns",
    "pf_taken",
    "pf_fixed",
    "pf_emulate",
    "pf_spurious",
    "pf_fast",
    "pf_mmio_spte_created",
    "pf_guest",
    "tlb_flush",
    "invlpg",
    "exits",
    "io_exits",
    "mmio_exits",
    "signal_exits",
    "irq_window_exits",
    "nmi_window_exits",
    "l1d_flush",
    "halt_exits",
    "request_irq_exits",
    "irq_exits",
    "host_state_reload",
    "fpu_reload",
    "insn_emulation",
    "insn_emulation_fail",
    "hypercalls",
    "irq_injections",
    "nmi_injections",
    "req_event",
    "nested_run",
    "directed_yield_attempted",
    "directed_yield_successful",
    "preemption_reported",
    "preemption_other",
    "notify_window_exits",
)
VM_STATS = (
    "remote_tlb_flush",
    "remote_tlb_flush_requests",
    "mmu_shadow_zapped",
    "mmu_pte_write",
    "mmu_pde_zapped",
    "mmu_flooded",
    "mmu_recycled",
    "mmu_cache_miss",
    "mmu_unsync",
    "pages_4k",
    "pages_2m",
    "max_mmu_page_hash_collisions",
)


class SyntheticHost:
    """A host with `guests` guests whose counters advance each `sample()` call."""

    def __init__(
        self,
        guests: int = 12,
        *,
        seed: int = 0,
        interval_s: float = 2.0,
        start_s: float = 1_760_000_000.0,
        ncpu: int = 8,
    ) -> None:
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.start_s = start_s
        self.ncpu = ncpu
        self.tick = 0
        self.names = [f"lab-guest{i:02d}" for i in range(guests)]
        self.uuids = [f"6f1c{i:04x}-9b2e-4c1d-8a7e-{seed:04x}{i:08x}" for i in range(guests)]
        self.vcpus = [1 + (i % 2) for i in range(guests)]
        self.counters: dict[str, int] = {}
        # Roughly a third of the stats move in any given guest; the rest stay put.
        self.rates: dict[str, int] = {}

    def _count(self, key: str, base_rate: int) -> int:
        rate = self.rates.get(key)
        if rate is None:
            moving = self.rng.random() < 0.35
            rate = self.rng.randint(1, base_rate) if moving else 0
            self.rates[key] = rate
            self.counters[key] = self.rng.randint(0, base_rate * 1000)
        jitter = self.rng.randint(0, rate // 4 + 1) if rate else 0
        self.counters[key] += rate + jitter
        return self.counters[key]

    def _vcpu(self, g: int, v: int, pid: int) -> VcpuSample:
        kvm = {f"{name}.sum": self._count(f"{g}.{v}.{name}", 40_000) for name in VCPU_STATS}
        kvm["guest_mode.cur"] = 0
        kvm["halt_wait_ns.max"] = self._count(f"{g}.{v}.hwmax", 3)
        run = self._count(f"{g}.{v}.run", 900_000_000)
        return VcpuSample(
            index=v,
            state=1,
            time_ns=run,
            delay_ns=self._count(f"{g}.{v}.d", 9_000),
            tid=pid + 3 + v,
            sched_run_ns=run + 17,
            sched_delay_ns=self._count(f"{g}.{v}.d", 9_000),
            kvm=kvm,
        )

    def _guest(self, g: int) -> GuestSample:
        pid = 4000 + 100 * g
        balloon_tick = self.tick - self.tick % 5
        used = 40_000_000 + 5_000 * balloon_tick * (3 if g == 0 else 0)
        balloon = BalloonSample(
            current_bytes=128 << 20,
            maximum_bytes=128 << 20,
            available_bytes=120_000_000,
            usable_bytes=120_000_000 - used,
            unused_bytes=110_000_000 - used,
            disk_caches_bytes=4_000_000,
            rss_bytes=90_000_000 + 4096 * balloon_tick,
            swap_in_bytes=0,
            swap_out_bytes=0,
            major_fault=420,
            minor_fault=80_000 + balloon_tick,
            last_update_s=int(self.start_s + balloon_tick * self.interval_s),
        )
        disk = DiskSample(
            target="vda",
            path=f"/var/lib/kvmtop-lab/{self.names[g]}.qcow2",
            rd_reqs=self._count(f"{g}.rdr", 50),
            rd_bytes=self._count(f"{g}.rdb", 400_000),
            rd_times_ns=self._count(f"{g}.rdt", 9_000_000),
            wr_reqs=self._count(f"{g}.wrr", 80),
            wr_bytes=self._count(f"{g}.wrb", 900_000),
            wr_times_ns=self._count(f"{g}.wrt", 20_000_000),
            fl_reqs=self._count(f"{g}.flr", 5),
            fl_times_ns=self._count(f"{g}.flt", 3_000_000),
            capacity_bytes=1 << 30,
            allocation_bytes=200_000_000,
            physical_bytes=200_704_000,
        )
        nic = NicSample(
            name=f"vnet{g}",
            rx_bytes=self._count(f"{g}.rxb", 2_000_000),
            rx_pkts=self._count(f"{g}.rxp", 2_000),
            rx_errs=0,
            rx_drop=self._count(f"{g}.rxd", 3),
            tx_bytes=self._count(f"{g}.txb", 2_000_000),
            tx_pkts=self._count(f"{g}.txp", 2_000),
            tx_errs=0,
            tx_drop=0,
        )
        vcpus = tuple(self._vcpu(g, v, pid) for v in range(self.vcpus[g]))
        cpu = sum(v.time_ns or 0 for v in vcpus) + self._count(f"{g}.emu", 30_000_000)
        return GuestSample(
            uuid=self.uuids[g],
            name=self.names[g],
            dom_id=g + 1,
            state="running",
            state_reason=1,
            accel="kvm",
            pid=pid,
            vcpus_current=len(vcpus),
            vcpus_maximum=len(vcpus),
            cpu_time_ns=cpu,
            cpu_user_ns=cpu // 3,
            cpu_system_ns=cpu // 5,
            vcpus=vcpus,
            disks=(disk,),
            nics=(nic,),
            balloon=balloon,
            vm_kvm={f"{name}.sum": self._count(f"{g}.vm.{name}", 200) for name in VM_STATS},
        )

    def _host(self, mono: int) -> HostSample:
        c = self._count
        cpu = CpuTimes(
            user_ns=c("h.user", 9 * NS_PER_S),
            nice_ns=c("h.nice", NS_PER_S // 100),
            system_ns=c("h.sys", 2 * NS_PER_S),
            idle_ns=c("h.idle", 5 * NS_PER_S),
            iowait_ns=c("h.iow", NS_PER_S // 10),
            irq_ns=c("h.irq", NS_PER_S // 50),
            softirq_ns=c("h.sirq", NS_PER_S // 20),
            steal_ns=0,
            guest_ns=c("h.guest", 8 * NS_PER_S),
        )
        psi = {
            r: PressureSample(
                some_total_ns=c(f"psi.{r}", 40_000_000),
                some_avg10=round(self.rng.random() * 5, 2),
                some_avg60=1.25,
                full_total_ns=c(f"psi.{r}.f", 9_000_000),
                full_avg10=0.0,
                full_avg60=0.0,
            )
            for r in ("cpu", "memory", "io")
        }
        disks = tuple(
            BlockDevSample(
                name=n,
                reads=c(f"bd.{n}.r", 300),
                read_bytes=c(f"bd.{n}.rb", 9_000_000),
                read_time_ns=c(f"bd.{n}.rt", 80_000_000),
                writes=c(f"bd.{n}.w", 500),
                write_bytes=c(f"bd.{n}.wb", 20_000_000),
                write_time_ns=c(f"bd.{n}.wt", 300_000_000),
                in_flight=self.rng.randint(0, 3),
                io_ticks_ns=c(f"bd.{n}.io", 900_000_000),
                weighted_ns=c(f"bd.{n}.wq", 2 * NS_PER_S),
                flushes=c(f"bd.{n}.f", 20),
                flush_time_ns=c(f"bd.{n}.ft", 9_000_000),
                rotational=False,
                is_partition=n[-1].isdigit(),
            )
            for n in ("nvme0n1", "nvme0n1p1", "nvme0n1p2", "dm-0")
        )
        ifaces = [
            ("lo", "loopback", None),
            ("eth0", "physical", None),
            ("br-lab", "bridge", None),
            ("ovsbr0", "ovs", None),
        ] + [(f"vnet{g}", "tap", "br-lab") for g in range(len(self.names))]
        nets = tuple(
            NetDevSample(
                name=n,
                rx_bytes=c(f"nd.{n}.rb", 3_000_000),
                rx_packets=c(f"nd.{n}.rp", 3000),
                rx_errs=0,
                rx_drop=c(f"nd.{n}.rd", 2),
                tx_bytes=c(f"nd.{n}.tb", 3_000_000),
                tx_packets=c(f"nd.{n}.tp", 3000),
                tx_errs=0,
                tx_drop=c(f"nd.{n}.td", 2),
                kind=kind,
                master=master,
                speed_mbps=10_000 if kind == "physical" else None,
                operstate="up" if kind != "loopback" else "unknown",
            )
            for n, kind, master in ifaces
        )
        softnet = tuple(
            SoftnetSample(
                cpu=i,
                processed=c(f"sn.{i}", 5000),
                dropped=c(f"sn.{i}.d", 1),
                time_squeeze=c(f"sn.{i}.s", 2),
            )
            for i in range(self.ncpu)
        )
        return HostSample(
            mono_ns=mono,
            hostname="hv-lab-01",
            kernel="6.1.0-28-amd64",
            ncpu=self.ncpu,
            cpu=cpu,
            run_delay_ns=c("h.rd", 400_000_000),
            run_time_ns=c("h.rt", 9 * NS_PER_S),
            mem_total_bytes=32 << 30,
            mem_available_bytes=20 << 30,
            mem_free_bytes=12 << 30,
            swap_total_bytes=0,
            swap_free_bytes=0,
            vmstat={
                k: c(f"vm.{k}", 9000)
                for k in ("pgfault", "pgmajfault", "pswpin", "pswpout", "oom_kill")
            },
            pressure=psi,
            blockdevs=disks,
            netdevs=nets,
            softnet=softnet,
            loadavg=(1.52, 1.31, 1.2),
            self_cpu_ns=c("self", 4_000_000),
            self_rss_bytes=41_000_000,
        )

    def sample(self) -> Sample:
        """The next tick's sample (wall and monotonic clocks advance by the interval)."""
        mono = int((1000 + self.tick * self.interval_s) * NS_PER_S)
        wall = self.start_s + self.tick * self.interval_s
        sources = (
            SourceStatus("host", True, duration_ns=400_000 + self.rng.randint(0, 90_000)),
            SourceStatus(
                "libvirt",
                True,
                duration_ns=3_000_000 + self.rng.randint(0, 900_000),
                detail={
                    "uri": "qemu:///system",
                    "libvirt": "9.0.0",
                    "libvirt_client": "9.0.0",
                    "hypervisor": "QEMU 7.2.0",
                    "hostname": "hv-lab-01",
                },
            ),
            SourceStatus("sched", True, duration_ns=200_000 + self.rng.randint(0, 50_000)),
        )
        sample = Sample(
            wall_s=wall,
            mono_ns=mono,
            host=self._host(mono),
            guests=tuple(self._guest(g) for g in range(len(self.names))),
            sources=sources,
            interval_s=self.interval_s,
        )
        self.tick += 1
        return sample
