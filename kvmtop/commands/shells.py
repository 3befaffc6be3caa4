"""Shell completion scripts made from the parser, for `kvmtop completion bash|zsh|fish`.

Layer: commands (argparse only; never imports textual).

The scripts are generated from the argparse parser that `kvmtop` itself parses with,
so every command, option and choice the program accepts is completed and none that
it does not: a new option needs no edit here. What an option's value completes to
comes from the parser too (`value_kind`): its choices, files for a `Path` option,
recordings (`*.kvmtop`) for a command's FILE argument, and the names of running
libvirt guests for a GUEST value (asked of `virsh -r list --name`, only where virsh
is installed and only when that value is being completed).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
RECORDING_SUFFIX = ".kvmtop"

_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.+-]+$")
"""Option strings, command names, metavars and choices are written unquoted into
case patterns and word lists: the generator refuses anything else."""


@dataclass(frozen=True, slots=True)
class Arg:
    """One option or positional argument, as a completion script needs it.

    Attributes:
        flags: option strings ("-c", "--connect"); empty for a positional.
        help: the one-line help text ("" when argparse has none).
        kind: what its value completes to: "" (takes no value), "choice", "file",
            "recording", "guest" or "text" (a value with nothing to offer).
        choices: the accepted values, for kind "choice".
        metavar: the value's name in help ("URI", "FILE").
        repeat: may be given more than once (action "append").
    """

    flags: tuple[str, ...]
    help: str
    kind: str
    choices: tuple[str, ...] = ()
    metavar: str = ""
    repeat: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    """The top level (name "") or one sub-command, with its options and arguments."""

    name: str
    help: str
    options: tuple[Arg, ...]
    positionals: tuple[Arg, ...]

    def flags(self) -> list[str]:
        """Every option string of this command, in parser order."""
        return [flag for option in self.options for flag in option.flags]


def _safe(word: str) -> str:
    if not _SAFE_WORD.match(word):
        raise ValueError(f"cannot write {word!r} into a completion script")
    return word


def value_kind(action: argparse.Action) -> str:
    """What the value of `action` completes to ("" when it takes no value).

    A positional `Path` is a recording (every command's FILE argument is one); an
    option of type `Path` is any file; a GUEST value is a libvirt guest name.
    """
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        return "choice"
    if action.metavar == "GUEST":
        return "guest"
    if action.type is Path:
        return "recording" if not action.option_strings else "file"
    return "text"


def _one_line(text: str | None) -> str:
    """The help text on one line, as shells show it next to a candidate."""
    if not text or text == argparse.SUPPRESS:
        return ""
    return " ".join(text.split()).replace("%%", "%")


def _arg(action: argparse.Action) -> Arg:
    kind = value_kind(action)
    choices = tuple(_safe(str(c)) for c in action.choices or ()) if kind == "choice" else ()
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    return Arg(
        flags=tuple(_safe(f) for f in action.option_strings),
        help=_one_line(action.help),
        kind=kind,
        choices=choices,
        metavar=metavar,
        repeat=isinstance(action, argparse._AppendAction),
    )


def _command(name: str, help_text: str, parser: argparse.ArgumentParser) -> Command:
    options: list[Arg] = []
    positionals: list[Arg] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        (options if action.option_strings else positionals).append(_arg(action))
    return Command(_safe(name) if name else "", help_text, tuple(options), tuple(positionals))


def describe(parser: argparse.ArgumentParser) -> tuple[Command, list[Command]]:
    """The top level of `parser` and its sub-commands, in the parser's order."""
    top = _command("", _one_line(parser.description), parser)
    commands: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: _one_line(a.help) for a in action._choices_actions}
            commands.extend(
                _command(name, helps.get(name, ""), sub) for name, sub in action.choices.items()
            )
    return top, commands


# --------------------------------------------------------------------------- bash


def _bash_kinds(commands: list[Command]) -> list[str]:
    """`case` branches: "COMMAND OPTION" → the kind of the option's value."""
    lines = []
    for command in commands:
        for option in command.options:
            if not option.kind:
                continue
            patterns = "|".join(f"'{command.name} {flag}'" for flag in option.flags)
            kind = " ".join(("choice", *option.choices)) if option.choices else option.kind
            lines.append(f"        {patterns}) echo '{kind}' ;;")
    return lines


