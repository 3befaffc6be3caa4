"""Config file parsing: defaults, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmtop.config import ConfigError, Settings, load_settings, parse_settings


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_settings(None) == (Settings(), None)


def test_values_override_and_int_for_float() -> None:
    s = parse_settings('interval_s = 5\nuri = "test:///default"\n', Path("c.toml"))
    assert s.interval_s == 5.0 and s.uri == "test:///default"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("interval_s = ", "not valid TOML"),
        ("bogus = 1", "unknown key(s) bogus"),
        ('interval_s = "fast"', "'interval_s' must be float, got str"),
        ("interval_s = -1", "must be > 0"),
        ("min_ops = true", "'min_ops' must be int, got bool"),
    ],
)
def test_broken_file_names_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"c\.toml") as exc:
        parse_settings(text, Path("c.toml"))
    assert message in str(exc.value)


def test_broken_default_file_warns_and_uses_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "kvmtop").mkdir()
    (tmp_path / "kvmtop" / "config.toml").write_text("bogus = 1")
    settings, warning = load_settings(None)
    assert settings == Settings()
    assert warning is not None and "using defaults" in warning


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml")
