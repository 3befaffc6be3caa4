"""/proc/PID/mountinfo: which filesystem is mounted where (proc(5)).

Layer: collectors (parsing only). Read by the block topology (the filesystem under a
disk image) and the cgroup locator (where each hierarchy is mounted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of /proc/PID/mountinfo (proc(5)).

    Attributes:
        dev: "MAJ:MIN", the st_dev of files on this filesystem.
        root: the directory of the filesystem mounted here ("/" for the whole fs).
        mountpoint: where it is mounted.
        fstype: filesystem type ("ext4", "btrfs", "cgroup", "cgroup2", ...).
        source: mount source ("/dev/sda2", "tmpfs", "server:/export", ...).
        options: per-superblock options ("rw,cpu,cpuacct" for a cgroup v1 hierarchy).
    """

    dev: str
    root: str
    mountpoint: str
    fstype: str
    source: str
    options: tuple[str, ...]


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    r"""Undo mountinfo's octal escapes of space, tab, newline and backslash
    (fs/proc_namespace.c show_mountinfo → mangle(): "\040" for a space)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/PID/mountinfo: "id parent MAJ:MIN root mountpoint opts
    [optional...] - fstype source superopts". Malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 6 or len(rest) < 2:
            continue
        out.append(
            Mount(
                dev=fields[2],
                root=_unescape(fields[3]),
                mountpoint=_unescape(fields[4]),
                fstype=rest[0],
                source=_unescape(rest[1]),
                options=tuple(rest[2].split(",")) if len(rest) > 2 else (),
            )
        )
    return out
