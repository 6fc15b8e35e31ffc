#!/usr/bin/env python3
"""Benchmark: how long one console page's data takes, against the console's own floor.

Brings up the demo stack on the templated test engine (as bench_status.py does: a unique
instance, data directory and free ports), runs two passes of the node agent (so the charts have
history), starts ``appliance console`` as a process, signs in with a one-time link, then times,
alternately in one loop, for every page: ``GET /api/<page>`` (the page's data, one request) and
``GET /<page>?fragment=1`` (what the live refresh fetches), plus two baselines measured in the
same loop: ``GET /healthz`` of the same server (HTTP and aiohttp alone) and ``GET /auth/session``
of the gateway (the session check every request pays once per 5 s). Goal (issue "The admin
console"): a page's data within 100 ms on this machine. Prints median, p90 and max per request;
asserts nothing. Everything carrying the instance label is removed at the end.

    python3 benchmarks/bench_console.py [--runs 41] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.stack_support import TEMPLATED_MODELS, free_port_block, install_templated, purge_instance  # noqa: E402

PAGES = ("overview", "models", "keys", "training", "releases")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def cli(args: list[str], env: dict, timeout_s: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, env=env,
                          timeout=timeout_s, cwd=str(REPO))


def timed_get(url: str, cookie: str | None) -> float:
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"{url}: HTTP {resp.status}")
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=41)
    ap.add_argument("--keep", action="store_true", help="leave the stack running")
    args = ap.parse_args()
    inst = f"benchc{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    base = free_port_block(5)
    env = {**os.environ, "APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(tmp / "data"),
           "APPLIANCE_GATEWAY_PORT": str(base), "APPLIANCE_APP_PORT_BASE": str(base + 1)}
    env.pop("DOCKER_HOST", None)
    console_port = base + 4
    print(f"machine: {os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; instance {inst}",
          flush=True)
    proc = None
    try:
        install_templated(tmp / "data")
        res = cli(["init", "--demo", "--yes", "--quiet", "--models", TEMPLATED_MODELS], env)
        if res.returncode != 0:
            print(res.stdout[-2000:], res.stderr[-3000:])
            return 1
        for _ in range(2):
            cli(["agent", "--once"], env, 120)
        link = json.loads(cli(["users", "login-link", "admin", "--json"], env).stdout)["url"]
        opener = urllib.request.build_opener(_NoRedirect())
        try:
            opener.open(link, timeout=10)
        except urllib.error.HTTPError as exc:  # the 303 that sets the cookie
            cookie = exc.headers["Set-Cookie"].split(";", 1)[0]
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "console", "--port", str(console_port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO))
        console = f"http://127.0.0.1:{console_port}"
        for _ in range(100):
            try:
                timed_get(console + "/healthz", None)
                break
            except OSError:
                time.sleep(0.1)
        targets = {"console /healthz (floor)": (console + "/healthz", None),
                   "gateway /auth/session": (f"http://127.0.0.1:{base}/auth/session", cookie)}
        for page in PAGES:
            targets[f"/api/{page}"] = (f"{console}/api/{page}", cookie)
            path = "/" if page == "overview" else f"/{page}"
            targets[f"{path}?fragment=1"] = (f"{console}{path}?fragment=1", cookie)
        for url, c in targets.values():  # warm-up
            timed_get(url, c)
        times: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.runs):
            for name, (url, c) in targets.items():
                times[name].append(timed_get(url, c))
        print(f"{'request':28} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}   ({args.runs} runs each, interleaved)")
        for name, ts in times.items():
            ts.sort()
            print(f"{name:28} {statistics.median(ts) * 1000:10.1f} {ts[int(0.9 * (len(ts) - 1))] * 1000:8.1f} "
                  f"{ts[-1] * 1000:8.1f}")
        print(f"load at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        if not args.keep:
            purge_instance(inst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