def _bash_positionals(commands: list[Command]) -> list[str]:
    lines = []
    for command in commands:
        for index, arg in enumerate(command.positionals):
            kind = " ".join(("choice", *arg.choices)) if arg.choices else arg.kind
            lines.append(f"        '{command.name} {index}') echo '{kind}' ;;")
    return lines


def bash_script(parser: argparse.ArgumentParser, prog: str = "kvmtop") -> str:
    """The bash completion script: `source` it, or install it in bash-completion's
    completions directory under the program's name."""
    top, subs = describe(parser)
    everything = [top, *subs]
    options = [f"        '{c.name}') echo '{' '.join(c.flags())}' ;;" for c in everything]
    f = f"_{prog}"
    return "\n".join(
        [
            f"# {prog}(1) completion for bash, generated by `{prog} completion bash` from",
            f"# {prog}'s own argument parser. Install: {prog} completion bash >",
            f"#   /usr/share/bash-completion/completions/{prog}",
            f"# or, in ~/.bashrc: source <({prog} completion bash)",
            "",
            f"{f}_commands='{' '.join(c.name for c in subs)}'",
            "",
            f"{f}_options() {{  # the options of command $1 ('' before a command)",
            '    case "$1" in',
            *options,
            "    esac",
            "}",
            "",
            f"{f}_kind() {{  # what the value of option $2 of command $1 is; nothing: no value",
            '    case "$1 $2" in',
            *_bash_kinds(everything),
            "    esac",
            "}",
            "",
            f"{f}_positional() {{  # what positional argument $2 (from 0) of command $1 is",
            '    case "$1 $2" in',
            *_bash_positionals(subs),
            "    esac",
            "}",
            "",
            f"{f}_values() {{  # COMPREPLY: the values of kind $1 that start with $2",
            '    case "$1" in',
            '        choice\\ *) mapfile -t COMPREPLY < <(compgen -W "${1#choice }" -- "$2") ;;',
            "        file) compopt -o filenames 2>/dev/null",
            '            mapfile -t COMPREPLY < <(compgen -f -- "$2") ;;',
            "        recording) compopt -o filenames 2>/dev/null",
            '            mapfile -t COMPREPLY < <(compgen -d -- "$2";'
            f" compgen -f -X '!*{RECORDING_SUFFIX}' -- \"$2\") ;;",
            "        guest) COMPREPLY=()",
            "            command -v virsh >/dev/null 2>&1 &&",
            '                mapfile -t COMPREPLY < <(compgen -W "$(virsh -r list --name'
            ' 2>/dev/null)" -- "$2") ;;',
            "        *) COMPREPLY=() ;;",
            "    esac",
            "}",
            "",
            f"{f}() {{",
            "    local cur=${COMP_WORDS[COMP_CWORD]} cmd='' kind='' npos=0 i w",
            "    local -a words=()",
            "    # Rejoin what bash split at '=' and ':' (COMP_WORDBREAKS): --format = j ->",
            "    # --format=j, qemu : ///system -> qemu:///system.",
            "    for ((i = 0; i <= COMP_CWORD; i++)); do",
            "        w=${COMP_WORDS[i]}",
            "        if ((${#words[@]} > 1)) && [[ $w == [=:] || ${words[-1]} == *[=:] ]]; then",
            "            words[-1]+=$w",
            "        else",
            '            words+=("$w")',
            "        fi",
            "    done",
            "    local current=${words[-1]}",
            "    for ((i = 1; i < ${#words[@]} - 1; i++)); do",
            "        w=${words[i]}",
            "        if [[ -n $kind ]]; then kind=''; continue; fi  # an option's value",
            '        case "$w" in',
            "            -*=*) ;;",
            f'            -*) kind=$({f}_kind "$cmd" "$w") ;;',
            f'            *) if [[ -z $cmd && " ${f}_commands " == *" $w "* ]]; then cmd=$w',
            "               else ((npos++)); fi ;;",
            "        esac",
            "    done",
            f'    if [[ -n $kind ]]; then {f}_values "$kind" "$cur"; return 0; fi',
            "    if [[ $current == -*=* ]]; then",
            f'        {f}_values "$({f}_kind "$cmd" "${{current%%=*}}")" "${{current#*=}}"',
            "        # Unless bash split the word at '=', each candidate carries the option.",
            '        [[ $cur == "$current" ]] && COMPREPLY=("${COMPREPLY[@]/#/${current%%=*}=}")',
            "        return 0",
            "    fi",
            "    if [[ $cur == -* ]]; then",
            f'        mapfile -t COMPREPLY < <(compgen -W "$({f}_options "$cmd")" -- "$cur")',
            "    elif [[ -z $cmd ]]; then",
            f'        mapfile -t COMPREPLY < <(compgen -W "${f}_commands" -- "$cur")',
            "    else",
            f'        {f}_values "$({f}_positional "$cmd" "$npos")" "$cur"',
            "    fi",
            "}",
            "",
            f"complete -F {f} {prog}",
            "",
        ]
    )


