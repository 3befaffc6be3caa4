"""Entry point of the `kvmtop` console script: parse the command line, run the
command, turn what ended it into the exit status.

The commands (`kvmtop.commands`) are the only modules that read argv and the
environment. Headless paths (`--batch`, `record`, `replay --batch`, `slice`,
`report`, `export`, `doctor`, `serve`) never import textual: the app module is
imported only when a TUI starts.

    kvmtop [-c URI] [-d S] [--batch [-n N] [--format text|json]]     live
    kvmtop record -o FILE [--interval S] [--duration S] [--max-size MIB] [--max-age H]
                  [--trace GUEST ...]
    kvmtop replay FILE [--from T] [--to T] [--speed X] [--follow] [--batch ...]
    kvmtop slice FILE [--from T] [--to T] -o OUT
    kvmtop report FILE [--from T] [--to T] [--format text|md|json|html] [-o OUT]
    kvmtop export FILE --format csv|jsonl|openmetrics [--from T] [--to T] [-o OUT]
    kvmtop doctor [--format text|json] [--measure S]
    kvmtop serve [--listen ADDR:PORT]
    kvmtop completion bash|zsh|fish

Every command's --help is its manual (sections from `kvmtop.commands.manual`).

Exit status (decided in `main`, except where a command's own loop ends), by one rule
for every command (`kvmtop.commands.manual` lists each command's):

- 2 for unusable input: options, the config file, a recording that is missing, not
  a recording (for `record`, an existing FILE that is not one), damaged beyond its
  header or with no sample in the range that can be read, or from a newer kvmtop;
  --from later than --to; an output (-o or standard output) that is the recording
  itself. UsageError, ConfigError, StoreError.
- 1 when monitoring cannot start, the TUI ends on an error, or an output cannot be
  written, at its start or midway: a recording, a slice, its index (`reindex`), a
  report or an export, standard output (no such directory, no permission,
  read-only, disk full; refused: a symbolic link, another user's file, a slice's
  OUT that exists). OutputError, StoreWriteError.
- 141 when standard output is closed before the end (`| head`), as for a process
  ended by SIGPIPE, with nothing on standard error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from kvmtop.commands import completion, top
from kvmtop.commands.common import OutputError, UsageError, settings_of
from kvmtop.commands.parser import COMMANDS, build_parser
from kvmtop.config import ConfigError, Settings
from kvmtop.wiring import tune_gc

EXIT_PIPE = 128 + signal.SIGPIPE
"""The status when standard output is closed early: what a shell reports for a
process ended by SIGPIPE (141 on Linux), so `set -o pipefail` sees it as for `cat`."""

RUN: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    name: module.run for name, module, _ in COMMANDS if module is not completion
}
"""Each command's run(args, settings) (`completion` takes the parser instead; no
command: `top`)."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kvmtop` console script; returns the exit status.

    The one place that turns what ended a command into its exit status (the module
    docstring lists them).
    """
    from kvmtop.store.meta import StoreError, StoreWriteError

    parser = build_parser()
    args = parser.parse_args(argv)
    tune_gc()
    try:
        settings = settings_of(args)
        if args.command == "completion":
            return completion.run(args, parser)
        return RUN.get(args.command, top.run)(args, settings)
    except BrokenPipeError:
        # Python ignores SIGPIPE, so a reader that went away (`| head`) is an EPIPE
        # write here; as the signal module's "Note on SIGPIPE" does, point stdout at
        # devnull so that the flush at exit does not fail again, and exit.
        _drop_stdout()
        return EXIT_PIPE
    except OutputError as exc:
        if exc.stdout:
            _drop_stdout()
        print(f"kvmtop: {exc}", file=sys.stderr)
        return 1
    except StoreWriteError as exc:  # a recording or slice cannot be created or written
        print(f"kvmtop: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, StoreError, UsageError) as exc:
        # StoreError: a recording missing, damaged, newer, or not a recording
        print(f"kvmtop: {exc}", file=sys.stderr)
        return 2


def _drop_stdout() -> None:
    """Send what is left in stdout's buffer, and anything after it, to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
