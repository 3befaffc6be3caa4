"""A minimal binding of perf_event_open(2): counting tracepoint events in groups.

Layer: collectors (I/O). Counting mode only (no sampling, no ring buffer), the way
the kernel's tools/kvm/kvm_stat counts KVM tracepoints: one event per
(tracepoint × filter), grouped per thread so that a single read() of the group
leader returns every count (PERF_FORMAT_GROUP).

The syscall number comes from python-ptrace's per-architecture syscall tables
(python-ptrace has no perf binding of its own); the call goes through ctypes.
Every file descriptor is released by an explicit `close()` or by leaving a `with`
block, never by the garbage collector.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
from collections.abc import Callable
from types import TracebackType

from kvmtop.collectors.base import CollectorError

# include/uapi/linux/perf_event.h: enum perf_type_id
PERF_TYPE_TRACEPOINT = 2
# enum perf_event_read_format
PERF_FORMAT_ID = 1 << 2
PERF_FORMAT_GROUP = 1 << 3
# perf_event_open(2) flags: close-on-exec for the new fd (Linux 3.14)
PERF_FLAG_FD_CLOEXEC = 1 << 3
# ioctl argument: apply to the whole group (PERF_IOC_FLAG_GROUP)
PERF_IOC_FLAG_GROUP = 1


class PerfEventAttr(ctypes.Structure):
    """`struct perf_event_attr` of include/uapi/linux/perf_event.h (Linux 6.3+).

    The layout ends with `config3`, i.e. PERF_ATTR_SIZE_VER8 = 136 bytes. Older
    kernels accept a larger struct as long as the bytes they do not know are zero
    (kernel/events/core.c perf_copy_attr, else E2BIG), so one layout serves all.
    The single-bit flags are declared as in the header; ctypes lays C bit-fields
    out as the platform's compiler does (LSB first on little-endian).
    """

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),  # union with sample_freq
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("disabled", ctypes.c_uint64, 1),
        ("inherit", ctypes.c_uint64, 1),
        ("pinned", ctypes.c_uint64, 1),
        ("exclusive", ctypes.c_uint64, 1),
        ("exclude_user", ctypes.c_uint64, 1),
        ("exclude_kernel", ctypes.c_uint64, 1),
        ("exclude_hv", ctypes.c_uint64, 1),
        ("exclude_idle", ctypes.c_uint64, 1),
        ("mmap", ctypes.c_uint64, 1),
        ("comm", ctypes.c_uint64, 1),
        ("freq", ctypes.c_uint64, 1),
        ("inherit_stat", ctypes.c_uint64, 1),
        ("enable_on_exec", ctypes.c_uint64, 1),
        ("task", ctypes.c_uint64, 1),
        ("watermark", ctypes.c_uint64, 1),
        ("precise_ip", ctypes.c_uint64, 2),
        ("mmap_data", ctypes.c_uint64, 1),
        ("sample_id_all", ctypes.c_uint64, 1),
        ("exclude_host", ctypes.c_uint64, 1),
        ("exclude_guest", ctypes.c_uint64, 1),
        ("exclude_callchain_kernel", ctypes.c_uint64, 1),
        ("exclude_callchain_user", ctypes.c_uint64, 1),
        ("mmap2", ctypes.c_uint64, 1),
        ("comm_exec", ctypes.c_uint64, 1),
        ("use_clockid", ctypes.c_uint64, 1),
        ("context_switch", ctypes.c_uint64, 1),
        ("write_backward", ctypes.c_uint64, 1),
        ("namespaces", ctypes.c_uint64, 1),
        ("ksymbol", ctypes.c_uint64, 1),
        ("bpf_event", ctypes.c_uint64, 1),
        ("aux_output", ctypes.c_uint64, 1),
        ("cgroup", ctypes.c_uint64, 1),
        ("text_poke", ctypes.c_uint64, 1),
        ("build_id", ctypes.c_uint64, 1),
        ("inherit_thread", ctypes.c_uint64, 1),
        ("remove_on_exec", ctypes.c_uint64, 1),
        ("sigtrap", ctypes.c_uint64, 1),
        ("reserved_1", ctypes.c_uint64, 26),
        ("wakeup_events", ctypes.c_uint32),  # union with wakeup_watermark
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),  # union with bp_addr, kprobe_func, uprobe_path
        ("config2", ctypes.c_uint64),  # union with bp_len, kprobe_addr, probe_offset
        ("branch_sample_type", ctypes.c_uint64),
        ("sample_regs_user", ctypes.c_uint64),
        ("sample_stack_user", ctypes.c_uint32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", ctypes.c_uint64),
        ("aux_watermark", ctypes.c_uint32),
        ("sample_max_stack", ctypes.c_uint16),
        ("reserved_2", ctypes.c_uint16),
        ("aux_sample_size", ctypes.c_uint32),
        ("aux_action", ctypes.c_uint32),  # __reserved_3 before Linux 6.13
        ("sig_data", ctypes.c_uint64),
        ("config3", ctypes.c_uint64),
    )


PERF_ATTR_SIZE = ctypes.sizeof(PerfEventAttr)
"""136 = PERF_ATTR_SIZE_VER8 (include/uapi/linux/perf_event.h)."""


def _ioc_layout(machine: str) -> tuple[int, int, int, int]:
    """(none, write, read, size bits) of the _IOC encoding for `machine`.

    include/uapi/asm-generic/ioctl.h (x86, arm64, riscv): _IOC_NONE 0, _IOC_WRITE 1,
    _IOC_READ 2, 14 size bits. arch/powerpc/include/uapi/asm/ioctl.h: _IOC_NONE 1,
    _IOC_READ 2, _IOC_WRITE 4, 13 size bits (python-ptrace also covers powerpc).
    """
    if machine.startswith("ppc"):
        return 1, 4, 2, 13
    return 0, 1, 2, 14


def _ioc(direction: int, nr: int, size: int, sizebits: int) -> int:
    """_IOC(dir, '$', nr, size): type '$' (0x24) is perf's ioctl magic."""
    return (direction << (16 + sizebits)) | (size << 16) | (ord("$") << 8) | nr


