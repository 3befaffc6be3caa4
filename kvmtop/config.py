"""Settings: defaults, overridden by a TOML config file, overridden by flags.

Layer: beside the sampler and the store (pure data + file parsing; never imports
textual or collectors).

The file is `$XDG_CONFIG_HOME/kvmtop/config.toml` (default `~/.config/...`) or the
path given with `--config`. Its schema is the types of `Settings` and of the detector
settings (`kvmtop.detectors.settings`), limits included (msgspec `Meta`): msgspec
converts the parsed TOML against them, and an unknown key, a value of another type or
out of its limits is reported with the file, the key and (where it can be found) the
line, never silently ignored.

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

import os
import re
import tomllib
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import GenericAlias
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from kvmtop.detectors.settings import (
    DETECTOR_IDS,
    DETECTOR_SETTINGS_TYPES,
    DetectorId,
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
    every_s: Annotated[float, Meta(ge=1, le=1e308)] = 5.0
    addresses: dict[str, str] = field(default_factory=dict)
    tcp_ports: dict[str, Annotated[int, Meta(ge=1, le=65535)]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a user can tune; each number's type holds its range (inclusive),
    whether it comes from the file or a flag (`out_of_range`).

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
    # Seconds. Below 0.1 s libvirt's vCPU times (10 ms ticks) give figures in steps of
    # 10 % and a tick of many guests can outlast the interval; above an hour a rate
    # over one interval says little, and the detectors, which count ticks, would take
    # hours or days to raise a finding.
    interval_s: Annotated[float, Meta(ge=0.1, le=3600)] = 2.0
    balloon_every: Annotated[int, Meta(ge=1, le=1000)] = 5  # ticks between balloon stats
    # Frames; the window never keeps more than GUEST_FRAMES guest entries anyway, and
    # rates need two frames (kvmtop.model.window).
    window_size: Annotated[int, Meta(ge=2, le=GUEST_FRAMES)] = 300
    # Disk requests per interval (0 acts as 1).
    min_ops: Annotated[int, Meta(ge=0, le=1_000_000)] = 5
    theme: str = "kvmtop-dark"
    steal_warn_pct: Annotated[float, Meta(ge=0, le=100)] = 5.0
    steal_crit_pct: Annotated[float, Meta(ge=0, le=100)] = 10.0
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    rtt: RttSettings = field(default_factory=RttSettings)


_HINTS = typing.get_type_hints(Settings, include_extras=True)


def out_of_range(key: str, value: float) -> str | None:
    """Why `value` cannot be the setting `key` (a number of `Settings`), by the limits
    of its type, or None when it can. NaN and infinities never can."""
    try:
        msgspec.convert(value, _HINTS[key])
    except msgspec.ValidationError as exc:
        return f"{_said(str(exc))}, got {value!r}"
    return None


def default_config_path() -> Path:
    """`$XDG_CONFIG_HOME/kvmtop/config.toml`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kvmtop" / "config.toml"


# ------------------------------------------------------------------ the file's schema


class _Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A table of the config file: the keys of the settings dataclass `of`, of its
    fields' types, each one optional (UNSET where the file has none). msgspec refuses
    a key that `of` does not have (it would ignore one given for a dataclass)."""

    of: ClassVar[type]

    def given(self) -> dict[str, Any]:
        """The keys the file sets, a nested table as its settings object."""
        values = {name: getattr(self, name) for name in self.__struct_fields__}
        return {
            name: value.settings() if isinstance(value, _Table) else value
            for name, value in values.items()
            if value is not UNSET
        }

    def settings(self) -> Any:
        """The settings object: the defaults of `of`, replaced by what the file sets."""
        return self.of(**self.given())


def _check(table: _Table) -> None:
    """The `__post_init__` of a table whose dataclass checks values across keys in its
    own: run that check (a ValueError, which msgspec reports at the table). A table of
    an override is checked against the defaults of the keys it leaves out."""
    table.settings()


class _Detectors(_Table, frozen=True):
    """The `[detectors]` table, whose `overrides` are a table of glob → `_Override`."""

    def given(self) -> dict[str, Any]:
        given = super().given()
        if "overrides" in given:
            given["overrides"] = tuple(o.override(p) for p, o in given["overrides"].items())
        return given


class _Override(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A `[detectors.overrides."<glob>"]` table: `disabled`, and detector tables whose
    keys replace the global values for the guests the glob matches."""

    disabled: tuple[DetectorId, ...] = ()

    def override(self, pattern: str) -> GuestOverride:
        """The override for guests whose name matches `pattern`."""
        tables = {det: getattr(self, det) for det in DETECTOR_SETTINGS_TYPES}
        values = {det: t.given() for det, t in tables.items() if t is not UNSET}
        return GuestOverride(pattern, self.disabled, values)


def _table(cls: type, base: type[_Table] = _Table, **types: Any) -> type[_Table]:
    """The table of the settings dataclass `cls`: its fields, each of the field's type
    (a dataclass as its own table) or of the type in `types`."""
    hints = typing.get_type_hints(cls, include_extras=True) | types
    schema = {
        n: _table(t) if isinstance(t, type) and is_dataclass(t) else t for n, t in hints.items()
    }
    namespace: dict[str, Any] = {"of": cls}
    if hasattr(cls, "__post_init__"):
        namespace["__post_init__"] = _check
    table = msgspec.defstruct(
        f"{cls.__name__}Table",
        [(f.name, schema[f.name] | UnsetType, UNSET) for f in fields(cls)],
        bases=(base,),
        namespace=namespace,
    )
    return typing.cast(type[_Table], table)