# --------------------------------------------------------------------------- zsh


def _zsh_quote(text: str) -> str:
    """`text` inside single quotes, with _arguments' specials ([]:) escaped."""
    for char in "\\[]:":
        text = text.replace(char, "\\" + char)
    return text.replace("'", "'\\''")


def _zsh_action(arg: Arg, prog: str) -> str:
    actions = {
        "choice": f"({' '.join(arg.choices)})",
        "file": "_files",
        "recording": f'_files -g "*{RECORDING_SUFFIX}"',
        "guest": f"_{prog}_guests",
    }
    return f":{_zsh_quote(arg.metavar)}:{actions.get(arg.kind, ' ')}"


def _zsh_specs(command: Command, prog: str) -> list[str]:
    specs = []
    for option in command.options:
        exclude = "" if option.repeat else f"({' '.join(option.flags)})"
        for flag in option.flags:
            mark = ("=" if flag.startswith("--") else "+") if option.kind else ""
            value = _zsh_action(option, prog) if option.kind else ""
            repeat = "*" if option.repeat else ""
            specs.append(f"'{exclude}{repeat}{flag}{mark}[{_zsh_quote(option.help)}]{value}'")
    specs.extend(f"'{_zsh_action(arg, prog)}'" for arg in command.positionals)
    return specs


def _zsh_arguments(command: Command, prog: str, tail: list[str], indent: str) -> list[str]:
    """One `_arguments` call, a spec per line."""
    lines = [f"{indent}_arguments -C -s \\"]
    lines += [f"{indent}    {spec} \\" for spec in [*_zsh_specs(command, prog), *tail]]
    lines[-1] = lines[-1].removesuffix(" \\") + " && ret=0"
    return lines


def zsh_script(parser: argparse.ArgumentParser, prog: str = "kvmtop") -> str:
    """The zsh completion script: put it on $fpath as `_kvmtop` (compinit loads it),
    or `source` it after compinit."""
    top, subs = describe(parser)
    f = f"_{prog}"
    described = [f"'{c.name}:{_zsh_quote(c.help)}'" for c in subs]
    branches: list[str] = []
    for command in subs:
        branches.append(f"                {command.name})")
        branches += _zsh_arguments(command, prog, [], " " * 20)
        branches.append("                    ;;")
    return "\n".join(
        [
            f"#compdef {prog}",
            f"# {prog}(1) completion for zsh, generated by `{prog} completion zsh` from",
            f"# {prog}'s own argument parser. Install: {prog} completion zsh > DIR/_{prog}",
            "# with DIR on $fpath (before compinit), or: source <(kvmtop completion zsh)",
            "",
            f"{f}_guests() {{  # running libvirt guests, where virsh is installed",
            "    (( $+commands[virsh] )) || return 1",
            "    local -a guests",
            '    guests=(${(f)"$(virsh -r list --name 2>/dev/null)"})',
            "    compadd -a guests",
            "}",
            "",
            f"{f}() {{",
            "    local curcontext=$curcontext state state_descr line ret=1",
            "    typeset -A opt_args",
            *_zsh_arguments(
                top, prog, ["'1:command:->command'", "'*::argument:->argument'"], " " * 4
            ),
            "    case $state in",
            "        command)",
            f"            local -a commands=({' '.join(described)})",
            f"            _describe -t commands '{prog} command' commands && ret=0",
            "            ;;",
            "        argument)",
            f"            curcontext=${{curcontext%:*:*}}:{prog}-$words[1]:",
            "            case $words[1] in",
            *branches,
            "            esac",
            "            ;;",
            "    esac",
            "    return ret",
            "}",
            "",
            "# Loaded from $fpath: complete now; sourced: register the function.",
            f'if [[ ${{funcstack[1]-}} == {f} ]]; then {f} "$@"; else compdef {f} {prog}; fi',
            "",
        ]
    )


