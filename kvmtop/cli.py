"""Command line: parse arguments, build the feed, run the TUI or a headless loop.

The only module that reads argv and the environment. Headless paths (`--batch`,
`record`, `replay --batch`, `slice`, `report`, `export`, `doctor`, `serve`) never
import textual: the app module is imported only when a TUI starts.

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

Every command's --help is its manual (sections from `kvmtop.manual`).

Exit status (decided in `main`, except where a command's own loop ends), by one rule
for every command (`kvmtop.manual` lists each command's):

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
import contextlib
import io
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kvmtop import __version__, manual
from kvmtop.config import ConfigError, Settings, load_settings, out_of_range
from kvmtop.feed.pipeline import Pipeline
from kvmtop.feed.protocols import Feed
from kvmtop.feed.times import TIME_FORMATS, parse_time
from kvmtop.wiring import build_live_feed, build_pipeline, build_sampler, tune_gc

if TYPE_CHECKING:
    from kvmtop.sampler import Sampler
    from kvmtop.store.reader import StoreReader

MIB = 1024 * 1024

EXIT_PIPE = 128 + signal.SIGPIPE
"""The status when standard output is closed early: what a shell reports for a
process ended by SIGPIPE (141 on Linux), so `set -o pipefail` sees it as for `cat`."""


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a finite number > 0")
    return value


# --------------------------------------------------------------------------- parser


def _common_options(p: argparse.ArgumentParser, default: object) -> None:
    """Options every command accepts, before or after the command name."""
    p.add_argument("-c", "--connect", metavar="URI", default=default,
                   help="libvirt URI (default qemu:///system)")
    # Its range is the config file's (kvmtop.config.LIMITS), checked in _settings.
    p.add_argument("-d", "--interval", type=float, metavar="S", default=default,
                   help="seconds between samples (default 2)")
    p.add_argument("--config", type=Path, metavar="FILE", default=default,
                   help="config file (TOML)")
    p.add_argument("--theme", default=default,
                   help="theme name (kvmtop-dark, kvmtop-light, kvmtop-high-contrast)")
    p.add_argument("--rtt", action="store_true", default=default,
                   help="probe each guest's network round-trip time (sends ICMP echo, or "
                   "TCP SYN to ports set in [rtt]; live, batch, record; see config [rtt])")


def _batch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-b", "--batch", action="store_true", help="print snapshots to stdout, no TUI")
    p.add_argument("-n", "--count", type=int, metavar="N", help="with --batch: stop after N lines")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="with --batch: output format (json: one object per line)")


def _range_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="from_", metavar="T", help=f"start time: {TIME_FORMATS}")
    p.add_argument("--to", metavar="T", help="end time (same forms)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `kvmtop` and its commands."""
    from kvmtop import completion, doctor, export, fleet, serve
    from kvmtop.report import command as report

    p = argparse.ArgumentParser(
        prog="kvmtop",
        description="Live monitor for KVM hosts: per-guest steal, VM exits, disk, network "
        "and memory next to the host baseline. Without a command: the live TUI (or, with "
        "--batch, text or JSON snapshots on standard output).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(p, None)
    _batch_options(p)
    p.add_argument("--version", action="version", version=f"kvmtop {__version__}")
    # Sub-command options default to SUPPRESS so they never reset a global one
    # given before the command name (argparse copies sub-parser defaults over).
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    commands = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str, description: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=text, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    rec = command(
        "record", "record raw samples to a file, headless",
        "Record raw samples (cumulative counters, never derived rates) to FILE until "
        "SIGTERM/SIGINT or --duration, one SQLite transaction per sample: a kill -9 loses "
        "at most the sample being written. SIGHUP reopens FILE (after log rotation). An "
        "existing recording is continued.",
    )
    rec.add_argument("-o", "--output", required=True, type=Path, metavar="FILE",
                     help="the recording (created with mode 0600)")
    rec.add_argument("--duration", type=_positive_float, metavar="S",
                     help="stop after S seconds (default: until stopped)")
    rec.add_argument("--max-size", type=_positive_float, metavar="MIB",
                     help="delete the oldest samples beyond MIB mebibytes")
    rec.add_argument("--max-age", type=_positive_float, metavar="H",
                     help="delete samples older than H hours")
    rec.add_argument("--no-index", action="store_true",
                     help="do not write the report's index as recording goes (about 60 %% of "
                     "the recorder's CPU at 50 guests); `kvmtop reindex FILE` builds it later")
    rec.add_argument("--trace", action="append", default=[], metavar="GUEST",
                     help="count GUEST's KVM exits by reason (perf tracepoints, about 120 "
                     "fds per vCPU) for the whole recording; name or UUID, repeatable")

    rep = command(
        "replay", "replay a recording in the TUI or as batch output",
        "Replay FILE through the same rates, detectors and views as live: in the TUI "
        "(pause, step, seek, jump to the next incident, change speed) or, with --batch, "
        "as text or JSON lines as fast as they are read.",
    )
    rep.add_argument("file", type=Path, metavar="FILE")
    _range_options(rep)
    rep.add_argument("--speed", type=_positive_float, default=1.0, metavar="X",
                     help="playback speed (default 1: as recorded)")
    rep.add_argument("--follow", action="store_true",
                     help="keep showing samples a recorder is still appending (TUI)")
    _batch_options(rep)

    cut = command(
        "slice", "copy a time range of a recording to a new file",
        "Copy the raw samples of FILE between --from and --to to OUT, a recording of its "
        "own (small enough for a ticket) that replays, reports and exports like FILE.",
    )
    cut.add_argument("file", type=Path, metavar="FILE")
    _range_options(cut)
    cut.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                     help="the new recording (must not exist)")

    idx = command(
        "reindex", "rebuild a recording's index (what makes reports fast)",
        "Replay FILE's raw samples through the rates and detectors (with the detector "
        "settings of --config) and rewrite its index: the per-minute rollups `kvmtop "
        "report` merges instead of replaying every sample. `kvmtop record` writes them as "
        "it goes; rebuild after an upgrade, after changing detector settings, or for a "
        "recording made from the TUI.",
    )
    idx.add_argument("file", type=Path, metavar="FILE", help="the recording")

    for name, module, text in (
        ("report", report, "summarize a recording: findings, offenders, host baseline"),
        ("export", export, "export a recording as CSV, JSON lines or OpenMetrics"),
    ):
        sub = command(name, text)
        sub.add_argument("file", type=Path, metavar="FILE", help="the recording")
        _range_options(sub)
        module.add_arguments(sub)
    for name, module, text in (("doctor", doctor, "check every data source and the host"),
                               ("serve", serve, "serve OpenMetrics for Prometheus"),
                               ("fleet", fleet, "every host's kvmtop, from Prometheus")):
        module.add_arguments(command(name, text))
    completion.add_arguments(command(
        "completion", "print a shell completion script (bash, zsh or fish)",
        "Print the completion script for SHELL: every command, option and choice of "
        "kvmtop, made from the same parser that reads the command line, plus recording "
        "files for FILE and the names of running libvirt guests for --trace (from "
        "`virsh -r list --name`, where virsh is installed).",
    ))
    # The man-page sections (manual.py) around what argparse writes (usage, options).
    for name, sub in (("", p), *commands.choices.items()):
        sub.description = manual.description(sub.description)
        sub.epilog = manual.epilog(name, sub.epilog)
    return p


