"""Settings: defaults, overridden by a TOML config file, overridden by flags.

Layer: beside the sampler and the store (pure data + file parsing; never imports
textual or collectors).

The file is `$XDG_CONFIG_HOME/kvmtop/config.toml` (default `~/.config/...`) or the
path given with `--config`. Unknown keys and wrong types are reported with the file,
the key and (where it can be found) the line, never silently ignored.

Detector thresholds live in tables (defaults and sources in
`kvmtop.detectors.settings`):

    [detectors]
    disabled = ["overcommit"]
    incident_gap_s = 300              # a cause back within 5 min: the same incident

    [detectors.steal]
    warn_mean_pct = 8

    [detectors.vswitch_saturation.uplink_capacity_mbps]
    labup0 = 10                       # wins over link speed and tbf/htb rate

    [detectors.overrides."batch-*"]   # guests whose name matches the glob
    disabled = ["exit_storm"]
    [detectors.overrides."batch-*".disk_latency]
    floor_ssd_ms = 10

Network round-trip probes send packets, so they are off unless asked for
(`kvmtop --rtt` or):

    [rtt]
    enabled = true
    every_s = 5                       # at most one probe per vNIC this often
    addresses = { "web-1" = "192.0.2.10" }   # where libvirt and ARP know none
    tcp_ports = { "web-1" = 22 }      # TCP connect instead of ICMP (drops echo)
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kvmtop.detectors.settings import (
    DETECTOR_IDS,
    DETECTOR_SETTINGS_TYPES,
    DetectorSettings,
    GuestOverride,
)
from kvmtop.model.window import GUEST_FRAMES


class ConfigError(Exception):
    """The config file cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class RttSettings:
    """Opt-in RTT probing of guests (kvmtop.collectors.netprobe).

    Attributes:
        enabled: probe at all (sends ICMP echo or TCP SYN to guest addresses).
        every_s: seconds between two probes of one vNIC (and of one bridge).
        addresses: guest name or UUID → IPv4 address, for guests whose address
            neither libvirt nor the host's ARP table knows.
        tcp_ports: guest name or UUID → TCP port to connect to instead of ICMP.
    """

    enabled: bool = False
    every_s: float = 5.0
    addresses: dict[str, str] = field(default_factory=dict)
    tcp_ports: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a user can tune.

    Attributes:
        uri: libvirt connection URI.
        interval_s: sampling interval (fast tier).
        balloon_every: collect balloon stats every N ticks (slow tier; costs the most
            libvirtd time per domain: tests/lab/README.md#libvirt-stats-cost-per-group).
        window_size: frames kept in memory for the detail screen's plots (fewer with
            many guests: `kvmtop.model.window`); detectors keep their own history.
        min_ops: minimum disk requests in an interval before a latency is shown.
        theme: theme name.
        steal_warn_pct / steal_crit_pct: guest-table colouring of steal.
        detectors: every detector threshold (the `[detectors.*]` tables).
        rtt: RTT probing (the `[rtt]` table; off by default).
    """

    uri: str = "qemu:///system"
    interval_s: float = 2.0
    balloon_every: int = 5
    window_size: int = 300
    min_ops: int = 5
    theme: str = "kvmtop-dark"
    steal_warn_pct: float = 5.0
    steal_crit_pct: float = 10.0
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    rtt: RttSettings = field(default_factory=RttSettings)


LIMITS: dict[str, tuple[float, float]] = {
    # Seconds. Below 0.1 s libvirt's vCPU times (10 ms ticks) give figures in steps of
    # 10 % and a tick of many guests can outlast the interval; above an hour a rate
    # over one interval says little, and the detectors, which count ticks, would take
    # hours or days to raise a finding.
    "interval_s": (0.1, 3600.0),
    "balloon_every": (1, 1000),  # ticks between balloon stats
    # Frames; the window never keeps more than GUEST_FRAMES guest entries anyway, and
    # rates need two frames (kvmtop.model.window).
    "window_size": (2, GUEST_FRAMES),
    "min_ops": (0, 1_000_000),  # disk requests per interval (0 acts as 1)
    "steal_warn_pct": (0.0, 100.0),
    "steal_crit_pct": (0.0, 100.0),
}
"""The range (inclusive) of each top-level number, whether from the file or a flag."""


def out_of_range(key: str, value: float) -> str | None:
    """Why `value` cannot be `key` (a `LIMITS` key), or None when it can.

    NaN and infinities are never in range (every comparison with NaN is false).
    """
    low, high = LIMITS[key]
    if low <= value <= high:
        return None
    return f"must be a number from {low:g} to {high:g}, got {value!r}"


def default_config_path() -> Path:
    """`$XDG_CONFIG_HOME/kvmtop/config.toml`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kvmtop" / "config.toml"


