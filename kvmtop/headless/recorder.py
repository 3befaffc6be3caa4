"""The recorder loop of `kvmtop record` (systemd-friendly).

Layer: headless (the sampler and a sample sink; never imports textual).

The recorder runs the sampler only and writes each raw sample: rates, detectors and
snapshots are computed when the recording is replayed, from the same samples, so
computing them here too would cost CPU on every tick for frames nobody reads
(bench/bench_store.py measures both). Signals:

- SIGTERM, SIGINT: finish the sample being taken, write it, close the file, exit 0;
- SIGHUP: close the file and open a new one at the same path before the next
  sample (after logrotate has moved the old one away, as with syslog daemons).

A write error (disk full, read-only filesystem) ends the recorder with status 1
and one message, which counts the samples in the file; they stay readable.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TextIO

from kvmtop.feed.protocols import SampleSink
from kvmtop.model.sample import Sample
from kvmtop.sampler import SampleSource, next_tick


def _close(writer: SampleSink) -> OSError | None:
    """Close `writer`; the error instead of raising it."""
    try:
        writer.close()
    except OSError as exc:
        return exc
    return None


class Recorder:
    """Samples every interval and appends each sample to a store writer.

    Args:
        sampler: the sampler (its `interval_s` paces the loop).
        open_writer: opens the recording (again after SIGHUP).
        duration_s: stop after this many seconds (None: until stopped).
        announce: a line written to `log` once the recording is open (not before:
            a file that cannot be opened is the only line then).
        log: where progress and errors are written (None: the sys.stderr of the
            moment).
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        sampler: SampleSource,
        open_writer: Callable[[], SampleSink],
        *,
        duration_s: float | None = None,
        announce: str | None = None,
        log: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sampler = sampler
        self.open_writer = open_writer
        self.duration_s = duration_s
        self.announce = announce
        self.log = sys.stderr if log is None else log
        self.clock = clock
        self.written = 0
        """Samples written so far (over every reopened file)."""
        self._stop = False
        self._reopen = False
        self._wake = threading.Event()

    def request_stop(self) -> None:
        """Stop after the current sample (safe to call from a signal handler)."""
        self._stop = True
        self._wake.set()

    def request_reopen(self) -> None:
        """Reopen the file before the next sample (safe from a signal handler)."""
        self._reopen = True
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reopens (call from the main thread)."""

        def stop(_signum: int, _frame: FrameType | None) -> None:
            self.request_stop()

        def reopen(_signum: int, _frame: FrameType | None) -> None:
            self.request_reopen()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reopen)

    def run(self) -> int:
        """Record until stopped or the duration is over; returns the exit status.

        Raises:
            OSError: the first `open_writer()` fails (nothing was recorded yet).
        """
        writer = self.open_writer()
        if self.announce:
            print(self.announce, file=self.log, flush=True)
        due = self.clock()
        ticks = 0
        try:
            while not self._stop:
                sample = self.sampler.sample()
                writer = self._reopen_if_asked(writer)
                self._append(writer, sample)
                ticks += 1
                # Ticks on a fixed grid (no drift from the time collecting takes; ticks
                # missed while one overran are skipped, not recorded in a burst); the
                # duration counts whole intervals, so 10 s at 2 s is 6 samples, 0 to 10.
                if self.duration_s is not None and ticks * self.sampler.interval_s > (
                    self.duration_s
                ):
                    break
                due = next_tick(due, self.clock(), self.sampler.interval_s)
                writer = self._sleep_until(due, writer)
        except OSError as exc:
            failed: OSError | None = exc
        else:
            failed = None
        finally:
            # Closing writes what is left (the index's last minute): on a full disk it
            # fails too, and only the first error is reported.
            closing = _close(writer)
        failed = failed or closing
        if failed is None:
            return 0
        print(
            f"kvmtop record: {failed.strerror or failed}; stopped after {self.written} "
            "samples, which stay readable",
            file=self.log,
            flush=True,
        )
        return 1

    def _append(self, writer: SampleSink, sample: Sample) -> None:
        """Write one sample and count it once it is in the file (also when what
        failed came after its commit)."""
        try:
            writer.append(sample)
        except OSError as exc:
            # A StoreWriteError says whether the sample got in before the failure.
            self.written += bool(getattr(exc, "committed", False))
            raise
        self.written += 1

    def _reopen_if_asked(self, writer: SampleSink) -> SampleSink:
        """The writer to use: a new one on the same path after SIGHUP."""
        if not self._reopen:
            return writer
        self._reopen = False
        writer.close()
        writer = self.open_writer()
        print(f"kvmtop record: reopened {writer.path}", file=self.log, flush=True)
        return writer

    def _sleep_until(self, tick: float, writer: SampleSink) -> SampleSink:
        """Wait for `tick` (monotonic) and return the writer to use next: a reopen
        request is served at once, a stop request ends the wait."""
        while not self._stop:
            remaining = tick - self.clock()
            if remaining <= 0:
                break
            if self._wake.wait(remaining):
                self._wake.clear()
                writer = self._reopen_if_asked(writer)
        return writer