# --------------------------------------------------------------------------- wiring


def _uri_error(sampler: Sampler, explicit: bool) -> str | None:
    """With an explicit -c URI, the connection must open: return the error if not."""
    if not explicit or sampler.guests is None:
        return None
    probe = sampler.guests.probe()
    return None if probe.available else probe.reason or "cannot connect"


def _settings(args: argparse.Namespace) -> Settings:
    """Config file, then the flags (raises ConfigError, or UsageError for a flag)."""
    settings, warning = load_settings(getattr(args, "config", None))
    if warning:
        print(f"kvmtop: warning: {warning}", file=sys.stderr)
    if getattr(args, "connect", None):
        settings = replace(settings, uri=args.connect)
    if getattr(args, "interval", None) is not None:
        problem = out_of_range("interval_s", args.interval)
        if problem:
            raise UsageError(f"--interval: {problem}")
        settings = replace(settings, interval_s=args.interval)
    if getattr(args, "theme", None):
        settings = replace(settings, theme=args.theme)
    if getattr(args, "rtt", None):
        settings = replace(settings, rtt=replace(settings.rtt, enabled=True))
    return settings


def _run_tui(feed: Feed, settings: Settings, title: str = "") -> int:
    """Run the TUI; returns its exit status (1 when it ended on an error, whose
    traceback Textual has printed)."""
    from kvmtop.app.main import KvmtopApp

    app = KvmtopApp(feed, theme_name=settings.theme, title_suffix=title)
    app.run()
    return 1 if app.return_code else 0


