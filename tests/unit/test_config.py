"""Config file parsing: defaults, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from kvmtop.config import (
    ConfigError,
    Settings,
    load_settings,
    out_of_range,
    parse_settings,
)


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
        ("bogus = 1", "c.toml: unknown key 'bogus' (line 1)"),
        ('interval_s = "fast"', "c.toml: 'interval_s' expected `float`, got `str` (line 1)"),
        ("interval_s = -1", "'interval_s' expected `float` >= 0.1, got -1 (line 1)"),
        ("interval_s = inf", "'interval_s' expected `float` <= 3600.0, got inf"),
        ("interval_s = nan", "'interval_s' expected `float` >= 0.1, got nan"),
        ("interval_s = 86400", "'interval_s' expected `float` <= 3600.0, got 86400"),
        ("interval_s = 1970-01-01", "'interval_s' expected `float`, got `date`"),
        ("balloon_every = 0", "'balloon_every' expected `int` >= 1, got 0"),
        ("balloon_every = -2", "'balloon_every' expected `int` >= 1, got -2"),
        ("balloon_every = 2.5", "'balloon_every' expected `int`, got `float`"),
        ("window_size = 0", "'window_size' expected `int` >= 2, got 0"),
        ("window_size = 20001", "'window_size' expected `int` <= 20000, got 20001"),
        ("min_ops = -1", "'min_ops' expected `int` >= 0, got -1"),
        ("steal_warn_pct = inf", "'steal_warn_pct' expected `float` <= 100.0, got inf"),
        (
            "uri = 'x'\nwindow_size = 1",
            "'window_size' expected `int` >= 2, got 1 (line 2)",
        ),
        (
            "[detectors.steal]\nwarn_mean_pct = inf",
            "'detectors.steal.warn_mean_pct' expected `float` <= 1e+308, got inf (line 2)",
        ),
        ("[rtt]\nevery_s = nan", "'rtt.every_s' expected `float` >= 1.0, got nan (line 2)"),
        ("min_ops = true", "'min_ops' expected `int`, got `bool`"),
        ("uri = 3", "'uri' expected `str`, got `int`"),
        ("rtt = 3", "'rtt' expected `table`, got `int` (line 1)"),
        ("[rtt]\nenabled = 1", "'rtt.enabled' expected `bool`, got `int` (line 2)"),
        ("[rtt]\nevery_s = 0.5", "'rtt.every_s' expected `float` >= 1.0, got 0.5 (line 2)"),
        ("[rtt]\nport = 3", "unknown key 'rtt.port' (line 2)"),
        (
            '[rtt]\ntcp_ports = { "web" = "ssh" }',
            "'rtt.tcp_ports.web' expected `int`, got `str` (line 2)",
        ),
        (
            '[rtt]\ntcp_ports = { "db" = 5432, "web" = 0 }',
            "'rtt.tcp_ports.web' expected `int` >= 1, got 0 (line 2)",
        ),
        ("[rtt]\ntcp_ports = { web = 65536 }", "'rtt.tcp_ports.web' expected `int` <= 65535"),
        ('[rtt]\naddresses = { "web" = 10 }', "'rtt.addresses.web' expected `str`, got `int`"),
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


def test_the_defaults_are_within_the_limits() -> None:
    """msgspec checks the limits of a dataclass's fields as it converts one: the
    defaults, detector thresholds included, convert back to themselves."""
    defaults = Settings()
    assert msgspec.convert(msgspec.to_builtins(defaults), Settings) == defaults


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("interval_s", 2.0, None),
        ("interval_s", 0.0, "expected `float` >= 0.1, got 0.0"),
        ("interval_s", float("inf"), "expected `float` <= 3600.0, got inf"),
        ("interval_s", float("nan"), "expected `float` >= 0.1, got nan"),
    ],
)
def test_a_flag_has_the_limits_of_its_setting(key: str, value: float, problem: str | None) -> None:
    assert out_of_range(key, value) == problem


def test_a_default_file_that_is_not_utf8_warns_and_uses_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "kvmtop").mkdir()
    (tmp_path / "kvmtop" / "config.toml").write_bytes(b"# \xff\ninterval_s = 5\n")
    settings, warning = load_settings(None)
    assert settings == Settings()
    assert warning is not None
    assert "not UTF-8 text" in warning and "(invalid start byte at byte 2, line 1)" in warning
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(tmp_path / "kvmtop" / "config.toml")


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml")


def test_rtt_probing_is_off_by_default_and_configurable() -> None:
    assert not Settings().rtt.enabled
    s = parse_settings(
        '[rtt]\nenabled = true\nevery_s = 2\naddresses = { "web-1" = "192.0.2.10" }\n'
        'tcp_ports = { "web-1" = 22 }\n',
        Path("c.toml"),
    )
    assert s.rtt.enabled and s.rtt.every_s == 2.0
    assert s.rtt.addresses == {"web-1": "192.0.2.10"} and s.rtt.tcp_ports == {"web-1": 22}


def test_wiring_adds_the_rtt_probe_only_when_enabled() -> None:
    from dataclasses import replace

    from kvmtop.wiring import build_sampler

    def names(settings: Settings) -> list[str]:
        sampler = build_sampler(replace(settings, uri="test:///default"))
        try:
            return [e.name for e in sampler.enrichers]
        finally:
            sampler.close()

    assert "netprobe" not in names(Settings())
    on = parse_settings("[rtt]\nenabled = true\n", Path("c.toml"))
    assert names(on)[-1] == "netprobe"


def test_the_readme_example_config_parses() -> None:
    """The README's configuration example is a valid file (kept true by this test)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Configuration", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    s = parse_settings(block, Path("README.md"))
    assert s.detectors.vswitch_saturation.uplink_capacity_mbps == {"labup0": 4.0}
    assert not s.rtt.enabled
