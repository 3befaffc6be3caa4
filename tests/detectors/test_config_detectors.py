"""The `[detectors.*]` tables of the config file: values, overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmtop.config import ConfigError, Settings, load_settings, parse_settings
from kvmtop.detectors.settings import DetectorSettings

GOOD = """\
interval_s = 2
[detectors]
disabled = ["overcommit"]
incident_gap_s = 300

[detectors.steal]
warn_mean_pct = 8
raise_after = 2

[detectors.vswitch_saturation.uplink_capacity_mbps]
labup0 = 10

[detectors.overrides."batch-*"]
disabled = ["exit_storm"]
[detectors.overrides."batch-*".disk_latency]
floor_ssd_ms = 10
[detectors.overrides."batch-7"]
disk_latency = { floor_ssd_ms = 20, k = 5 }
"""


def test_detector_tables_and_overrides() -> None:
    s = parse_settings(GOOD, Path("c.toml"))
    d = s.detectors
    assert d.steal.warn_mean_pct == 8.0 and d.steal.raise_after == 2
    assert d.steal.warn_max_pct == DetectorSettings().steal.warn_max_pct
    assert d.vswitch_saturation.uplink_capacity_mbps == {"labup0": 10.0}
    assert not d.enabled("overcommit") and d.enabled("steal")
    assert d.incident_gap_s == 300.0
    batch = d.for_guest("batch-3")
    assert batch.disabled == ("overcommit", "exit_storm")
    assert batch.disk_latency.floor_ssd_ms == 10.0
    # Later globs win for the same key; earlier values they do not set survive.
    seven = d.for_guest("batch-7")
    assert (seven.disk_latency.floor_ssd_ms, seven.disk_latency.k) == (20.0, 5.0)
    assert d.for_guest("web-1") is d


def test_defaults_have_detectors() -> None:
    assert Settings().detectors == DetectorSettings()
    assert parse_settings("", Path("c.toml")).detectors == DetectorSettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[detectors.steal]\nbogus = 1", "unknown key 'detectors.steal.bogus' (line 2)"),
        ("[detectors.nope]\n", "unknown key 'detectors.nope' (line 1)"),
        ("[detectors]\nx = 1", "unknown key 'detectors.x' (line 2)"),
        (
            '[detectors.steal]\n\nwarn_mean_pct = "x"',
            "'detectors.steal.warn_mean_pct' expected `float`, got `str` (line 3)",
        ),
        ("[detectors.steal]\nraise_after = 1.5", "raise_after' expected `int`, got `float`"),
        ("[detectors.steal]\nraise_after = 0", "raise_after' expected `int` >= 1, got 0 (line 2)"),
        ("[detectors.steal]\nwarn_max_pct = -1", "expected `float` >= 0.0, got -1"),
        ("[detectors.exit_storm]\nk = true", "expected `float`, got `bool`"),
        (
            '[detectors]\ndisabled = ["steal", "stael"]',
            "'detectors.disabled[1]' invalid enum value 'stael' (detector ids: memory_leak, "
            "qemu_memory_growth, vswitch_saturation, vnic_drops, steal, exit_storm, "
            "disk_latency, host_pressure, overcommit) (line 2)",
        ),
        ("[detectors]\ndisabled = 3", "'detectors.disabled' expected `array`, got `int`"),
        ("[detectors]\ndisabled = [3]", "'detectors.disabled[0]' expected `str`, got `int`"),
        (
            "[detectors]\nincident_gap_s = -1",
            "'detectors.incident_gap_s' expected `float` >= 0.0, got -1 (line 2)",
        ),
        ('[detectors]\nincident_gap_s = "3m"', "incident_gap_s' expected `float`, got `str`"),
        (
            '[detectors.overrides."a*"]\nincident_gap_s = 1',
            "unknown key 'detectors.overrides.\"a*\".incident_gap_s' (line 2)",
        ),
        ("[detectors.memory_leak]\nmin_points = 2", "min_points' expected `int` >= 3, got 2"),
        (
            "[detectors.memory_leak]\nmax_points = 12",
            "'detectors.memory_leak' max_points (12) must be >= 2 × min_points (10) (line 1)",
        ),
        (
            "[detectors.qemu_memory_growth]\nmin_points = 30\nmax_points = 59",
            "'detectors.qemu_memory_growth' max_points (59) must be >= 2 × min_points (30)",
        ),
        (
            '[detectors.overrides."db"]\nmemory_leak = { max_points = 12 }',
            "'detectors.overrides.db.memory_leak' max_points (12) must be >= 2 × min_points "
            "(10) (line 2)",
        ),
        ("detectors = 3", "'detectors' expected `table`, got `int`"),
        ("[detectors]\nsteal = 3", "'detectors.steal' expected `table`, got `int`"),
        ("[detectors]\noverrides = 3", "'detectors.overrides' expected `table`, got `int`"),
        (
            '[detectors.overrides]\n"a*" = 3',
            "'detectors.overrides.\"a*\"' expected `table`, got `int`",
        ),
        (
            '[detectors.overrides."a*"]\nstael = {}',
            "unknown key 'detectors.overrides.\"a*\".stael' (line 2)",
        ),
        (
            '[detectors.overrides."a*"]\nsteal = { warn_max_pct = "x" }',
            "'detectors.overrides.\"a*\".steal.warn_max_pct' expected `float`, got `str` (line 2)",
        ),
        (
            "[detectors.vswitch_saturation]\nuplink_capacity_mbps = 10",
            "uplink_capacity_mbps' expected `table`, got `int`",
        ),
        (
            '[detectors.vswitch_saturation.uplink_capacity_mbps]\neth0 = "10G"',
            "uplink_capacity_mbps.eth0' expected `float`, got `str` (line 2)",
        ),
        (
            "[detectors.vswitch_saturation]\nuplink_kinds = ['bond', 1]",
            "'detectors.vswitch_saturation.uplink_kinds[1]' expected `str`, got `int` (line 2)",
        ),
        # msgspec names no key of a table it reads as a dict (`$.detectors.overrides[...]`):
        # the key is the one whose entry alone gives the same error, at every level.
        (
            '[detectors.overrides."web-*"]\ndisabled = ["steal"]\n'
            '[detectors.overrides."db-1".vswitch_saturation.uplink_capacity_mbps]\n'
            'eth0 = 10\n"bond.0" = -1\n'
            '[detectors.overrides."db-*".vswitch_saturation.uplink_capacity_mbps]\n'
            '"bond.0" = -1\n',
            "'detectors.overrides.db-1.vswitch_saturation.uplink_capacity_mbps.\"bond.0\"' "
            "expected `float` >= 0.0, got -1 (line 5)",
        ),
        ("[detectors.steal]\nwarn_mean_pct = ", "not valid TOML"),
    ],
)
def test_broken_detector_tables_name_file_key_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"c\.toml") as exc:
        parse_settings(text, Path("c.toml"))
    assert message in str(exc.value)


def test_top_level_errors_carry_the_line() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'bogus' \(line 2\)"):
        parse_settings("interval_s = 1\nbogus = 1", Path("c.toml"))
    with pytest.raises(ConfigError, match=r"expected `float` >= 0.1, got 0 \(line 1\)"):
        parse_settings("interval_s = 0", Path("c.toml"))


def test_broken_default_file_keeps_default_detectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "kvmtop").mkdir()
    (tmp_path / "kvmtop" / "config.toml").write_text("[detectors.steal]\nwarn_mean_pct = 'x'\n")
    settings, warning = load_settings(None)
    assert settings.detectors == DetectorSettings()
    assert warning is not None and "detectors.steal.warn_mean_pct" in warning
    assert "line 2" in warning
