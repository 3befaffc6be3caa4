"""kvmtop's unit constants: the one place a scale factor and a unit's name are defined.

Layer: model (pure; imports nothing). Every module that converts nanoseconds, KiB or
MiB imports the factor from here, and the field catalogue (`kvmtop.model.fields`)
names each figure's unit with one of the `UNIT_*` names.
"""

from __future__ import annotations

NS_PER_S = 1_000_000_000
"""Nanoseconds per second (cputime, schedstat and KVM counters are in ns)."""
NS_PER_MS = 1_000_000
"""Nanoseconds per millisecond (latencies are shown in ms)."""
NS_PER_US = 1_000
"""Nanoseconds per microsecond."""

KIB = 1 << 10
"""Bytes per KiB (libvirt's balloon and memory figures are in KiB)."""
MIB = 1 << 20
"""Bytes per MiB."""
GIB = 1 << 30
"""Bytes per GiB."""
TIB = 1 << 40
"""Bytes per TiB."""
BITS_PER_MBIT = 1_000_000
"""Bits per megabit (network rates are shown in Mb/s; link speeds are in Mb/s)."""
BITS_PER_BYTE = 8
"""Bits per byte."""

UNIT_PCT = "%"
"""Percent (a guest's `cpu_pct` is per host CPU: 100 = one CPU)."""
UNIT_PER_S = "1/s"
"""Events per second."""
UNIT_MS = "ms"
"""Milliseconds (per request, or a round trip)."""
UNIT_S = "s"
"""Seconds (an age, or a Unix time)."""
UNIT_BYTES = "B"
"""Bytes."""
UNIT_BYTES_PER_S = "B/s"
"""Bytes per second."""
UNIT_BITS_PER_S = "bit/s"
"""Bits per second (network rates: `*_bps`)."""
UNIT_COUNT = "1"
"""A count (vCPUs)."""
UNIT_TEXT = ""
"""No unit: a name, a state, a reason."""
