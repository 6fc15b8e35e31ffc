"""Support every test area can use: where the test data lives, and waiting for a condition.

Import it as ``from tests.support import ...`` (tests/conftest.py puts the checkout on
``sys.path``; scripts under tests/ that run on their own add it themselves). No pytest
here, so benchmarks and fixture generators can use it too.

Test data: everything the tests read is under ``tests/fixtures/`` (never the reference
``shared/`` folder beside the checkout; tests/test_fixtures.py checks that): node snapshots in
``NODES``, vendor tool outputs in ``TOOL_SAMPLES``, and ``H200``, the real one-GPU H200 capture
(a verbatim copy, see its PROVENANCE.md).

Waiting: tests never sleep a fixed time for something to happen; they poll the condition
with :func:`wait_until`, bounded in time and in number of polls, and fail with a message
that says what they were waiting for.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, TypeVar

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
NODES = FIXTURES / "nodes"
TOOL_SAMPLES = FIXTURES / "tool-samples"
H200 = NODES / "h200-1gpu"

T = TypeVar("T")


def poll(check: Callable[[], T], timeout_s: float, interval_s: float = 0.1,
         max_polls: int | None = None) -> tuple[T, float, int]:
    """Call ``check()`` until it returns a truthy value, ``timeout_s`` has passed or it was
    called ``max_polls`` times (default: enough for ``timeout_s`` at ``interval_s``, plus one).

    Returns ``(last value, seconds waited, number of calls)``; never raises for a timeout.
    """
    if max_polls is None:
        max_polls = math.ceil(timeout_s / interval_s) + 1 if interval_s > 0 else 1000
    start = time.monotonic()
    polls = 0
    while True:
        value = check()
        polls += 1
        waited = time.monotonic() - start
        if value or waited >= timeout_s or polls >= max_polls:
            return value, waited, polls
        time.sleep(min(interval_s, max(0.0, timeout_s - waited)))


def wait_until(check: Callable[[], T], *, what: str, timeout_s: float = 10.0, interval_s: float = 0.1,
               max_polls: int | None = None) -> T:
    """``check()``'s first truthy value; an AssertionError naming ``what`` when none came in time."""
    value, waited, polls = poll(check, timeout_s, interval_s, max_polls)
    if not value:
        raise AssertionError(f"timed out waiting for {what}: {polls} checks in {waited:.1f}s "
                             f"(limit {timeout_s:g}s), last result {value!r}")
    return value