def _coerce(path: Path, key: str, value: Any, default: Any, line: str = "") -> Any:
    """Check one value against the type of its default (int accepted for floats)."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{path}: '{key}' must be {type(default).__name__}, got {type(value).__name__}{line}"
        )
    return value


# ------------------------------------------------------------------ line numbers

_HEADER = re.compile(r"^\s*\[\[?\s*(.+?)\s*\]\]?\s*(#.*)?$")
_PART = r"(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)"
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _split_dotted(text: str) -> tuple[str, ...]:
    """`a."b.c".d` → ("a", "b.c", "d") (TOML dotted keys with quoted parts)."""
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', text)
    return tuple(a or b or c for a, b, c in parts)


def _dotted(keys: tuple[str, ...]) -> str:
    """A key path as TOML writes it, quoting parts that are not bare keys."""
    return ".".join(k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else f'"{k}"' for k in keys)


def _line_of(text: str, dotted: tuple[str, ...]) -> str:
    """ " (line N)" for the line defining the key path `dotted`, or "" when not found.

    tomllib reports lines only for syntax errors, so the semantic errors (unknown key,
    wrong type) find their line by scanning table headers and `key =` lines. A key
    inside an inline table gets the line of the nearest enclosing key found.
    """
    for length in range(len(dotted), 0, -1):
        found = _line_exact(text, dotted[:length])
        if found:
            return found
    return ""


def _line_exact(text: str, dotted: tuple[str, ...]) -> str:
    """`_line_of` for exactly this key path."""
    table: tuple[str, ...] = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw)
        if header is not None:
            table = _split_dotted(header.group(1))
            if table == dotted:
                return f" (line {number})"
            continue
        key = _KEY.match(raw)
        if key is not None:
            full = table + _split_dotted(key.group(1))
            if full == dotted or full[: len(dotted)] == dotted:
                return f" (line {number})"
    return ""


# ------------------------------------------------------------------ detector tables


class _Checker:
    """Validates the `[detectors]` tree against the detector settings dataclasses."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, keys: tuple[str, ...], message: str) -> ConfigError:
        """A ConfigError naming the file, the dotted key and its line."""
        line = _line_of(self.text, keys)
        return ConfigError(f"{self.path}: '{_dotted(keys)}' {message}{line}")

    def unknown(self, keys: tuple[str, ...], names: list[str]) -> ConfigError:
        """A ConfigError for keys the schema does not have."""
        full = [_dotted((*keys, n)) for n in names]
        line = _line_of(self.text, (*keys, names[0]))
        return ConfigError(f"{self.path}: unknown key(s) {', '.join(full)}{line}")

    def value(self, keys: tuple[str, ...], hint: Any, value: Any) -> Any:
        """`value` checked (and converted) against a field's type hint."""
        origin = typing.get_origin(hint)
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(keys, f"must be float, got {type(value).__name__}")
            if not math.isfinite(value):  # TOML has inf and nan
                raise self.fail(keys, f"must be a finite number, got {value!r}")
            if value < 0:
                raise self.fail(keys, "must be >= 0")
            return float(value)
        if hint is bool or hint is str:
            if not isinstance(value, hint):
                raise self.fail(keys, f"must be {hint.__name__}, got {type(value).__name__}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(keys, f"must be int, got {type(value).__name__}")
            if value < 0:
                raise self.fail(keys, "must be >= 0")
            return value
        if origin is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.fail(keys, "must be a list of strings")
            return tuple(value)
        if origin is dict:
            if not isinstance(value, dict):
                raise self.fail(keys, f"must be a table, got {type(value).__name__}")
            _, item = typing.get_args(hint)
            return {k: self.value((*keys, k), item, v) for k, v in value.items()}
        raise self.fail(keys, f"has an unsupported type {hint!r}")  # pragma: no cover

    def table(self, keys: tuple[str, ...], cls: type, data: Any) -> dict[str, Any]:
        """The checked `{field: value}` changes for one detector settings class."""
        if not isinstance(data, dict):
            raise self.fail(keys, f"must be a table, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(data) - set(hints))
        if unknown:
            raise self.unknown(keys, unknown)
        values = {k: self.value((*keys, k), hints[k], v) for k, v in data.items()}
        for k in ("raise_after", "clear_after"):
            if values.get(k, 1) < 1:
                raise self.fail((*keys, k), "must be >= 1")
        merged = {f.name: values.get(f.name, getattr(cls(), f.name)) for f in fields(cls)}
        if "min_points" in merged:
            if merged["min_points"] < 3:
                raise self.fail((*keys, "min_points"), "must be >= 3 (Mann–Kendall needs 3)")
            if merged["max_points"] < 2 * merged["min_points"]:
                raise self.fail((*keys, "max_points"), "must be >= 2 × min_points")
        return values

    def ids(self, keys: tuple[str, ...], value: Any) -> tuple[str, ...]:
        """A list of detector ids."""
        names = self.value(keys, tuple[str, ...], value)
        bad = [n for n in names if n not in DETECTOR_IDS]
        if bad:
            raise self.fail(keys, f"names unknown detector(s) {', '.join(bad)}")
        return typing.cast(tuple[str, ...], names)

    def detectors(self, data: Any, base: DetectorSettings) -> DetectorSettings:
        """The whole `[detectors]` table, on top of `base`."""
        keys = ("detectors",)
        if not isinstance(data, dict):
            raise self.fail(keys, f"must be a table, got {type(data).__name__}")
        allowed = {*DETECTOR_IDS, "disabled", "overrides", "incident_gap_s"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise self.unknown(keys, unknown)
        changes: dict[str, Any] = {}
        for det, cls in DETECTOR_SETTINGS_TYPES.items():
            if det in data:
                values = self.table((*keys, det), cls, data[det])
                changes[det] = replace(getattr(base, det), **values)
        if "disabled" in data:
            changes["disabled"] = self.ids((*keys, "disabled"), data["disabled"])
        if "overrides" in data:
            changes["overrides"] = self.overrides(data["overrides"])
        if "incident_gap_s" in data:
            gap = (*keys, "incident_gap_s")
            changes["incident_gap_s"] = self.value(gap, float, data["incident_gap_s"])
        return replace(base, **changes)

    def overrides(self, data: Any) -> tuple[GuestOverride, ...]:
        """`[detectors.overrides."<glob>"]` tables, in file order."""
        keys = ("detectors", "overrides")
        if not isinstance(data, dict):
            raise self.fail(keys, f"must be a table, got {type(data).__name__}")
        result = []
        for pattern, table in data.items():
            okeys = (*keys, pattern)
            if not isinstance(table, dict):
                raise self.fail(okeys, f"must be a table, got {type(table).__name__}")
            unknown = sorted(set(table) - {*DETECTOR_IDS, "disabled"})
            if unknown:
                raise self.unknown(okeys, unknown)
            values = {
                det: self.table((*okeys, det), DETECTOR_SETTINGS_TYPES[det], table[det])
                for det in DETECTOR_IDS
                if det in table
            }
            disabled = self.ids((*okeys, "disabled"), table.get("disabled", []))
            result.append(GuestOverride(pattern=pattern, disabled=disabled, values=values))
        return tuple(result)


def parse_settings(text: str, path: Path, base: Settings | None = None) -> Settings:
    """Settings from TOML text (keys at top level, detector tables), on top of `base`."""
    base = base or Settings()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line N, column M)".
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    known = {f.name: getattr(base, f.name) for f in fields(Settings)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        line = _line_of(text, (unknown[0],))
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}{line}")
    values = {
        k: _coerce(path, k, v, known[k], _line_of(text, (k,)))
        for k, v in data.items()
        if k not in ("detectors", "rtt")
    }
    for key in LIMITS:
        problem = out_of_range(key, values[key]) if key in values else None
        if problem:
            raise ConfigError(f"{path}: '{key}' {problem}{_line_of(text, (key,))}")
    if "detectors" in data:
        values["detectors"] = _Checker(path, text).detectors(data["detectors"], base.detectors)
    if "rtt" in data:
        checker = _Checker(path, text)
        rtt = checker.table(("rtt",), RttSettings, data["rtt"])
        if rtt.get("every_s", 1.0) < 1:
            raise checker.fail(("rtt", "every_s"), "must be >= 1")
        values["rtt"] = replace(base.rtt, **rtt)
    return replace(base, **values)


def load_settings(path: Path | None) -> tuple[Settings, str | None]:
    """Load the config file.

    Args:
        path: an explicit file (must exist), or None for the default location
            (optional).

    Returns:
        (settings, warning): with a broken default file the defaults are used and
        the warning says why.

    Raises:
        ConfigError: an explicit file is missing or broken.
    """
    explicit = path is not None
    path = path or default_config_path()
    try:
        return parse_settings(_read(path), path), None
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such config file") from None
        return Settings(), None
    except ConfigError as exc:
        if explicit:
            raise
        return Settings(), f"{exc}; using defaults"


def _read(path: Path) -> str:
    """The text of a config file (TOML files are UTF-8).

    Raises:
        FileNotFoundError: there is no such file.
        ConfigError: it cannot be read, or is not UTF-8.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text, as TOML must be ({exc.reason} at byte "
            f"{exc.start}, line {line})"
        ) from None
