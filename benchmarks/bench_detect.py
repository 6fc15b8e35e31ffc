#!/usr/bin/env python3
"""Benchmark: whole-process time of `appliance detect --json` against the peer,
GPUStack's `gpustack-runtime detect --format json`, on this machine.

Both tools run from their own clean virtual environments made from the same Python, so
neither pays for the other's site-packages:

- ``benchmarks/.venv-peer``: ``pip install gpustack-runtime==<version>`` from PyPI;
- ``benchmarks/.venv-appliance``: ``pip install .`` of this checkout (re-installed without
  dependencies on every run, so the numbers are for the code as it is now).

Runs alternate (appliance, peer, appliance, peer, ...) after a warm-up of each, so both see
the same page cache and machine load. Prints the median and spread of each, the baseline
``python -c pass`` of each venv, and the ratio appliance/peer. Nothing is asserted: the
numbers are for people (the issue's goal is a ratio of at most 0.3, and at most 300 ms on a
node with an NVIDIA GPU).

    python3 benchmarks/bench_detect.py [--runs 21] [--peer-version 0.2.6] [--appliance PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEER_VENV = HERE / ".venv-peer"
APP_VENV = HERE / ".venv-appliance"


def _bin(venv_dir: Path, name: str) -> Path:
    return venv_dir / "bin" / name


def _pip(venv_dir: Path, *args: str) -> None:
    cmd = [str(_bin(venv_dir, "python")), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=str(REPO))


def ensure_peer(version: str) -> Path:
    exe = _bin(PEER_VENV, "gpustack-runtime")
    if not exe.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(PEER_VENV)
        _pip(PEER_VENV, f"gpustack-runtime=={version}")
    return exe


def ensure_appliance() -> Path:
    exe = _bin(APP_VENV, "appliance")
    if not exe.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(APP_VENV)
        _pip(APP_VENV, ".")
    else:  # refresh the code only
        _pip(APP_VENV, "--no-deps", "--force-reinstall", ".")
    return exe


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.decode()[-400:]}")
    return elapsed


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    return (f"{name:<46} median {statistics.median(ms):7.1f} ms   min {ms[0]:7.1f}   max {ms[-1]:7.1f}   "
            f"(n={len(ms)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=21, help="timed runs of each command (default 21)")
    ap.add_argument("--peer-version", default="0.2.6", help="gpustack-runtime version from PyPI")
    ap.add_argument("--appliance", default=None,
                    help="an appliance executable to time instead of benchmarks/.venv-appliance")
    args = ap.parse_args()

    peer = ensure_peer(args.peer_version)
    app = Path(args.appliance) if args.appliance else ensure_appliance()
    commands = {
        "appliance detect --json": [str(app), "detect", "--json"],
        "gpustack-runtime detect --format json": [str(peer), "detect", "--format", "json"],
    }
    baselines = {
        "python -c pass (appliance venv)": [str(app.parent / "python"), "-c", "pass"],
        "python -c pass (peer venv)": [str(_bin(PEER_VENV, "python")), "-c", "pass"],
    }
    if subprocess.run(["sh", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0:
        baselines["nvidia-smi -q -x"] = ["nvidia-smi", "-q", "-x"]

    for argv in [*commands.values(), *baselines.values()]:  # warm-up: page cache, pyc files
        time_once(argv)
    samples: dict[str, list[float]] = {k: [] for k in [*commands, *baselines]}
    for _ in range(args.runs):
        for name, argv in [*commands.items(), *baselines.items()]:
            samples[name].append(time_once(argv))

    print()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPU(s), "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    for name in samples:
        print(summary(name, samples[name]))
    app_ms = statistics.median(samples["appliance detect --json"]) * 1000
    peer_ms = statistics.median(samples["gpustack-runtime detect --format json"]) * 1000
    print(f"ratio appliance/peer (medians): {app_ms / peer_ms:.2f}  (goal <= 0.30)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
