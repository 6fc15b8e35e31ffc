#!/usr/bin/env python3
"""How long a no-change ``appliance provision`` takes, and how much of it is Ansible start-up.

Provisions a temporary root once (to converge it), then times ``--runs`` no-change runs
three ways:

- whole process: ``appliance provision --root R --json`` as a user runs it;
- in-process: ``provision(root=R)`` (the report's ``seconds``), and its ``startup_s``, the
  time until ansible-playbook started the first task;
- Ansible start-up alone: an empty playbook (``hosts: all``, no tasks) through the same
  ansible-runner adapter and inventory, and ``ansible-playbook --version`` as a process.

Prints numbers only (median, min, max); asserts nothing. Nothing outside the temporary
directory is touched (``appliance_manage_system`` is off for a root other than /).

    python3 benchmarks/bench_provision.py [--runs 5] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"median {statistics.median(values):6.2f}s  min {min(values):6.2f}s  max {max(values):6.2f}s"


def timed_process(argv: list[str], env: dict) -> float:
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the temporary roots and run artifacts")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-provision-"))
    os.environ["APPLIANCE_DATA_DIR"] = str(tmp / "data")
    env = dict(os.environ)
    root = tmp / "root"

    from appliance.provision.runner import run_playbook
    from appliance.provision.site import local_inventory, provision

    t0 = time.monotonic()
    first = provision(root=root)
    converge_s = time.monotonic() - t0
    if first.status != "successful":
        raise SystemExit(first.failure_block())
    executed = sum(1 for t in first.tasks if t.status != "skipped")
    skipped = sum(1 for t in first.tasks if t.status == "skipped")

    inproc, startup, whole, changed = [], [], [], []
    for _ in range(args.runs):
        rep = provision(root=root)
        inproc.append(rep.seconds)
        startup.append(rep.startup_s or 0.0)
        changed.append(rep.changed)
        whole.append(timed_process([sys.executable, "-m", "appliance", "provision", "--root", str(root), "--json"],
                                   env))

    noop_book = tmp / "noop" / "noop.yml"
    noop_book.parent.mkdir()
    noop_book.write_text("- hosts: all\n  gather_facts: false\n  tasks: []\n")
    inv = local_inventory(tmp / "noop-inv", root=str(root), manage_system=False, chips=[])
    noop = [run_playbook(inventory_file=inv, extravars={}, playbook=noop_book).seconds for _ in range(args.runs)]
    version = [timed_process(["ansible-playbook", "--version"], env) for _ in range(args.runs)]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, load {load:.1f}; python {sys.version.split()[0]}")
    print(f"site.yml on one local host: {executed} tasks executed, {skipped} skipped (no accelerator)")
    print(f"first (converging) run:                 {converge_s:6.2f}s, changed={first.changed}")
    print(f"no-change run, whole process (CLI):      {stats(whole)}")
    print(f"no-change run, in process (report):      {stats(inproc)}   changed per run: {changed}")
    print(f"  of which until the first task starts:  {stats(startup)}")
    print(f"Ansible start-up, empty playbook (runner): {stats(noop)}")
    print(f"Ansible start-up, ansible-playbook --version: {stats(version)}")
    if noop and inproc:
        share = statistics.median(noop) / statistics.median(inproc)
        print(f"start-up share of a no-change run: {share:.0%} "
              f"(empty playbook median / no-change run median)")
    if args.keep:
        print(f"roots and run artifacts kept under {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