_OVERRIDE = msgspec.defstruct(
    "OverrideTable",
    [(det, _table(cls) | UnsetType, UNSET) for det, cls in DETECTOR_SETTINGS_TYPES.items()],
    bases=(_Override,),
)
_FILE = _table(
    Settings,
    detectors=_table(DetectorSettings, _Detectors, overrides=GenericAlias(dict, (str, _OVERRIDE))),
)
"""The whole file."""


def parse_settings(text: str, path: Path) -> Settings:
    """Settings from the TOML text of the config file `path`: the defaults, replaced by
    what the file sets (raises ConfigError)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line N, column M)".
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        settings: Settings = msgspec.convert(data, _FILE).settings()
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {_problem(str(exc), data, text)}") from exc
    return settings


# ------------------------------------------------------------------ errors


def _said(message: str) -> str:
    """msgspec's message in a kvmtop line: after the key, and TOML's word for a table."""
    return (message[:1].lower() + message[1:]).replace("`object`", "`table`")


def _problem(error: str, data: dict[str, Any], text: str) -> str:
    """msgspec's `error` ("Expected `int` >= 1 - at `$.detectors.steal.raise_after`")
    as kvmtop says it: the key path as TOML writes it, the value a limit refused and
    the line ("'detectors.steal.raise_after' expected `int` >= 1, got 0 (line 2)")."""
    message, at, where = error.rpartition(" - at `$")
    keys = _keys(where.removesuffix("`"), data, error) if at else ()
    message = message if at else error
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", message, re.DOTALL)
    if unknown:
        keys = (*keys, unknown.group(1))
        return f"unknown key '{_dotted(keys)}'{_line_of(text, keys)}"
    said = _said(message)
    if said.startswith("expected") and ", got " not in said:  # a limit: say the value
        said += f", got {_at(data, keys)!r}"
    elif said.startswith("invalid enum value"):  # a DetectorId, the schema's one enum
        said += f" (detector ids: {', '.join(DETECTOR_IDS)})"
    return f"'{_dotted(keys)}' {said}{_line_of(text, keys)}"


_STEP = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")
"""One step of msgspec's path: `.field`, `[index]`, or `[...]` for any key of a dict."""


def _keys(where: str, data: dict[str, Any], error: str) -> tuple[str | int, ...]:
    """The key path in `data` of msgspec's `where` (".rtt.tcp_ports[...]").

    msgspec names no key of a table it reads as a dict (`[...]`): that key is the first
    whose entry alone in the table gives the same error, as msgspec reads a table's
    keys in order and stops at the first error. Each table found is narrowed to that
    entry before the next is searched, as a later sibling may hold an error of the
    same text (`$.detectors.overrides[...].steal.k` in two globs).
    """
    keys: list[str | int] = []
    for name, index in _STEP.findall(where):
        if name:
            keys.append(name)
        elif index:
            keys.append(int(index))
        else:
            table: dict[str, Any] = _at(data, keys)
            key = next(k for k in table if _error(_narrowed(data, keys, k)) == error)
            data = _narrowed(data, keys, key)
            keys.append(key)
    return tuple(keys)


def _at(data: dict[str, Any], keys: Sequence[str | int]) -> Any:
    """The value at the key path `keys` of `data`."""
    node: Any = data
    for key in keys:
        node = node[key]
    return node


def _narrowed(data: Any, keys: Sequence[str | int], key: str) -> Any:
    """A copy of `data` whose table at the key path `keys` keeps only `key`."""
    if not keys:
        return {key: data[key]}
    copy = data.copy()
    copy[keys[0]] = _narrowed(data[keys[0]], keys[1:], key)
    return copy


def _error(data: dict[str, Any]) -> str | None:
    """msgspec's error for the file `data`, or None."""
    try:
        msgspec.convert(data, _FILE)
    except msgspec.ValidationError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------ line numbers

_HEADER = re.compile(r"^\s*\[\[?\s*(.+?)\s*\]\]?\s*(#.*)?$")
_PART = r"(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)"
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _split_dotted(text: str) -> tuple[str, ...]:
    """`a."b.c".d` → ("a", "b.c", "d") (TOML dotted keys with quoted parts)."""
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', text)
    return tuple(a or b or c for a, b, c in parts)


def _dotted(keys: Sequence[str | int]) -> str:
    """A key path as TOML writes it, quoting parts that are not bare keys (an item of
    an array as `[i]`)."""
    bare = re.compile(r"[A-Za-z0-9_-]+")
    parts = (
        f"[{k}]" if isinstance(k, int) else f".{k}" if bare.fullmatch(k) else f'."{k}"'
        for k in keys
    )
    return "".join(parts).removeprefix(".")


def _line_of(text: str, keys: Sequence[str | int]) -> str:
    """ " (line N)" for the line defining the key path `dotted`, or "" when not found.

    tomllib reports lines only for syntax errors, so the semantic errors (unknown key,
    wrong type) find their line by scanning table headers and `key =` lines. A key
    inside an inline table gets the line of the nearest enclosing key found, an item
    of an array the line of its key.
    """
    dotted = tuple(k for k in keys if isinstance(k, str))
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
