"""Themes: `themes/*.toml` files turned into Textual `Theme` objects.

Layer: views. Reads theme files only (no snapshot data).

Packaged themes come from `importlib.resources.files("kvmtop") / "themes"` in an
installed wheel (pyproject force-includes the top-level `themes/` there) and from the
repository's `themes/` in a source checkout; user themes from
`$XDG_CONFIG_HOME/kvmtop/themes/` (default `~/.config/kvmtop/themes/`). A user theme
with the name of a packaged one replaces it. A broken file never stops the app: it is
reported as "file: reason" and skipped. The schema is in `themes/README.md`.
"""

from __future__ import annotations

import os
import tomllib
from importlib.abc import Traversable
from importlib.resources import files
from pathlib import Path
from typing import Any

from textual.app import App
from textual.color import Color, ColorParseError
from textual.theme import Theme

BASE_COLOURS: tuple[str, ...] = (
    "primary",
    "secondary",
    "accent",
    "warning",
    "error",
    "success",
    "foreground",
    "background",
    "surface",
    "panel",
)
"""Textual's base colours a theme file may set (only `primary` is required)."""

APP_VARIABLES: dict[str, str] = {
    "kvm-ok": "healthy: sources that work, the LIVE badge",
    "kvm-warn": "warning: cells at or over the warn threshold, warn findings, PAUSED badge",
    "kvm-crit": "critical: cells at or over the crit threshold, crit findings, failed "
    "sources, the REC badge",
    "kvm-info": "informational: info findings, the REPLAY badge",
    "kvm-dim": "de-emphasised: stopped guests, labels, unknown values",
    "kvm-spark-min": "sparkline colour of the lowest values",
    "kvm-spark-max": "sparkline colour of the highest values",
}
"""kvmtop's own CSS variables (name → meaning); `[variables]` may set only these."""


class ThemeError(ValueError):
    """A theme file cannot be used; the message says why."""


def _colour(key: str, value: Any) -> str:
    """A colour value checked with Textual's parser."""
    if not isinstance(value, str):
        raise ThemeError(f"'{key}' must be a colour string, got {type(value).__name__}")
    try:
        Color.parse(value)
    except ColorParseError as exc:
        raise ThemeError(f"'{key}': {exc}") from None
    return value


def parse_theme(text: str, default_name: str) -> Theme:
    """Build a theme from the text of one TOML theme file.

    Args:
        text: the file's content.
        default_name: the name to use when the file sets none (the file's stem).

    Returns:
        The theme.

    Raises:
        ThemeError: invalid TOML, an unknown key or variable, a wrong type, or a
            colour `textual.color.Color.parse` rejects.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThemeError(f"not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"name", "dark", "variables", *BASE_COLOURS})
    if unknown:
        raise ThemeError(f"unknown key(s) {', '.join(unknown)}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ThemeError("'name' must be a non-empty string")
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        raise ThemeError("'dark' must be true or false")
    if "primary" not in data:
        raise ThemeError("'primary' is required")
    primary = _colour("primary", data["primary"])
    colours = {
        k: _colour(k, data[k]) if k in data else None for k in BASE_COLOURS if k != "primary"
    }
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeError("[variables] must be a table")
    unknown = sorted(set(variables) - set(APP_VARIABLES))
    if unknown:
        raise ThemeError(
            f"unknown variable(s) {', '.join(unknown)} (known: {', '.join(APP_VARIABLES)})"
        )
    checked = {k: _colour(k, v) for k, v in variables.items()}
    return Theme(
        name=name,
        dark=dark,
        variables=checked,
        primary=primary,
        secondary=colours["secondary"],
        accent=colours["accent"],
        warning=colours["warning"],
        error=colours["error"],
        success=colours["success"],
        foreground=colours["foreground"],
        background=colours["background"],
        surface=colours["surface"],
        panel=colours["panel"],
    )


def load_theme_dir(directory: Traversable) -> tuple[list[Theme], list[str]]:
    """Every `*.toml` theme in a directory, sorted by file name.

    Returns:
        (themes, errors): errors are "file: reason" strings for files skipped.
    """
    themes: list[Theme] = []
    errors: list[str] = []
    if not directory.is_dir():
        return themes, errors
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        try:
            themes.append(parse_theme(entry.read_text(encoding="utf-8"), entry.name[:-5]))
        except (ThemeError, OSError, UnicodeDecodeError) as exc:
            errors.append(f"{entry}: {exc}")
    return themes, errors


def packaged_theme_dir() -> Traversable:
    """The shipped themes: inside the installed package, else the repository's."""
    installed = files("kvmtop") / "themes"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "themes"


