"""Settings: defaults, overridden by a TOML config file, overridden by flags.

Layer: config (pure data + file parsing; never imports textual or collectors).

The file is `$XDG_CONFIG_HOME/kvmtop/config.toml` (default `~/.config/...`) or the
path given with `--config`. Unknown keys and wrong types are reported with the file
and key, never silently ignored.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The config file cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a user can tune.

    Attributes:
        uri: libvirt connection URI.
        interval_s: sampling interval (fast tier).
        balloon_every: collect balloon stats every N ticks (slow tier; costs the most
            libvirtd time per domain: ../shared/reference/lab.md).
        window_size: samples kept in memory for trends and plots.
        min_ops: minimum disk requests in an interval before a latency is shown.
        theme: theme name.
        steal_warn_pct / steal_crit_pct: guest-table colouring of steal.
    """

    uri: str = "qemu:///system"
    interval_s: float = 2.0
    balloon_every: int = 5
    window_size: int = 1800
    min_ops: int = 5
    theme: str = "kvmtop-dark"
    steal_warn_pct: float = 5.0
    steal_crit_pct: float = 10.0


def default_config_path() -> Path:
    """`$XDG_CONFIG_HOME/kvmtop/config.toml`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kvmtop" / "config.toml"


def _coerce(path: Path, key: str, value: Any, default: Any) -> Any:
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
            f"{path}: '{key}' must be {type(default).__name__}, got {type(value).__name__}"
        )
    return value


def parse_settings(text: str, path: Path, base: Settings | None = None) -> Settings:
    """Settings from TOML text (keys at top level), on top of `base`."""
    base = base or Settings()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    known = {f.name: getattr(base, f.name) for f in fields(Settings)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    values = {k: _coerce(path, k, v, known[k]) for k, v in data.items()}
    if values.get("interval_s", 1.0) <= 0:
        raise ConfigError(f"{path}: 'interval_s' must be > 0")
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
        text = path.read_text()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such config file") from None
        return Settings(), None
    except OSError as exc:
        if explicit:
            raise ConfigError(f"{path}: {exc.strerror}") from exc
        return Settings(), f"{path}: {exc.strerror}; using defaults"
    try:
        return parse_settings(text, path), None
    except ConfigError as exc:
        if explicit:
            raise
        return Settings(), f"{exc}; using defaults"