_NONE, _WRITE, _READ, _SIZEBITS = _ioc_layout(platform.machine())
_PTR = ctypes.sizeof(ctypes.c_void_p)
# include/uapi/linux/perf_event.h
PERF_EVENT_IOC_ENABLE = _ioc(_NONE, 0, 0, _SIZEBITS)  # _IO('$', 0)
PERF_EVENT_IOC_DISABLE = _ioc(_NONE, 1, 0, _SIZEBITS)  # _IO('$', 1)
PERF_EVENT_IOC_RESET = _ioc(_NONE, 3, 0, _SIZEBITS)  # _IO('$', 3)
PERF_EVENT_IOC_SET_FILTER = _ioc(_WRITE, 6, _PTR, _SIZEBITS)  # _IOW('$', 6, char *)
PERF_EVENT_IOC_ID = _ioc(_READ, 7, _PTR, _SIZEBITS)  # _IOR('$', 7, __u64 *), Linux 3.12


class PerfError(CollectorError):
    """perf_event_open(2) or one of its ioctls failed; the message says why and what to do.

    Attributes:
        errno: the OS error number (0 when the failure is not an OS error).
    """

    def __init__(self, message: str, err: int = 0) -> None:
        super().__init__(message)
        self.errno = err


def explain(err: int, what: str) -> PerfError:
    """A PerfError for OS error `err` raised while doing `what`, with a human reason."""
    reasons = {
        # kernel/events/core.c perf_allow_tracepoint(): tracepoints need
        # perf_event_paranoid <= -1 or CAP_PERFMON (Linux 5.8; CAP_SYS_ADMIN before).
        errno.EPERM: "not permitted: run as root or grant CAP_PERFMON, or set "
        "kernel.perf_event_paranoid=-1",
        # perf_event_open(2): a per-thread event needs ptrace access to the target.
        errno.EACCES: "access denied to the target thread (needs ptrace rights over it: "
        "root, CAP_PERFMON, or kernel.perf_event_paranoid / kernel.yama.ptrace_scope)",
        errno.ENOENT: "no such tracepoint (tracefs event missing: module not loaded "
        "or kernel built without it)",
        errno.EMFILE: "too many open files: RLIMIT_NOFILE reached (raise `ulimit -n`)",
        errno.ENFILE: "system-wide file table full (fs.file-max)",
        errno.ESRCH: "the thread exited",
        errno.EINVAL: "invalid argument (bad filter expression or field name)",
        errno.E2BIG: "perf_event_attr size rejected by this kernel",
        errno.ENOSYS: "perf_event_open not available (kernel built without CONFIG_PERF_EVENTS)",
    }
    reason = reasons.get(err, os.strerror(err))
    return PerfError(f"{what}: {reason}", err)