def _run_batch(feed: Feed, args: argparse.Namespace, *, paced: bool = True) -> None:
    import time

    from kvmtop.batch import run_batch

    sleep: Callable[[float], None] = time.sleep if paced else (lambda _s: None)
    with contextlib.suppress(KeyboardInterrupt), _writing(None):
        run_batch(feed, sys.stdout, count=args.count, fmt=args.format, sleep=sleep)


class UsageError(Exception):
    """A command line the parser accepted but the command cannot use (exit status 2)."""


class OutputError(Exception):
    """Writing the output failed (exit status 1); the message names it and says why.

    Args:
        message: the line to print.
        stdout: the output was standard output.
    """

    def __init__(self, message: str, *, stdout: bool) -> None:
        super().__init__(message)
        self.stdout = stdout


@contextlib.contextmanager
def _writing(output: Path | None) -> Iterator[None]:
    """Turn an OSError in the block into OutputError naming `output` (None: standard
    output). Reading a recording raises StoreError, never a bare OSError (kvmtop.store),
    so an OSError here is the output's: no such directory, a directory, disk full."""
    from kvmtop.store.meta import StoreError

    try:
        yield
    except (BrokenPipeError, StoreError):  # a reader gone: main; a recording: exit 2
        raise
    except OSError as exc:
        where = "standard output" if output is None else str(output)
        raise OutputError(f"cannot write {where}: {exc.strerror or exc}",
                          stdout=output is None) from exc


def _write_stdout(text: str) -> None:
    """Write `text`, a command's whole output made beforehand, to standard output and
    flush it: an output that fits the buffer would otherwise fail only at exit, as
    Python's "Exception ignored" and status 120 (raises OutputError)."""
    with _writing(None):
        sys.stdout.write(text)
        sys.stdout.flush()


def _refuse_input_as_output(recording: Path, output: Path | None) -> None:
    """Raise UsageError when the output (`output`, None: standard output) is the
    recording itself, before anything opens it for writing.

    `os.path.samestat` compares st_dev and st_ino, so another path, a symbolic or a
    hard link to the recording is refused too.
    """
    try:
        written = os.fstat(sys.stdout.fileno()) if output is None else output.stat()
        same = os.path.samestat(written, recording.stat())
    except (OSError, ValueError):  # OUT not there yet, stdout without a descriptor
        return
    if same:
        shown = "standard output" if output is None else f"-o {output}"
        raise UsageError(f"{shown} is the recording {recording} itself; nothing written")


# --------------------------------------------------------------------------- commands


def _live(args: argparse.Namespace, settings: Settings) -> int:
    feed = build_live_feed(settings)
    error = _uri_error(feed.sampler, explicit=bool(args.connect))
    if error:
        print(f"kvmtop: cannot open {settings.uri}: {error}", file=sys.stderr)
        feed.close()
        return 1
    try:
        if args.batch:
            _run_batch(feed, args)
            return 0
        return _run_tui(feed, settings)
    finally:
        feed.close()


