"""Shell completion scripts, generated from the real parser and run in the real shells."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmtop.commands.main import main
from kvmtop.commands.parser import build_parser
from kvmtop.commands.shells import describe, script
from tests.lab.fixture import Lab

PARSER = build_parser()
TOP, COMMANDS = describe(PARSER)
NAMES = {c.name for c in COMMANDS}
BASH = shutil.which("bash") or "/bin/bash"


def _write(tmp_path: Path, shell: str) -> Path:
    path = tmp_path / f"kvmtop.{shell}"
    path.write_text(script(shell, PARSER))
    return path


def bash_complete(tmp_path: Path, *words: str, path: str = "/usr/bin:/bin") -> list[str]:
    """Source the bash script, call its function as bash would for `words` (the last
    is the word under the cursor), and return COMPREPLY."""
    source = _write(tmp_path, "bash")
    code = (
        f"source {shlex.quote(str(source))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in ('kvmtop', *words))})\n"
        f"COMP_CWORD={len(words)}\n"
        "_kvmtop\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": path, "HOME": str(tmp_path)},
        timeout=30,
        check=True,
    )
    return sorted(line for line in result.stdout.splitlines() if line)


def test_every_command_and_option_of_the_parser_is_described() -> None:
    subparsers = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
    assert (
        NAMES
        == set(subparsers.choices)
        >= {"record", "replay", "slice", "report", "export", "serve", "doctor", "completion"}
    )
    record = next(c for c in COMMANDS if c.name == "record")
    assert {"-o", "--output", "--max-size", "--max-age", "--trace", "--connect"} <= set(
        record.flags()
    )
    assert "--version" in TOP.flags()


def test_bash_completes_commands(tmp_path: Path) -> None:
    assert set(bash_complete(tmp_path, "")) == NAMES
    assert bash_complete(tmp_path, "re") == sorted(n for n in NAMES if n.startswith("re"))


def test_bash_completes_the_options_of_a_command(tmp_path: Path) -> None:
    record = next(c for c in COMMANDS if c.name == "record")
    assert bash_complete(tmp_path, "record", "-") == sorted(record.flags())
    assert bash_complete(tmp_path, "record", "--max") == ["--max-age", "--max-size"]
    # Options before a command are the top level's, --batch among them.
    assert "--batch" in bash_complete(tmp_path, "--")
    assert "--batch" not in bash_complete(tmp_path, "record", "--")


def test_bash_completes_choices_in_every_spelling(tmp_path: Path) -> None:
    assert bash_complete(tmp_path, "report", "--format", "") == ["html", "json", "md", "text"]
    assert bash_complete(tmp_path, "export", "--format", "j") == ["jsonl"]
    assert bash_complete(tmp_path, "--format", "j") == ["json"]
    # bash splits "--format=j" at '=' (COMP_WORDBREAKS): the candidates follow the '='.
    assert bash_complete(tmp_path, "doctor", "--format", "=", "j") == ["json"]
    assert bash_complete(tmp_path, "doctor", "--format", "=") == ["json", "text"]
    # Where '=' is no word break, the candidate is the whole word.
    assert bash_complete(tmp_path, "doctor", "--format=t") == ["--format=text"]
    assert bash_complete(tmp_path, "completion", "") == ["bash", "fish", "zsh"]


def test_bash_skips_option_values_when_finding_the_command(tmp_path: Path) -> None:
    # "-c qemu:///system" is split at ':' by bash; the URI is still one value.
    words = ("-c", "qemu", ":", "///system", "replay", "")
    (tmp_path / "a.kvmtop").write_bytes(b"")
    assert bash_complete(tmp_path, *words) == ["a.kvmtop"]
    assert bash_complete(tmp_path, "-d", "2", "rec") == ["record"]


def test_bash_completes_recordings_and_files(tmp_path: Path) -> None:
    (tmp_path / "host.kvmtop").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "old").mkdir()
    for command in ("replay", "slice", "report", "export"):
        assert bash_complete(tmp_path, command, "") == ["host.kvmtop", "old"]
    # A second FILE argument does not exist: nothing is offered.
    assert bash_complete(tmp_path, "replay", "host.kvmtop", "") == []
    # -o takes any file; --trace wants a guest, never a file.
    assert "notes.txt" in bash_complete(tmp_path, "record", "-o", "")
    assert "notes.txt" in bash_complete(tmp_path, "--config", "n")


def test_bash_without_virsh_completes_no_guest_name(tmp_path: Path) -> None:
    assert bash_complete(tmp_path, "record", "--trace", "", path=str(tmp_path)) == []


@pytest.mark.lab
def test_bash_guest_names_come_from_virsh(tmp_path: Path, lab: Lab) -> None:
    """With libvirt running guests (the lab's), `--trace` completes their names."""
    virsh = shutil.which("virsh")
    assert virsh is not None  # installed with the lab
    listed = subprocess.run(
        [virsh, "-r", "list", "--name"], capture_output=True, text=True, timeout=30
    )
    names = sorted(n for n in listed.stdout.splitlines() if n)
    assert listed.returncode == 0 and set(lab.guests) <= set(names), listed.stderr
    path = f"{Path(virsh).parent}:/usr/bin:/bin"
    assert bash_complete(tmp_path, "record", "--trace", "", path=path) == names
    assert bash_complete(tmp_path, "record", "--trace", names[0], path=path)[0] == names[0]


def _shell(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} not installed (apt-get install {name}): its script is untested")
    return exe


def test_zsh_script_parses_and_registers(tmp_path: Path) -> None:
    zsh = _shell("zsh")
    source = _write(tmp_path, "zsh")
    subprocess.run([zsh, "-n", str(source)], check=True, timeout=30)
    code = (
        f"autoload -U compinit && compinit -u -D && source {shlex.quote(str(source))} && "
        "print -r -- ${_comps[kvmtop]} && whence -w _kvmtop_guests"
    )
    result = subprocess.run(
        [zsh, "-f", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["_kvmtop", "_kvmtop_guests: function"]


def fish_complete(tmp_path: Path, line: str) -> list[str]:
    """fish's own completion of `line` with the script loaded (`complete -C`)."""
    fish = _shell("fish")
    source = _write(tmp_path, "fish")
    subprocess.run([fish, "--no-execute", str(source)], check=True, timeout=30)
    code = f"source {shlex.quote(str(source))}; complete -C {shlex.quote(line)}"
    result = subprocess.run(
        [fish, "--no-config", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    return sorted(x.split("\t")[0] for x in result.stdout.splitlines())


def test_fish_completes_commands_options_choices_and_recordings(tmp_path: Path) -> None:
    assert fish_complete(tmp_path, "kvmtop re") == sorted(n for n in NAMES if n.startswith("re"))
    assert {"--output", "--max-size", "--trace"} <= set(fish_complete(tmp_path, "kvmtop record --"))
    assert fish_complete(tmp_path, "kvmtop export --format ") == ["csv", "jsonl", "openmetrics"]
    (tmp_path / "host.kvmtop").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert "host.kvmtop" in fish_complete(tmp_path, "kvmtop replay ")
    assert "notes.txt" not in fish_complete(tmp_path, "kvmtop replay ")


def test_completion_command_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == script("bash", PARSER)
    with pytest.raises(SystemExit) as exc:
        main(["completion", "tcsh"])
    assert exc.value.code == 2


def test_scripts_name_exactly_the_long_options_of_the_parser() -> None:
    """Every long option is in every script, and no script names one the parser lacks."""
    accepted = {flag for c in (TOP, *COMMANDS) for flag in c.flags() if flag.startswith("--")}
    for shell in ("bash", "zsh", "fish"):
        text = script(shell, PARSER)
        if shell == "fish":  # fish writes "-l output" for --output, in `complete` lines
            lines = [x for x in text.splitlines() if x.startswith("complete ")]
            text = "\n".join(lines).replace(" -l ", " --")
        # Not kvmtop's options: those of virsh.
        text = text.replace("virsh -r list --name", "")
        words = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))
        assert words == accepted, shell
