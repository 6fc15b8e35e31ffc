"""What the lifecycle commands write besides their result: progress lines and log streams.

Why one place: ``init``/``up``/``train submit``/``serve`` all report progress the same way
(stderr, so ``--json`` stays clean on stdout) and ``appliance logs`` / ``appliance train
logs`` take the same ``--tail`` value and copy the same byte stream (whole or followed) to
stdout. Kept out of :mod:`appliance.cli.output` because nothing here is rendering a result.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterable

import click


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """A ``progress`` callback for library calls: ``… message`` lines on stderr, or nothing."""
    if quiet:
        return lambda msg: None
    return lambda msg: click.echo(f"… {msg}", err=True)


def parse_tail(tail: str, example: str) -> int | str:
    """A ``--tail`` value as a line count or ``"all"``; anything else is a usage error (exit 2)."""
    from appliance.errors import UsageError

    if tail == "all":
        return "all"
    if not tail.isdigit():
        raise UsageError(f"--tail must be a number or 'all', got {tail!r}", where="--tail",
                         fix=f"e.g. --tail {example}")
    return int(tail)


def write_log_stream(out: bytes | bytearray | Iterable[bytes]) -> None:
    """Copy logs to stdout as bytes: a whole buffer, or chunks as they come until the stream
    ends or the user presses Ctrl-C (a followed stream ends only that way; not an error)."""
    stream = click.get_binary_stream("stdout")
    if isinstance(out, (bytes, bytearray)):
        stream.write(out)
        return
    try:
        for chunk in out:
            stream.write(chunk)
            stream.flush()
    except KeyboardInterrupt:
        pass


@contextmanager
def signals_deferred(signals=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)):
    """Hold ``signals`` until the block (and the output it wrote) is complete, then let them act.

    For a step whose effect and report must go together (``keys create``: the key stored and
    the key printed): a signal that arrives inside waits, stdout and stderr are flushed, and the
    signal is delivered as the block ends. SIGKILL cannot be held, by design of the kernel."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