# --------------------------------------------------------------------------- fish


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_value(arg: Arg, prog: str) -> str:
    """The `complete` options for an argument's value."""
    return {
        "choice": f"-x -a {_fish_quote(' '.join(arg.choices))}",
        "file": "-r -F",
        "recording": f"-r -a '(__{prog}_recordings)'",
        "guest": f"-x -a '(__{prog}_guests)'",
        "text": "-x",
    }.get(arg.kind, "")


def _fish_flags(flags: tuple[str, ...]) -> str:
    parts = []
    for flag in flags:
        if flag.startswith("--"):
            parts.append(f"-l {flag[2:]}")
        elif len(flag) == 2:
            parts.append(f"-s {flag[1]}")
        else:
            parts.append(f"-o {flag[1:]}")
    return " ".join(parts)


def _fish_lines(command: Command, condition: str, prog: str) -> list[str]:
    lines = []
    for option in command.options:
        words = [
            f"complete -c {prog} -n {condition}",
            _fish_flags(option.flags),
            _fish_value(option, prog),
            f"-d {_fish_quote(option.help)}",
        ]
        lines.append(" ".join(w for w in words if w))
    for arg in command.positionals:
        # A positional is not an option's parameter: keep the candidates, drop -x/-r.
        value = " ".join(w for w in _fish_value(arg, prog).split(" ") if w not in ("-x", "-r"))
        lines.append(f"complete -c {prog} -n {condition} {value}")
    return lines


def fish_script(parser: argparse.ArgumentParser, prog: str = "kvmtop") -> str:
    """The fish completion script: save it as ~/.config/fish/completions/kvmtop.fish,
    or `source` it."""
    top, subs = describe(parser)
    lines = [
        f"# {prog}(1) completion for fish, generated by `{prog} completion fish` from",
        f"# {prog}'s own argument parser. Install: {prog} completion fish >",
        f"#   ~/.config/fish/completions/{prog}.fish",
        "",
        f"function __{prog}_guests  # running libvirt guests, where virsh is installed",
        "    command -q virsh; and virsh -r list --name 2>/dev/null | string match -v ''",
        "end",
        "",
        f"function __{prog}_recordings  # directories and *{RECORDING_SUFFIX} files",
        "    set -l token (commandline -ct)",
        "    __fish_complete_directories $token ''",
        f"    for file in $token*{RECORDING_SUFFIX}",
        "        echo $file",
        "    end",
        "end",
        "",
        f"complete -c {prog} -e",
        f"complete -c {prog} -f",
    ]
    lines += [
        f"complete -c {prog} -n __fish_use_subcommand -a {c.name} -d {_fish_quote(c.help)}"
        for c in subs
    ]
    lines += _fish_lines(top, "__fish_use_subcommand", prog)
    for command in subs:
        lines += _fish_lines(command, f"'__fish_seen_subcommand_from {command.name}'", prog)
    return "\n".join([*lines, ""])


def script(shell: str, parser: argparse.ArgumentParser, prog: str = "kvmtop") -> str:
    """The completion script for `shell` (one of SHELLS)."""
    makers = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}
    return makers[shell](parser, prog)
