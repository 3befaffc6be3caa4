"""`kvmtop COMMAND --help` is each command's manual, and `--version` is the package's."""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from kvmtop import __version__
from kvmtop.commands.manual import MANUALS
from kvmtop.commands.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("DESCRIPTION", "PRIVILEGES", "FILES", "EXIT STATUS", "EXAMPLES")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **subs.choices}


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_a_manual() -> None:
    assert set(_commands()) <= set(MANUALS)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_help_is_a_manual_page(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = _help([command] if command else [], capsys)
    assert text.startswith(f"usage: kvmtop {command}".rstrip())
    positions = [text.index(f"\n{title}\n") for title in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    # The exit status section names each status the command uses, 0 first.
    status = text.split("\nEXIT STATUS\n")[1].split("\n\n")[0]
    assert re.findall(r"^  (\d)  ", status, re.M)[0] == "0"
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("command", sorted(_commands()))
def test_examples_are_valid_command_lines(command: str) -> None:
    """Every `kvmtop ...` example parses with the real parser (comments after 2 spaces)."""
    parser = build_parser()
    examples = [
        line.split("  ")[0]
        for line in MANUALS[command].examples.splitlines()
        if line.startswith("kvmtop ")
    ]
    assert examples, "no example"
    for line in examples:
        words = shlex.split(line)[1:]
        argv = words[: words.index(">")] if ">" in words else words
        if "--help" in argv:
            continue
        args = parser.parse_args(argv)
        assert (args.command or "") == command, line


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"kvmtop {__version__}\n"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
