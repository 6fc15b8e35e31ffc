#!/usr/bin/env python3
"""Benchmark: whole-process time of `appliance plan` on a node snapshot.

Runs ``appliance plan --snapshot DIR --json`` (the default set, and optionally with
``--models``) as separate processes, alternating with a bare ``python -c pass`` and
``appliance --help`` so all three see the same machine load, and prints the median, min and
max of each plus the planner's share (plan minus ``--help``). It also checks that every run
printed the same bytes (plans are deterministic). Nothing is asserted: the numbers are for
people.

    python3 benchmarks/bench_plan.py [--runs 15] [--snapshot DIR] [--models a,b]
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SNAPSHOT = REPO.parent / "shared" / "fixtures" / "nodes" / "h200-1gpu"


def timed(argv: list[str]) -> tuple[float, bytes, int]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, cwd=REPO)
    return time.perf_counter() - start, proc.stdout, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--snapshot", default=str(DEFAULT_SNAPSHOT))
    ap.add_argument("--models", default=None, help="also time a plan for these models")
    args = ap.parse_args()

    py = sys.executable
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "appliance --help": [py, "-m", "appliance", "--help"],
        "appliance plan (default set)": [py, "-m", "appliance", "plan", "--snapshot", args.snapshot, "--json"],
    }
    if args.models:
        cases[f"appliance plan --models {args.models}"] = [py, "-m", "appliance", "plan", "--snapshot", args.snapshot,
                                                           "--models", args.models, "--json"]
    for argv in cases.values():  # warm-up (page cache, .pyc files)
        timed(argv)
    times: dict[str, list[float]] = {name: [] for name in cases}
    digests: dict[str, set[str]] = {name: set() for name in cases}
    codes: dict[str, set[int]] = {name: set() for name in cases}
    for _ in range(args.runs):
        for name, argv in cases.items():
            seconds, out, rc = timed(argv)
            times[name].append(seconds)
            digests[name].add(hashlib.sha256(out).hexdigest())
            codes[name].add(rc)

    print(f"# bench_plan: {args.runs} alternating runs, {platform.node()} ({platform.machine()}, "
          f"Python {platform.python_version()}), snapshot {args.snapshot}")
    print(f"{'command':45} {'median ms':>10} {'min ms':>8} {'max ms':>8}  exit  identical output")
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"{name:45} {statistics.median(ms):10.1f} {min(ms):8.1f} {max(ms):8.1f}  "
              f"{','.join(map(str, sorted(codes[name]))):4}  {'yes' if len(digests[name]) == 1 else 'NO'}")
    base = statistics.median(times["appliance --help"])
    plan = statistics.median(times["appliance plan (default set)"])
    print(f"planner share (plan - --help, medians): {(plan - base) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
