"""Shell completion scripts, generated from the real parser and run in the real shells.

Each shell completes a command line as it would on TAB: bash by calling the function
the script registers (with the words as bash splits them), zsh in a real interactive
zsh on a pseudo-terminal (the script loaded from $fpath by compinit, or eval'd), and
fish by `complete -C`. Guest names come from a stand-in `virsh` on PATH; the lab's
test asks the real one.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmtop.commands.main import main
from kvmtop.commands.parser import build_parser
from kvmtop.commands.shells import script
from tests.lab.fixture import Lab

SHELLS = ("bash", "zsh", "fish")
SYSTEM_PATH = "/usr/bin:/bin"
GUESTS = ["db", "web-1", "web-2"]


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's sub-commands by name."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def long_options(parser: argparse.ArgumentParser) -> list[str]:
    """Every long option string of `parser`, sorted."""
    return sorted(f for a in parser._actions for f in a.option_strings if f.startswith("--"))


PARSER = build_parser()
COMMANDS = commands(PARSER)
NAMES = sorted(COMMANDS)


def _shell(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} not installed (apt-get install {name}): its script is untested")
    return exe


def _run(argv: list[str], cwd: Path, path: str) -> str:
    """Run a shell; its standard output (a script's error on standard error fails)."""
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": path, "HOME": str(cwd), "TERM": "dumb"},
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


def write_script(folder: Path, shell: str, parser: argparse.ArgumentParser) -> Path:
    """The script for `shell` from `parser`, in `folder` under the name that shell
    loads it by (zsh: `_kvmtop`, in a directory to put on $fpath)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / {"bash": "kvmtop", "zsh": "_kvmtop", "fish": "kvmtop.fish"}[shell]
    path.write_text(script(shell, parser))
    return path


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each shell's script from kvmtop's parser, outside the shells' working directory."""
    folder = tmp_path_factory.mktemp("completion")
    return {shell: write_script(folder / shell, shell, build_parser()) for shell in SHELLS}


def bash_complete(tmp_path: Path, source: Path, line: str, path: str) -> list[str]:
    """COMPREPLY of the function the script registers for kvmtop, called as bash
    calls it on TAB at the end of `line` (words split at spaces and, as bash's
    COMP_WORDBREAKS do, at ':')."""
    words = line.replace(":", " : ").split(" ")
    code = (
        f"source {shlex.quote(str(source))}\n"
        "spec=$(complete -p kvmtop) && spec=${spec% kvmtop} && function=${spec##* }\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={shlex.quote(line)}\n"
        "COMP_POINT=${#COMP_LINE}\n"
        '"$function" kvmtop "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = _run([_shell("bash"), "--norc", "--noprofile", "-c", code], tmp_path, path)
    return [x for x in out.splitlines() if x]


ZSH_TAB = r"""
zmodload zsh/zpty
zpty tab ${(q)0} -f -i
zpty -w tab "PS1= RPS1=; fpath=(${(q)1} \$fpath); autoload -U compinit && compinit -u -D"
[[ -n $3 ]] && zpty -w tab "eval \"\$(<${(q)3})\""
zpty -w tab 'bindkey "^I" complete-word'
zpty -w tab 'compadd() {
    if [[ ${@[1,(i)(-|--)]} != *-[OAD]\ * ]]; then
        local -a got; builtin compadd -O got "$@"; print -rl -- "<""hit>"${^got}
    fi
    builtin compadd "$@"
}'
zpty -w tab 'comppostfuncs=(tab-done); tab-done() { print -r -- "<""done>"; exit; }'
zpty -w tab 'print -r -- "<""ready>"'
local line
while zpty -r tab line; do [[ $line == *'<ready>'* ]] && break; done
zpty -w -n tab "$2"$'\t'
while zpty -r tab line; do
    [[ $line == *'<done>'* ]] && break
    line=${${line//$'\r'/}%$'\n'}
    [[ $line == *'<hit>'* ]] && print -r -- "${line#*<hit>}"
done
"""
"""Type `$2` and TAB into an interactive zsh (`$0`) whose compinit finds _kvmtop in `$1` (or
that eval'd the script `$3`), and print each candidate its completion offers:
compadd is wrapped to print what it adds; a function run after completion exits."""


def zsh_complete(tmp_path: Path, source: Path, line: str, path: str, how: str) -> list[str]:
    """The candidates of zsh's completion of `line` + TAB, the script loaded `how`
    ("fpath": by compinit from $fpath; "eval": eval'd after compinit)."""
    loaded = ("", str(source)) if how == "eval" else (str(source.parent), "")
    zsh = _shell("zsh")
    argv = [zsh, "-f", "-c", ZSH_TAB, zsh, loaded[0], line, loaded[1]]
    return [x for x in _run(argv, tmp_path, path).splitlines() if x]


def fish_complete(tmp_path: Path, source: Path, line: str, path: str) -> list[str]:
    """fish's own completion of `line` with the script loaded (`complete -C`), without
    descriptions and a directory's trailing '/'."""
    fish = _shell("fish")
    _run([fish, "--no-execute", str(source)], tmp_path, path)
    code = f"source {shlex.quote(str(source))}; complete -C {shlex.quote(line)}"
    out = _run([fish, "--no-config", "-c", code], tmp_path, path)
    return [x.split("\t")[0].removesuffix("/") for x in out.splitlines()]


def complete(
    shell: str, cwd: Path, line: str, source: Path, path: str = SYSTEM_PATH, how: str = "fpath"
) -> list[str]:
    """What `shell` offers on TAB at the end of `line` (a kvmtop command line) in `cwd`,
    with the script `source` loaded, sorted."""
    if shell == "bash":
        found = bash_complete(cwd, source, line, path)
    elif shell == "zsh":
        found = zsh_complete(cwd, source, line, path, how)
    else:
        found = fish_complete(cwd, source, line, path)
    return sorted(found)


Tab = Callable[..., list[str]]
"""`tab(shell, line, path=SYSTEM_PATH, how="fpath")`: `complete` with kvmtop's script,
in the test's own directory."""


@pytest.fixture
def tab(scripts: dict[str, Path], tmp_path: Path) -> Tab:
    """`complete` with kvmtop's script for the shell, in `tmp_path`."""

    def tab(shell: str, line: str, path: str = SYSTEM_PATH, how: str = "fpath") -> list[str]:
        return complete(shell, tmp_path, line, scripts[shell], path, how)

    return tab


@pytest.fixture
def files(tmp_path: Path) -> None:
    """A recording, another file and a directory in the shell's working directory."""
    (tmp_path / "host.kvmtop").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "old").mkdir()


@pytest.fixture(scope="module")
def virsh(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH whose `virsh -r list --name` lists GUESTS (and an empty line, as virsh
    does), for a host without libvirt."""
    folder = tmp_path_factory.mktemp("bin")
    fake = folder / "virsh"
    names = "\\n".join(GUESTS)
    fake.write_text(f'#!/bin/sh\n[ "$*" = "-r list --name" ] || exit 1\nprintf "{names}\\n\\n"\n')
    fake.chmod(0o755)
    return f"{folder}:{SYSTEM_PATH}"


@pytest.mark.parametrize("shell", SHELLS)
def test_commands(shell: str, tab: Tab) -> None:
    assert tab(shell, "kvmtop ") == NAMES
    assert tab(shell, "kvmtop re") == [n for n in NAMES if n.startswith("re")]
    # An option's value is not the command: "2" is -d's, "record" the command.
    assert tab(shell, "kvmtop -d 2 rec") == ["record"]


@pytest.mark.parametrize("shell", SHELLS)
def test_options_of_a_command(shell: str, tab: Tab) -> None:
    assert tab(shell, "kvmtop record --") == long_options(COMMANDS["record"])
    assert tab(shell, "kvmtop record --ma") == ["--max-age", "--max-size"]
    # kvmtop's own options before a command (--batch, --version), a command's after it.
    assert tab(shell, "kvmtop --") == long_options(PARSER)
    assert "--batch" not in tab(shell, "kvmtop record --")


@pytest.mark.parametrize("shell", SHELLS)
def test_choices(shell: str, tab: Tab) -> None:
    assert tab(shell, "kvmtop export --format ") == ["csv", "jsonl", "openmetrics"]
    # --format before a command is kvmtop's (text|json), after `report` the report's.
    assert tab(shell, "kvmtop report --format ") == ["html", "json", "md", "text"]
    assert tab(shell, "kvmtop --format j") == ["json"]
    assert tab(shell, "kvmtop completion ") == ["bash", "fish", "zsh"]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.usefixtures("files")
def test_recordings_and_files(shell: str, tab: Tab) -> None:
    assert tab(shell, "kvmtop replay ") == ["host.kvmtop", "old"]
    assert tab(shell, "kvmtop report h") == ["host.kvmtop"]
    # A URI's ':' (a word break in bash) does not end the command line's parsing.
    assert tab(shell, "kvmtop -c qemu:///system export ") == ["host.kvmtop", "old"]
    # -o and --config take any file.
    assert "notes.txt" in tab(shell, "kvmtop record -o ")
    assert tab(shell, "kvmtop --config n") == ["notes.txt"]


@pytest.mark.usefixtures("files")
def test_every_command_completes_recordings_for_its_file(tab: Tab) -> None:
    with_file = [n for n, p in COMMANDS.items() if any(a.dest == "file" for a in p._actions)]
    assert with_file == ["replay", "slice", "reindex", "report", "export"]
    for name in with_file:
        assert tab("bash", f"kvmtop {name} ") == ["host.kvmtop", "old"], name
        # A second FILE argument does not exist: nothing is offered.
        assert tab("bash", f"kvmtop {name} host.kvmtop ") == [], name


@pytest.mark.parametrize("shell", SHELLS)
def test_guest_names(shell: str, tab: Tab, virsh: str, tmp_path: Path) -> None:
    assert tab(shell, "kvmtop record --trace ", virsh) == GUESTS
    assert tab(shell, "kvmtop record --trace w", virsh) == ["web-1", "web-2"]
    # Without virsh: no name, and no error on the terminal (_run checks stderr).
    assert tab(shell, "kvmtop record --trace ", str(tmp_path)) == []


def test_zsh_eval_d_script_completes_too(tab: Tab, virsh: str) -> None:
    """`eval "$(kvmtop completion zsh)"` after compinit, the way without $fpath."""
    assert tab("zsh", "kvmtop re", how="eval") == [n for n in NAMES if n.startswith("re")]
    assert tab("zsh", "kvmtop record --trace ", virsh, how="eval") == GUESTS


def test_every_option_of_every_command_comes_from_the_parser(tab: Tab) -> None:
    for name, parser in COMMANDS.items():
        assert tab("bash", f"kvmtop {name} --") == long_options(parser), name


@pytest.mark.parametrize("shell", SHELLS)
def test_a_new_option_needs_no_completion_edit(shell: str, tmp_path: Path) -> None:
    parser = build_parser()
    commands(parser)["doctor"].add_argument("--brand-new", choices=["yes", "no"])
    source = write_script(tmp_path / "script", shell, parser)
    assert complete(shell, tmp_path, "kvmtop doctor --br", source) == ["--brand-new"]
    assert complete(shell, tmp_path, "kvmtop doctor --brand-new ", source) == ["no", "yes"]


def test_completion_command_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    for shell in SHELLS:
        assert main(["completion", shell]) == 0
        assert capsys.readouterr().out == script(shell, build_parser())
    with pytest.raises(SystemExit) as exc:
        main(["completion", "tcsh"])
    assert exc.value.code == 2


@pytest.mark.lab
def test_bash_guest_names_come_from_virsh(tab: Tab, lab: Lab) -> None:
    """With libvirt running guests (the lab's), `--trace` completes their names."""
    virsh = shutil.which("virsh")
    assert virsh is not None  # installed with the lab
    listed = subprocess.run(
        [virsh, "-r", "list", "--name"], capture_output=True, text=True, timeout=30
    )
    names = sorted(n for n in listed.stdout.splitlines() if n)
    assert listed.returncode == 0 and set(lab.guests) <= set(names), listed.stderr
    path = f"{Path(virsh).parent}:{SYSTEM_PATH}"
    assert tab("bash", "kvmtop record --trace ", path) == names
    assert tab("bash", f"kvmtop record --trace {names[0]}", path)[0] == names[0]