def _syscall_number() -> int:
    """perf_event_open's number for the running architecture, from python-ptrace.

    Raises:
        PerfError: python-ptrace missing, or no table for this architecture.
    """
    try:
        # ptrace.syscall.names picks the table matching the running CPU
        # (ptrace.cpu_info) and raises NotImplementedError for any other.
        from ptrace.syscall.names import SYSCALL_NAMES
    except ImportError:
        raise PerfError("perf_event_open: python-ptrace is not installed") from None
    except NotImplementedError:
        raise PerfError(
            f"perf_event_open: python-ptrace has no syscall table for "
            f"architecture {platform.machine()!r}"
        ) from None
    for number, name in SYSCALL_NAMES.items():
        if name == "perf_event_open":
            return int(number)
    raise PerfError(f"perf_event_open: not in python-ptrace's table for {platform.machine()!r}")


OpenFn = Callable[[PerfEventAttr, int, int, int, int], int]
"""(attr, pid, cpu, group_fd, flags) → fd, setting ctypes errno on failure (-1)."""


def _libc_open() -> OpenFn:
    """The real perf_event_open(2) through libc's syscall(2)."""
    number = _syscall_number()
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long

    def call(attr: PerfEventAttr, pid: int, cpu: int, group_fd: int, flags: int) -> int:
        return int(
            syscall(
                ctypes.c_long(number),
                ctypes.byref(attr),
                ctypes.c_int(pid),
                ctypes.c_int(cpu),
                ctypes.c_int(group_fd),
                ctypes.c_ulong(flags),
            )
        )

    return call


_OPEN: OpenFn | None = None


def _default_open() -> OpenFn:
    """The libc binding, built once, on first use: importing python-ptrace is slow
    (bench/results/measurements.md#python-ptrace-import)."""
    global _OPEN
    if _OPEN is None:
        _OPEN = _libc_open()
    return _OPEN