def user_theme_dir() -> Path:
    """`$XDG_CONFIG_HOME/kvmtop/themes` (default `~/.config/kvmtop/themes`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kvmtop" / "themes"


def load_themes(user_dir: Path | None = None) -> tuple[list[Theme], list[str]]:
    """Packaged themes, then the user's (a user theme replaces one of the same name).

    Args:
        user_dir: the user theme directory; None means `user_theme_dir()`.

    Returns:
        (themes, errors): themes in load order; errors as "file: reason".
    """
    shipped, errors = load_theme_dir(packaged_theme_dir())
    mine, user_errors = load_theme_dir(user_dir if user_dir is not None else user_theme_dir())
    by_name = {t.name: t for t in shipped}
    by_name.update({t.name: t for t in mine})
    return list(by_name.values()), errors + user_errors


def variable_defaults(theme: Theme) -> dict[str, str]:
    """Values of kvmtop's variables derived from a theme's base colours.

    Used for themes that do not set them (Textual's stock themes, partial user
    themes), so `kvmtop.tcss` parses under any theme.
    """
    c = theme.to_color_system().generate()
    dim = Color.parse(c["foreground"]).blend(Color.parse(c["background"]), 0.45)
    return {
        "kvm-ok": c["success"],
        "kvm-warn": c["warning"],
        "kvm-crit": c["error"],
        "kvm-info": c["primary"],
        "kvm-dim": dim.hex,
        "kvm-spark-min": c["success"],
        "kvm-spark-max": c["error"],
    }


class ThemedApp(App[None]):
    """An app with kvmtop's themes (packaged, then the user's), starting on
    `theme_name`; `action_next_theme` cycles them. Subclasses call
    `notify_theme_problems` once mounted."""

    def __init__(
        self, *, theme_name: str | None = None, user_theme_dir: Path | None = None
    ) -> None:
        """Register the themes and pick the first one.

        Args:
            theme_name: the theme to start with (default kvmtop-dark).
            user_theme_dir: user theme directory (default ~/.config/kvmtop/themes).
        """
        super().__init__()
        themes, self.theme_errors = load_themes(user_theme_dir)
        for theme in themes:
            self.register_theme(theme)
        self.kvmtop_themes = [t.name for t in themes]
        wanted = theme_name or "kvmtop-dark"
        self.theme_warning = (
            None
            if wanted in self.available_themes
            else (f"theme '{wanted}' not found; available: {', '.join(self.kvmtop_themes)}")
        )
        self.theme = (
            wanted
            if self.theme_warning is None
            else (self.kvmtop_themes[0] if self.kvmtop_themes else "textual-dark")
        )

    def get_theme_variable_defaults(self) -> dict[str, str]:
        """kvmtop's variables derived from the current theme, for themes that lack them."""
        return variable_defaults(self.current_theme)

    def notify_theme_problems(self) -> None:
        """Say once which theme files were skipped and whether the wanted one is missing."""
        if self.theme_errors:
            self.notify(
                "\n".join(self.theme_errors),
                title="Broken theme files skipped",
                severity="warning",
                timeout=15,
            )
        if self.theme_warning:
            self.notify(self.theme_warning, severity="warning", timeout=10)

    def action_next_theme(self) -> None:
        """Switch to the next kvmtop theme."""
        names = self.kvmtop_themes
        if not names:
            return
        i = names.index(self.theme) + 1 if self.theme in names else 0
        self.theme = names[i % len(names)]
        self.notify(f"theme {self.theme}", timeout=3)
