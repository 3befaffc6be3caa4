"""`kvmtop replay` / `slice` on the command line: batch output, times, clear errors."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvmtop.commands.main import main
from kvmtop.feed.times import parse_time
from kvmtop.model.sample import Sample
from kvmtop.store.reader import StoreReader

START = 1_760_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+0", START),
        ("+90", START + 90),
        ("+10m", START + 600),
        ("+1.5h", START + 5400),
        ("+2d", START + 172_800),
        ("1760000123", 1_760_000_123.0),
        ("1760000123.5", 1_760_000_123.5),
        ("2025-10-09T08:53:20Z", datetime(2025, 10, 9, 8, 53, 20, tzinfo=UTC).timestamp()),
        ("2025-10-09T10:53:20+02:00", datetime(2025, 10, 9, 8, 53, 20, tzinfo=UTC).timestamp()),
        ("2025-10-09 08:53", datetime(2025, 10, 9, 8, 53).timestamp()),  # local time
    ],
)
def test_time_forms(text: str, expected: float) -> None:
    assert parse_time(text, START) == expected


@pytest.mark.parametrize("text", ["yesterday", "+10x", "-10m", "10m"])
def test_bad_times(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        parse_time(text, START)


def test_relative_time_needs_samples() -> None:
    with pytest.raises(ValueError, match="needs a recording"):
        parse_time("+1m", None)


def no_config(tmp_path: Path) -> list[str]:
    return ["--config", str(_empty_config(tmp_path))]


def _empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("")
    return path


def test_replay_batch_json_prints_every_frame_but_the_first(
    recording: Path, samples: list[Sample], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "replay",
            str(recording),
            "--batch",
            "--format",
            "json",
            "--from",
            "+20",
            "--to",
            "+58",
            *no_config(tmp_path),
        ]
    )
    assert status == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # 20 samples in range; the first only primes the rates.
    assert [x["time"] for x in lines] == [round(s.wall_s, 3) for s in samples[11:30]]
    assert {g["name"] for g in lines[0]["guests"]} == {"lab-guest00", "lab-guest01", "lab-guest02"}


def test_slice_then_replay_the_slice(
    recording: Path, samples: list[Sample], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cut.kvmtop"
    assert (
        main(
            [
                "slice",
                str(recording),
                "--from",
                str(samples[5].wall_s),
                "--to",
                "+30",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "11 samples written" in capsys.readouterr().err
    with StoreReader(out) as r:
        assert list(r.iter()) == samples[5:16]


def _newer(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.unlink(), "no such recording"),
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "damaged or truncated"),
        (lambda p: p.write_text("not sqlite"), "not a kvmtop recording"),
        (_newer, "upgrade kvmtop"),
    ],
    ids=["missing", "truncated", "foreign", "newer"],
)
@pytest.mark.parametrize("command", ["replay", "slice"])
def test_unusable_recordings_exit_2_with_a_clear_message(
    recording: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: object,
    message: str,
    command: str,
) -> None:
    damage(recording)  # type: ignore[operator]
    extra = ["--batch"] if command == "replay" else ["-o", str(tmp_path / "o.kvmtop")]
    assert main([command, str(recording), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and str(recording) in err


def test_bad_time_exits_2(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(recording), "--batch", "--to", "noon"]) == 2
    assert "--to: cannot read 'noon'" in capsys.readouterr().err


def test_record_to_an_unwritable_place_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output that cannot be written is status 1 (bad input is 2): one line, and no
    "recording to" line before it, since nothing is recorded."""
    target = tmp_path / "not-a-dir"
    target.write_text("")
    out = target / "x.kvmtop"
    assert main(["record", "-o", str(out), "--duration", "1", *no_config(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"kvmtop: cannot write recording {out}: Not a directory"
    ]


def test_record_to_a_file_that_is_not_a_recording_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FILE exists and is not a recording: unusable input, status 2, left as it was."""
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    assert main(["record", "-o", str(target), "--duration", "1", *no_config(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"kvmtop: {target}: exists and is not a kvmtop recording (file is not a database)"
    ]
    assert target.read_text() == "my notes\n"


@pytest.mark.parametrize("out", ["exists", "missing/cut.kvmtop", "link"])
def test_slice_to_an_output_that_cannot_be_written_exits_1(
    recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str
) -> None:
    """OUT exists (a slice never replaces a file), its directory is missing, or it is a
    symbolic link: status 1 as for report and export, one line, nothing written."""
    target = tmp_path / out
    if out == "exists":
        target.write_text("kept\n")
    elif out == "link":
        target.symlink_to(tmp_path / "elsewhere.kvmtop")
    assert main(["slice", str(recording), "-o", str(target), *no_config(tmp_path)]) == 1
    line = capsys.readouterr().err.splitlines()
    assert len(line) == 1 and line[0].startswith(f"kvmtop: cannot write recording {target}: ")
    if out == "exists":
        assert target.read_text() == "kept\n"
    assert not (tmp_path / "elsewhere.kvmtop").exists()