class PerfGroup:
    """Counting tracepoint events of one thread (or CPU), read together.

    The first event added is the group leader. Events are created disabled; set
    their filters, then `enable()` starts the whole group at once. `read()` returns
    the counts in the order the events were added.

    Args:
        tid: thread to count (perf_event_open pid argument; -1 with a cpu for all).
        cpu: CPU to count on, -1 for any CPU the thread runs on.
        open_fn: the syscall (injectable for tests).
    """

    def __init__(self, tid: int, cpu: int = -1, open_fn: OpenFn | None = None) -> None:
        self.tid = tid
        self.cpu = cpu
        self._open = open_fn
        self._fds: list[int] = []
        self._ids: list[int] = []

    def __len__(self) -> int:
        return len(self._fds)

    def add(self, event_id: int, filter_expr: str | None = None) -> int:
        """Open one counting event for tracepoint `event_id`, optionally filtered.

        Args:
            event_id: the tracepoint's id (tracefs events/<sys>/<event>/id).
            filter_expr: an ftrace filter such as "exit_reason == 12"
                (Documentation/trace/events.rst, "Event filtering").

        Returns:
            The event's index in `read()`'s result.

        Raises:
            PerfError: the open or the filter failed (the fd is closed again).
        """
        attr = PerfEventAttr()
        attr.type = PERF_TYPE_TRACEPOINT
        attr.size = PERF_ATTR_SIZE
        attr.config = event_id
        attr.read_format = PERF_FORMAT_GROUP | PERF_FORMAT_ID
        attr.disabled = 1
        leader = self._fds[0] if self._fds else -1
        open_fn = self._open or _default_open()
        fd = open_fn(attr, self.tid, self.cpu, leader, PERF_FLAG_FD_CLOEXEC)
        if fd < 0:
            raise explain(
                ctypes.get_errno(), f"perf_event_open(tracepoint {event_id}, tid {self.tid})"
            )
        try:
            if filter_expr:
                fcntl.ioctl(fd, PERF_EVENT_IOC_SET_FILTER, filter_expr.encode() + b"\0")
            buf = bytearray(8)
            fcntl.ioctl(fd, PERF_EVENT_IOC_ID, buf, True)
        except OSError as exc:
            os.close(fd)
            raise explain(
                exc.errno or 0, f"ioctl on tracepoint {event_id} (filter {filter_expr!r})"
            ) from None
        self._fds.append(fd)
        self._ids.append(struct.unpack("=Q", buf)[0])
        return len(self._fds) - 1

    def _group_ioctl(self, request: int, what: str) -> None:
        if not self._fds:
            return
        try:
            fcntl.ioctl(self._fds[0], request, PERF_IOC_FLAG_GROUP)
        except OSError as exc:
            raise explain(exc.errno or 0, what) from None

    def enable(self) -> None:
        """Start counting every event of the group."""
        self._group_ioctl(PERF_EVENT_IOC_ENABLE, "PERF_EVENT_IOC_ENABLE")

    def disable(self) -> None:
        """Stop counting (counts are kept)."""
        self._group_ioctl(PERF_EVENT_IOC_DISABLE, "PERF_EVENT_IOC_DISABLE")

    def reset(self) -> None:
        """Set every count of the group back to zero."""
        self._group_ioctl(PERF_EVENT_IOC_RESET, "PERF_EVENT_IOC_RESET")

    def read(self) -> tuple[int, ...]:
        """All counts, in the order the events were added.

        With PERF_FORMAT_GROUP | PERF_FORMAT_ID the leader returns
        `{u64 nr; {u64 value; u64 id;} values[nr];}` (perf_event_open(2), "Reading
        results"); ids map values back to events whatever the kernel's order.

        Raises:
            PerfError: the read failed or returned a short or inconsistent buffer.
        """
        if not self._fds:
            return ()
        n = len(self._fds)
        try:
            data = os.read(self._fds[0], 8 + 16 * n)
        except OSError as exc:
            raise explain(exc.errno or 0, f"read of perf group (tid {self.tid})") from None
        if len(data) < 8:
            raise PerfError(f"read of perf group (tid {self.tid}): short read ({len(data)} B)")
        (nr,) = struct.unpack_from("=Q", data)
        if nr != n or len(data) < 8 + 16 * nr:
            raise PerfError(f"read of perf group (tid {self.tid}): {nr} values for {n} events")
        by_id = {ident: value for value, ident in struct.iter_unpack("=QQ", data[8 : 8 + 16 * nr])}
        try:
            return tuple(by_id[ident] for ident in self._ids)
        except KeyError:
            raise PerfError(f"read of perf group (tid {self.tid}): unknown event id") from None

    def close(self) -> None:
        """Close every fd, siblings first then the leader; safe to call twice."""
        while self._fds:
            os.close(self._fds.pop())
        self._ids.clear()

    def __enter__(self) -> PerfGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
