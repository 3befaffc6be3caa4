"""What several commands share: their errors, settings from the flags, writing an
output, and opening a recording over a time range.

Layer: commands (never imports textual; the TUI starts in `kvmtop.commands.top`).
Each error here becomes one exit status in `kvmtop.commands.main`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kvmtop.config import Settings, load_settings, out_of_range
from kvmtop.feed.pipeline import Pipeline
from kvmtop.feed.protocols import Feed
from kvmtop.feed.times import TIME_FORMATS, parse_time
from kvmtop.headless.batch import run_batch
from kvmtop.wiring import build_pipeline

if TYPE_CHECKING:
    from kvmtop.report.reading import Progress
    from kvmtop.sampler import Sampler
    from kvmtop.store.outfile import TextOutput
    from kvmtop.store.reader import StoreReader


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


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a finite number > 0")
    return value


def settings_of(args: argparse.Namespace) -> Settings:
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


def uri_error(sampler: Sampler, explicit: bool) -> str | None:
    """With an explicit -c URI, the connection must open: return the error if not."""
    if not explicit or sampler.guests is None:
        return None
    probe = sampler.guests.probe()
    return None if probe.available else probe.reason or "cannot connect"


def frameless_pipeline(settings: Settings) -> Pipeline:
    """The shared pipeline for work that shows no frame (record's index, the replay
    scan, report, export, reindex): the detectors keep their own history and these
    keep their own aggregates, so a window of two frames gives the same findings."""
    return build_pipeline(replace(settings, window_size=2))


def uplink_kinds(settings: Settings) -> tuple[str, ...]:
    """The host interface kinds the vSwitch detector counts as uplinks."""
    return settings.detectors.vswitch_saturation.uplink_kinds


# --------------------------------------------------------------------------- output


@contextlib.contextmanager
def writing(output: Path | None) -> Iterator[None]:
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
        raise OutputError(
            f"cannot write {where}: {exc.strerror or exc}", stdout=output is None
        ) from exc


def write_stdout(text: str) -> None:
    """Write `text`, a command's whole output made beforehand, to standard output and
    flush it: an output that fits the buffer would otherwise fail only at exit, as
    Python's "Exception ignored" and status 120 (raises OutputError)."""
    with writing(None):
        sys.stdout.write(text)
        sys.stdout.flush()


def print_batches(feed: Feed, args: argparse.Namespace, *, paced: bool = True) -> None:
    """`--batch`: snapshots of `feed` on standard output (`--count`, `--format`), one
    interval apart when `paced`, until the feed ends or Ctrl-C."""
    sleep: Callable[[float], None] = time.sleep if paced else (lambda _s: None)
    with contextlib.suppress(KeyboardInterrupt), writing(None):
        run_batch(feed, sys.stdout, count=args.count, fmt=args.format, sleep=sleep)


def refuse_input_as_output(recording: Path, output: Path | None) -> None:
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


# --------------------------------------------------------------------------- recordings


def recording_arguments(parser: argparse.ArgumentParser) -> None:
    """FILE, --from and --to: the arguments of a command that reads a recording."""
    parser.add_argument("file", type=Path, metavar="FILE", help="the recording")
    parser.add_argument("--from", dest="from_", metavar="T", help=f"start time: {TIME_FORMATS}")
    parser.add_argument("--to", metavar="T", help="end time (same forms)")


def open_recording(path: Path) -> StoreReader:
    """The recording at `path`, open for reading (raises StoreError)."""
    from kvmtop.store.reader import StoreReader

    return StoreReader(path)


def time_range(args: argparse.Namespace, reader: StoreReader) -> tuple[float | None, float | None]:
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
        raise UsageError(
            f"--from {args.from_} ({_local(from_s)}) is later than --to "
            f"{args.to} ({_local(to_s)}): no time between them"
        )
    return from_s, to_s


def _local(t: float) -> str:
    """Unix seconds as local ISO 8601 with the offset (how --from/--to read a time)."""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def report_notices(reader: StoreReader) -> None:
    """Say on standard error what could not be read of the recording."""
    for line in reader.notices:
        print(f"kvmtop: {reader.path}: {line}", file=sys.stderr)


def require_samples(reader: StoreReader, from_s: float | None, to_s: float | None) -> None:
    """Raise StoreError (exit status 2, one line) when the range holds damage and no
    sample that can be read; an intact range without samples is no error."""
    from kvmtop.store.meta import StoreError

    if next(reader.iter(from_s, to_s), None) is None and reader.notices:
        count = len(reader.notices)
        raise StoreError(
            f"{reader.path}: no sample can be read ({count} "
            f"problem{'s' if count > 1 else ''}; the first: "
            f"{reader.notices[0]})"
        )


@dataclass(frozen=True, slots=True)
class Job:
    """What `report` and `export` work on: the open recording, the range asked for,
    the shared pipeline and the output (committed by the work once complete)."""

    reader: StoreReader
    pipeline: Pipeline
    from_s: float | None
    to_s: float | None
    output: TextOutput

    def progress(self, command: str) -> Progress:
        """Progress over the range, shown on a terminal as `command` goes."""
        from kvmtop.report.reading import Progress, extent

        return Progress(command, *(extent(self.reader, self.from_s, self.to_s) or (None, None)))


def summarize(args: argparse.Namespace, settings: Settings, work: Callable[[Job], int]) -> int:
    """`report` and `export`: open FILE, read --from/--to, open -o, then `work`.

    -o is opened before the work starts (a bad one is said at once, not after minutes
    of a big recording) and put in place only when the command succeeds
    (`kvmtop.store.outfile.TextOutput`): a failure leaves an older OUT as it was."""
    from kvmtop.store.outfile import TextOutput

    with open_recording(args.file) as reader:
        from_s, to_s = time_range(args, reader)
        require_samples(reader, from_s, to_s)
        refuse_input_as_output(args.file, args.output)
        with writing(args.output), TextOutput(args.output) as output:
            status = work(Job(reader, frameless_pipeline(settings), from_s, to_s, output))
        report_notices(reader)
    return status
