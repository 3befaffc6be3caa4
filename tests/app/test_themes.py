"""Theme files: every shipped theme loads and parses, broken files are all reported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.color import Color
from textual.css.stylesheet import Stylesheet
from textual.theme import BUILTIN_THEMES, Theme

from kvmtop.views.themes import (
    APP_VARIABLES,
    BASE_COLOURS,
    ThemeError,
    load_theme_dir,
    load_themes,
    packaged_theme_dir,
    parse_theme,
    variable_defaults,
)

TCSS = Path(__file__).resolve().parents[2] / "kvmtop" / "views" / "kvmtop.tcss"
SHIPPED = ("kvmtop-dark", "kvmtop-high-contrast", "kvmtop-light")


def shipped() -> list[Theme]:
    themes, errors = load_theme_dir(packaged_theme_dir())
    assert errors == []
    return themes


def test_every_shipped_theme_loads_with_every_colour_parsing() -> None:
    themes = shipped()
    assert [t.name for t in themes] == list(SHIPPED)
    for theme in themes:
        for key in BASE_COLOURS:
            value = getattr(theme, key)
            assert value is not None, f"{theme.name} sets no {key}"
            Color.parse(value)
        assert set(theme.variables) == set(APP_VARIABLES), theme.name
        for value in theme.variables.values():
            Color.parse(value)


@pytest.mark.parametrize(
    "theme", [*shipped(), BUILTIN_THEMES["textual-dark"]], ids=lambda t: t.name
)
def test_tcss_parses_under_theme(theme: Theme) -> None:
    sheet = Stylesheet(
        variables={
            **variable_defaults(theme),
            **theme.to_color_system().generate(),
            **theme.variables,
        }
    )
    sheet.read(TCSS)
    sheet.parse()
    assert sheet.rules


def test_tcss_uses_theme_variables_only() -> None:
    values = re.findall(r":([^;{}]*);", TCSS.read_text())
    assert values
    assert [v for v in values if re.search(r"#[0-9a-fA-F]{3,8}\b|rgb|hsl", v)] == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name = ", "not valid TOML"),
        ('primary = "#336699"\nprimray = "#fff"', "unknown key(s) primray"),
        ('name = "x"', "'primary' is required"),
        ('primary = "#12345"', "'primary'"),
        ('primary = "#336699"\nwarning = 3', "'warning' must be a colour string"),
        ('primary = "#336699"\ndark = "yes"', "'dark' must be true or false"),
        ('primary = "#336699"\n[variables]\nkvm-wran = "#fff"', "unknown variable(s) kvm-wran"),
        ('primary = "#336699"\n[variables]\nkvm-warn = "sort of red"', "'kvm-warn'"),
        ('primary = "#336699"\nvariables = 1', "[variables] must be a table"),
        ('name = ""\nprimary = "#336699"', "'name' must be a non-empty string"),
    ],
)
def test_parse_theme_rejects(text: str, reason: str) -> None:
    with pytest.raises(ThemeError, match=re.escape(reason)):
        parse_theme(text, "file")


def test_name_defaults_to_the_file_stem() -> None:
    theme = parse_theme('primary = "#336699"\n[variables]\nkvm-ok = "green"', "ocean")
    assert theme.name == "ocean" and theme.dark and theme.variables == {"kvm-ok": "green"}


def test_every_broken_file_is_reported_and_good_ones_load(tmp_path: Path) -> None:
    (tmp_path / "a-broken.toml").write_text("primary = ")
    (tmp_path / "b-good.toml").write_text('primary = "#336699"')
    (tmp_path / "c-broken.toml").write_text('primary = "nope"')
    (tmp_path / "notes.txt").write_text("not a theme")
    themes, errors = load_theme_dir(tmp_path)
    assert [t.name for t in themes] == ["b-good"]
    assert len(errors) == 2
    assert errors[0].startswith(f"{tmp_path / 'a-broken.toml'}: not valid TOML")
    assert errors[1].startswith(f"{tmp_path / 'c-broken.toml'}: 'primary'")


def test_user_theme_replaces_a_shipped_one_of_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text('name = "kvmtop-dark"\nprimary = "#ff00ff"')
    themes, errors = load_themes(tmp_path)
    assert errors == []
    by_name = {t.name: t for t in themes}
    assert set(by_name) == set(SHIPPED)
    assert by_name["kvmtop-dark"].primary == "#ff00ff"


def test_missing_user_dir_is_fine(tmp_path: Path) -> None:
    themes, errors = load_themes(tmp_path / "absent")
    assert [t.name for t in themes] == list(SHIPPED) and errors == []


def test_defaults_cover_every_app_variable() -> None:
    assert set(variable_defaults(BUILTIN_THEMES["textual-light"])) == set(APP_VARIABLES)
