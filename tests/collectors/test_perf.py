"""perf_event_open binding: struct layout, ioctl numbers, error reasons, and live counting."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys

import pytest

from kvmtop.collectors import perf
from kvmtop.collectors.perf import PerfError, PerfEventAttr, PerfGroup
from tests.hostfacts import TRACEFS, ensure_mounted

SYS_ENTER = TRACEFS / "events/raw_syscalls/sys_enter/id"


@pytest.mark.parametrize(
    ("field", "offset"),
    [
        # Offsets of include/uapi/linux/perf_event.h on LP64 (the PERF_ATTR_SIZE_VERn
        # boundaries: VER0 64 ends at config1, VER1 72 at config2, ... VER8 136).
        ("type", 0),
        ("size", 4),
        ("config", 8),
        ("sample_period", 16),
        ("sample_type", 24),
        ("read_format", 32),
        ("wakeup_events", 48),
        ("bp_type", 52),
        ("config1", 56),
        ("config2", 64),
        ("branch_sample_type", 72),
        ("sample_regs_user", 80),
        ("sample_stack_user", 88),
        ("clockid", 92),
        ("sample_regs_intr", 96),
        ("aux_watermark", 104),
        ("sample_max_stack", 108),
        ("aux_sample_size", 112),
        ("sig_data", 120),
        ("config3", 128),
    ],
)
def test_attr_layout(field: str, offset: int) -> None:
    assert getattr(PerfEventAttr, field).offset == offset


def test_attr_size_and_flag_bits() -> None:
    assert perf.PERF_ATTR_SIZE == 136
    if sys.byteorder != "little":
        pytest.skip("C bit-fields are allocated from the MSB on big-endian")
    attr = PerfEventAttr()
    attr.disabled = 1
    attr.exclude_kernel = 1
    attr.precise_ip = 3
    flags = int.from_bytes(bytes(attr)[40:48], "little")
    # disabled is bit 0, exclude_kernel bit 5, precise_ip bits 15-16.
    assert flags == (1 << 0) | (1 << 5) | (3 << 15)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="generic _IOC only")
def test_ioctl_numbers_generic_layout() -> None:
    assert perf.PERF_EVENT_IOC_ENABLE == 0x2400
    assert perf.PERF_EVENT_IOC_DISABLE == 0x2401
    assert perf.PERF_EVENT_IOC_RESET == 0x2403
    assert perf.PERF_EVENT_IOC_SET_FILTER == 0x40082406
    assert perf.PERF_EVENT_IOC_ID == 0x80082407


def test_ioctl_layout_powerpc() -> None:
    none, write, _read, bits = perf._ioc_layout("ppc64le")
    assert perf._ioc(none, 0, 0, bits) == 0x20002400  # _IO('$', 0) with _IOC_NONE = 1
    assert perf._ioc(write, 6, 8, bits) == 0x80082406


@pytest.mark.parametrize(
    ("err", "words"),
    [
        (errno.EPERM, "CAP_PERFMON"),
        (errno.EACCES, "ptrace"),
        (errno.ENOENT, "tracefs event missing"),
        (errno.EMFILE, "RLIMIT_NOFILE"),
        (errno.ESRCH, "exited"),
        (errno.EIO, os.strerror(errno.EIO)),
    ],
)
def test_errors_carry_a_human_reason(err: int, words: str) -> None:
    e = perf.explain(err, "perf_event_open(tracepoint 1, tid 2)")
    assert isinstance(e, PerfError) and e.errno == err
    assert words in str(e) and str(e).startswith("perf_event_open(tracepoint 1, tid 2): ")


def test_failed_open_raises_typed_error() -> None:
    def refuse(_attr: PerfEventAttr, _pid: int, _cpu: int, _group: int, _flags: int) -> int:
        ctypes.set_errno(errno.EMFILE)
        return -1

    group = PerfGroup(1234, open_fn=refuse)
    with pytest.raises(PerfError, match="RLIMIT_NOFILE") as info:
        group.add(103)
    assert info.value.errno == errno.EMFILE and len(group) == 0


def test_syscall_number_from_python_ptrace() -> None:
    expected = {"x86_64": 298, "aarch64": 241}.get(platform.machine())
    if expected is None:
        pytest.skip(f"no pinned number for {platform.machine()}")
    assert perf._syscall_number() == expected


def _perf_usable() -> str | None:
    ensure_mounted(TRACEFS)
    if not SYS_ENTER.exists():
        return "tracefs raw_syscalls events not mounted"
    try:
        with PerfGroup(0) as g:
            g.add(int(SYS_ENTER.read_text()))
    except PerfError as e:
        return str(e)
    return None


@pytest.fixture
def sys_enter_id() -> int:
    reason = _perf_usable()
    if reason is not None:
        pytest.skip(reason)
    return int(SYS_ENTER.read_text())


def test_live_group_counts_filtered_events(sys_enter_id: int) -> None:
    """A filtered and an unfiltered counter on our own thread, read in one go."""
    getpid = {"x86_64": 39, "aarch64": 172}.get(platform.machine())
    if getpid is None:
        pytest.skip("getpid number not pinned for this architecture")
    fds_before = len(os.listdir("/proc/self/fd"))
    with PerfGroup(0) as g:
        total = g.add(sys_enter_id)
        only_getpid = g.add(sys_enter_id, f"id == {getpid}")
        assert g.read() == (0, 0)  # created disabled
        g.enable()
        for _ in range(50):
            os.getpid()
        g.disable()
        counts = g.read()
        assert counts[only_getpid] == 50
        assert counts[total] >= 50
        g.reset()
        assert g.read() == (0, 0)
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_live_bad_filter_is_einval_and_closes_fd(sys_enter_id: int) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    with PerfGroup(0) as g, pytest.raises(PerfError, match="filter") as info:
        g.add(sys_enter_id, "no_such_field == 1")
    assert info.value.errno == errno.EINVAL
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_live_unknown_tracepoint(sys_enter_id: int) -> None:
    with PerfGroup(0) as g, pytest.raises(PerfError) as info:
        g.add(0x7FFFFFF0)
    assert info.value.errno in (errno.ENOENT, errno.EINVAL)