def _record(args: argparse.Namespace, settings: Settings) -> int:
    from kvmtop.feed.protocols import SampleSink
    from kvmtop.record import Recorder
    from kvmtop.report.index import IndexedWriter
    from kvmtop.store.writer import Retention, StoreWriter

    retention = Retention(
        max_bytes=int(args.max_size * MIB) if args.max_size else None,
        max_age_s=args.max_age * 3600 if args.max_age else None,
    )
    sampler = build_sampler(settings)
    try:
        error = _uri_error(sampler, explicit=bool(getattr(args, "connect", None)))
        if error:
            print(f"kvmtop: cannot open {settings.uri}: {error}", file=sys.stderr)
            return 1
        sampler.trace(args.trace)
        def open_writer() -> SampleSink:
            writer = StoreWriter(args.output, retention=retention)
            if args.no_index:
                return writer
            # The report's index (kvmtop.report.index), through a pipeline of its own; a
            # window of two samples will do (as for report).
            return IndexedWriter(writer, _frameless_pipeline(settings),
                                 _uplink_kinds(settings))

        until = f"for {args.duration:g} s" if args.duration else "until SIGTERM"
        traced = f", exits by reason of {', '.join(args.trace)}" if args.trace else ""
        recorder = Recorder(sampler, open_writer, duration_s=args.duration, announce=(
            f"kvmtop record: recording to {args.output} every {settings.interval_s:g} s "
            f"{until}{traced}"))
        recorder.install_signal_handlers()
        status = recorder.run()
    finally:
        sampler.close()
    print(f"kvmtop record: {recorder.written} samples written to {args.output}",
          file=sys.stderr)
    return status


def _open_recording(path: Path) -> StoreReader:
    from kvmtop.store.reader import StoreReader

    return StoreReader(path)


def _range(args: argparse.Namespace, reader: StoreReader) -> tuple[float | None, float | None]:
    """--from/--to as Unix seconds (raises UsageError naming the option, or both
    when --from is later than --to)."""
    start, end = reader.first_time(), reader.last_time()
    out: list[float | None] = []
    for option, text in (("--from", args.from_), ("--to", args.to)):
        try:
            value = None if text is None else parse_time(text, start, end)
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from None
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{option}: {text!r} is not a time")
        out.append(value)
    from_s, to_s = out
    if from_s is not None and to_s is not None and from_s > to_s:
        raise UsageError(f"--from {args.from_} ({_local(from_s)}) is later than --to "
                         f"{args.to} ({_local(to_s)}): no time between them")
    return from_s, to_s


def _local(t: float) -> str:
    """Unix seconds as local ISO 8601 with the offset (how --from/--to read a time)."""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _report_notices(reader: StoreReader) -> None:
    for line in reader.notices:
        print(f"kvmtop: {reader.path}: {line}", file=sys.stderr)


def _require_samples(reader: StoreReader, from_s: float | None, to_s: float | None) -> None:
    """Raise StoreError (exit status 2, one line) when the range holds damage and no
    sample that can be read; an intact range without samples is no error."""
    from kvmtop.store.meta import StoreError

    if next(reader.iter(from_s, to_s), None) is None and reader.notices:
        count = len(reader.notices)
        raise StoreError(f"{reader.path}: no sample can be read ({count} "
                         f"problem{'s' if count > 1 else ''}; the first: "
                         f"{reader.notices[0]})")


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from kvmtop.feed.replay import ReplayFeed

    if args.follow and args.batch:
        print("kvmtop: replay --follow works in the TUI only", file=sys.stderr)
        return 2
    if args.batch:
        _refuse_input_as_output(args.file, None)
    reader = _open_recording(args.file)
    try:
        from_s, to_s = _range(args, reader)
        _require_samples(reader, from_s, to_s)
    except BaseException:
        reader.close()
        raise
    # The TUI scans the recording for finding spans (timeline markers) and incidents
    # (f / F).
    scanner = None if args.batch else _frameless_pipeline(settings)
    feed = ReplayFeed(reader, build_pipeline(settings), speed=args.speed, from_s=from_s,
                      to_s=to_s, follow=args.follow, scanner=scanner)
    try:
        status = 0
        if args.batch:
            _run_batch(feed, args, paced=False)
        else:
            status = _run_tui(feed, settings, title=f"replay of {args.file}")
        _report_notices(reader)
        return status
    finally:
        feed.close()


