"""`kvmtop completion bash|zsh|fish`: print a shell completion script (made by
`kvmtop.commands.shells` from the parser that reads the command line).

Layer: commands.
"""

from __future__ import annotations

import argparse

from kvmtop.commands.common import write_stdout
from kvmtop.commands.shells import SHELLS, script


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The argument of `kvmtop completion`."""
    parser.description = (
        "Print the completion script for SHELL: every command, option and choice of "
        "kvmtop, made from the same parser that reads the command line, plus recording "
        "files for FILE and the names of running libvirt guests for --trace (from "
        "`virsh -r list --name`, where virsh is installed)."
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to print the script for")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the script for `args.shell`, made from `parser` (kvmtop's own)."""
    write_stdout(script(args.shell, parser))
    return 0
