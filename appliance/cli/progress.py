"""Byte progress for long copies (bundles, model imports): a bar on a terminal, lines in a log.

Implements :class:`appliance.progress.Progress` on stderr, so ``--json`` on stdout stays clean:

* a terminal gets rich bars (bytes, rate, time left);
* anything else (a log, CI, ``ssh host cmd``) gets one line per task every few seconds --
  ``import model: 412.0 of 988.3 MB, 210.5 MB/s, ETA 3s`` -- and one when it ends, so long work
  is visible there too; a task that ends before its first line is due prints nothing (a log
  is not filled with lines about sub-second work);
* ``quiet`` shows nothing.
"""

from __future__ import annotations

import sys
import threading
import time

import click

from appliance.cli.output import console


class _RichProgress:
    """Rich progress bars (thread-safe)."""

    def __init__(self):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._p = Progress(TextColumn("{task.description:<28}"), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), TimeRemainingColumn(), console=console(stderr=True),
                           transient=False)

    def __enter__(self):
        self._p.start()
        return self

    def __exit__(self, *exc):
        self._p.stop()

    def task(self, label: str, total_bytes: int):
        p = self._p
        tid = p.add_task(label[:28], total=max(total_bytes, 1))

        class _Task:
            def advance(self, n_bytes: int) -> None:
                p.advance(tid, n_bytes)

            def done(self) -> None:
                p.update(tid, completed=max(total_bytes, 1))

        return _Task()

    def note(self, message: str) -> None:
        self._p.console.print(message)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


class _LineTask:
    def __init__(self, label: str, total: int, every_s: float):
        self.label, self.total, self.every_s = label, max(total, 0), every_s
        self.done_bytes = 0
        self.printed = False
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()

    def _line(self, now: float, final: bool = False) -> str:
        rate = self.done_bytes / max(now - self.start, 1e-6)
        left = (self.total - self.done_bytes) / rate if rate > 0 and self.total > self.done_bytes else 0
        head = f"{self.label}: {_mb(self.done_bytes)}" + (f" of {_mb(self.total)}" if self.total else "")
        return head + f", {rate / 1e6:,.1f} MB/s" + ("" if final else f", ETA {left:,.0f}s")

    def advance(self, n_bytes: int) -> None:
        with self.lock:
            self.done_bytes += n_bytes
            now = time.monotonic()
            if now - self.last >= self.every_s:
                self.last = now
                self.printed = True
                click.echo(f"… {self._line(now)}", err=True)

    def done(self) -> None:
        with self.lock:
            if self.printed:
                click.echo(f"… {self._line(time.monotonic(), final=True)} (done)", err=True)


class _LineProgress:
    def __init__(self, every_s: float):
        self.every_s = every_s

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def task(self, label: str, total_bytes: int):
        return _LineTask(label, total_bytes, self.every_s)

    def note(self, message: str) -> None:
        click.echo(f"… {message}", err=True)


class _Quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def task(self, label: str, total_bytes: int):
        from appliance.progress import NullProgress

        return NullProgress().task(label, total_bytes)

    def note(self, message: str) -> None:
        pass


def byte_progress(enabled: bool = True, *, every_s: float = 5.0):
    """A context manager yielding a Progress: bars on a terminal, periodic lines otherwise,
    nothing when not ``enabled`` (``--quiet``/``--json``)."""
    if not enabled:
        return _Quiet()
    if sys.stderr.isatty():
        return _RichProgress()
    return _LineProgress(every_s)