def _slice(args: argparse.Namespace, settings: Settings) -> int:
    from kvmtop.store.slice import slice_recording

    with _open_recording(args.file) as reader:
        from_s, to_s = _range(args, reader)
        _require_samples(reader, from_s, to_s)
        copied = slice_recording(reader, args.output, from_s=from_s, to_s=to_s)
        _report_notices(reader)
    print(f"kvmtop slice: {copied} samples written to {args.output}", file=sys.stderr)
    return 0


def _frameless_pipeline(settings: Settings) -> Pipeline:
    """The shared pipeline for work that shows no frame (record's index, the replay
    scan, report, export, reindex): the detectors keep their own history and these
    keep their own aggregates, so a window of two frames gives the same findings."""
    return build_pipeline(replace(settings, window_size=2))


def _uplink_kinds(settings: Settings) -> tuple[str, ...]:
    return settings.detectors.vswitch_saturation.uplink_kinds


def _reindex(args: argparse.Namespace, settings: Settings) -> int:
    from kvmtop.report.index import reindex
    from kvmtop.report.reading import Progress

    with _open_recording(args.file) as reader:  # refuses a file that is not a recording
        _require_samples(reader, None, None)
        progress = Progress("kvmtop reindex", reader.first_time(), reader.last_time())
    written = reindex(str(args.file), _frameless_pipeline(settings),
                      _uplink_kinds(settings), progress)
    print(f"kvmtop reindex: {written} minutes indexed in {args.file}", file=sys.stderr)
    return 0


def _summarize(args: argparse.Namespace, settings: Settings) -> int:
    """`report` and `export`: FILE, --from/--to and -o here, the rest in their module.

    -o is opened before the work starts (a bad one is said at once, not after minutes
    of a big recording) and put in place only when the command succeeds
    (`kvmtop.outfile.TextOutput`): a failure leaves an older OUT as it was."""
    from kvmtop import export
    from kvmtop.outfile import TextOutput
    from kvmtop.report import command as report

    with _open_recording(args.file) as reader:
        from_s, to_s = _range(args, reader)
        _require_samples(reader, from_s, to_s)
        _refuse_input_as_output(args.file, args.output)
        run = report.run if args.command == "report" else export.run
        with _writing(args.output), TextOutput(args.output) as output:
            status = run(args, settings, reader, _frameless_pipeline(settings), from_s, to_s,
                         output)
        _report_notices(reader)
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kvmtop` console script; returns the exit status.

    The one place that turns what ended a command into its exit status (the module
    docstring lists them).
    """
    from kvmtop.store.meta import StoreError, StoreWriteError

    args = build_parser().parse_args(argv)
    tune_gc()
    try:
        return _command(args)
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


def _command(args: argparse.Namespace) -> int:
    """Run the command `args` name; returns its exit status or raises for main."""
    settings = _settings(args)
    if args.command == "completion":
        from kvmtop.completion import script

        _write_stdout(script(args.shell, build_parser()))
        return 0
    if args.command == "doctor":
        from kvmtop import doctor

        text = io.StringIO()
        status = doctor.run(args, settings, text)
        _write_stdout(text.getvalue())
        return status
    if args.command == "fleet" and not args.batch:
        from kvmtop.fleet_app import run_tui

        if args.every <= 0:
            raise UsageError(f"--every must be more than 0, got {args.every:g}")
        return run_tui(args, settings)
    if args.command == "fleet":
        from kvmtop import fleet

        text = io.StringIO()
        status = fleet.run(args, settings, text)
        _write_stdout(text.getvalue())
        return status
    if args.command == "serve":
        from kvmtop import serve

        return serve.run(args, settings)
    command = {"record": _record, "replay": _replay, "slice": _slice, "report": _summarize,
               "export": _summarize, "reindex": _reindex}.get(args.command, _live)
    return command(args, settings)
