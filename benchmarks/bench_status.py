#!/usr/bin/env python3
"""Benchmark: whole-process time and Docker API calls of `appliance status --json`.

Brings up the demo stack (`appliance init --demo --yes`: 6 containers) under a unique
instance, data directory and free host ports, then:

1. times ``appliance status --json`` as a whole process (median, p90, min; CPU time of the
   child) -- the issue's goal is a median of at most 0.4 s on the CI machine;
2. counts the Docker API requests of one run twice: as the status report counts them
   (``collect.docker_api_calls``, a response hook in the Docker adapter) and independently,
   through a small counting proxy on a unix socket (``DOCKER_HOST=unix://...``) that forwards
   to the real engine and counts HTTP request lines;
3. adds 8 more services to the release (copies of the demo embedding engine, applied through
   the runtime's library like any release change) and repeats 1-2 with 14 containers;
4. stops 6 services and repeats 2: the inspects stay bounded (at most 4) however many fail.

Everything it creates carries the instance label and is removed at the end (also on Ctrl-C).
Nothing is asserted; the numbers are for people.

    python3 benchmarks/bench_status.py [--runs 15] [--extra 8] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# the same free-port and purge helpers as the Docker tests (a checkout-only script, so tests/ is here)
from tests.stack_support import free_port_block, purge_instance  # noqa: E402
ENGINE_SOCKET = "/var/run/docker.sock"


# ---- a counting Docker proxy -------------------------------------------------------------------
class CountingProxy:
    """Forwards a unix socket to the engine's and counts the HTTP requests sent through it."""

    _REQUEST = re.compile(rb"(?:^|\r\n)(?:GET|POST|PUT|DELETE|HEAD) /\S* HTTP/1\.[01]\r\n")

    def __init__(self, path: str, upstream: str = ENGINE_SOCKET):
        self.path, self.upstream = path, upstream
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.requests = []

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(self.upstream)
            threading.Thread(target=self._pump, args=(client, engine, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(engine, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    window = tail + data
                    for m in self._REQUEST.finditer(window):
                        if m.end() > len(tail):  # not already counted in the previous window
                            with self._lock:
                                self.requests.append(m.group(0).strip().decode("latin-1"))
                    tail = window[-64:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


# ---- helpers ------------------------------------------------------------------------------------
def run_cli(args: list[str], env: dict, timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, env=env,
                          timeout=timeout_s, cwd=str(REPO))


def child_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_status(env: dict, runs: int) -> dict:
    walls, cpus, last = [], [], None
    run_cli(["status", "--json"], env)  # warm-up (page cache, bytecode)
    for _ in range(runs):
        c0, t0 = child_cpu_s(), time.perf_counter()
        res = run_cli(["status", "--json"], env)
        walls.append(time.perf_counter() - t0)
        cpus.append(child_cpu_s() - c0)
        last = res
    report = json.loads(last.stdout)
    walls.sort()
    return {"median_s": statistics.median(walls), "p90_s": walls[int(0.9 * (len(walls) - 1))], "min_s": walls[0],
            "cpu_median_s": statistics.median(cpus), "exit": last.returncode, "status": report["status"],
            "containers": len(report["services"])}


def count_calls(env: dict, proxy: CountingProxy) -> dict:
    proxy.reset()
    res = run_cli(["status", "--json"], {**env, "DOCKER_HOST": f"unix://{proxy.path}"})
    time.sleep(0.2)  # let the pump threads finish counting
    report = json.loads(res.stdout)
    return {"reported": report["collect"]["docker_api_calls"], "inspects": report["collect"]["docker_inspects"],
            "proxied": len(proxy.requests), "requests": sorted({re.sub(r"/[0-9a-f]{64}/", "/<id>/", r.split("?")[0].replace(" HTTP/1.1", ""))
                                 for r in proxy.requests}),
            "status": report["status"], "exit": res.returncode,
            "not_ok": sum(1 for s in report["services"] if not s["ok"]), "containers": len(report["services"])}


def add_services(env: dict, extra: int) -> None:
    """Add ``extra`` copies of the demo embedding engine to the active release (a new release)."""
    code = f"""
from appliance.runtime import stack as S
rel = S.current_release()
st = rel.stack
base = next(s for s in st.services if s.kind == "inference" and s.name.startswith("embed"))
copies = [base.model_copy(update={{"name": f"bench-extra-{{i}}", "aliases": [f"bench-extra-{{i}}"],
                                  "served_models": []}}) for i in range({extra})]
new = st.model_copy(update={{"services": list(st.services) + copies, "hashes": {{}}}})
rid, res = S.apply_stack(new, rel.plan, source="bench_status: +{extra} services")
print(rid, len(res.created))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    if res.returncode != 0:
        raise SystemExit(f"adding services failed: {res.stderr[-2000:]}")


def docker_ids(inst: str, extra_filter: str = "") -> list[str]:
    args = ["docker", "ps", "-q", "--filter", f"label=appliance.instance={inst}"]
    if extra_filter:
        args += ["--filter", extra_filter]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()


def purge(inst: str, env: dict) -> None:
    """`appliance down --purge`, then anything left with our instance label (nothing else)."""
    run_cli(["down", "--purge", "--yes"], env)
    purge_instance(inst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--extra", type=int, default=8, help="services added for the second stack size")
    ap.add_argument("--keep", action="store_true", help="leave the stack running (for poking at it)")
    args = ap.parse_args()

    inst = f"bench{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-status-"))
    base = free_port_block(4)
    env = {**os.environ, "APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(tmp / "data"),
           "APPLIANCE_GATEWAY_PORT": str(base), "APPLIANCE_APP_PORT_BASE": str(base + 1)}
    env.pop("DOCKER_HOST", None)
    proxy = CountingProxy(str(tmp / "docker-proxy.sock"))
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; Python {sys.version.split()[0]}; "
          f"instance {inst}", flush=True)
    pass_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        pass_times.append(time.perf_counter() - t0)
    try:
        t = time.perf_counter()
        res = run_cli(["init", "--demo", "--yes", "--quiet"], env, timeout_s=1200)
        if res.returncode != 0:
            print(res.stdout[-2000:], res.stderr[-3000:])
            return 1
        print(f"demo stack up in {time.perf_counter() - t:.1f}s", flush=True)
        rows = []
        for label in ("demo stack", f"demo stack + {args.extra} services"):
            if label != "demo stack":
                add_services(env, args.extra)
            timing = time_status(env, args.runs)
            calls = count_calls(env, proxy)
            rows.append((label, timing, calls))
        stopped = docker_ids(inst, "label=appliance.kind=inference")[:6]
        subprocess.run(["docker", "stop", "-t", "2", *stopped], capture_output=True, check=True)
        broken = count_calls(env, proxy)

        print()
        print(f"baseline `python -c pass`: median {statistics.median(pass_times) * 1000:.0f} ms")
        print(f"{'stack':<28} {'containers':>10} {'median':>8} {'p90':>8} {'min':>8} {'cpu':>8} {'exit':>5} "
              f"{'API calls (report/proxy)':>25} {'inspects':>9}")
        for label, tm, cl in rows:
            print(f"{label:<28} {tm['containers']:>10} {tm['median_s'] * 1000:>6.0f}ms {tm['p90_s'] * 1000:>6.0f}ms "
                  f"{tm['min_s'] * 1000:>6.0f}ms {tm['cpu_median_s'] * 1000:>6.0f}ms {tm['exit']:>5} "
                  f"{cl['reported']:>12} / {cl['proxied']:<10} {cl['inspects']:>9}")
        print(f"{'... with ' + str(len(stopped)) + ' services stopped':<28} {broken['containers']:>10} "
              f"{'':>8} {'':>8} {'':>8} {'':>8} {broken['exit']:>5} {broken['reported']:>12} / "
              f"{broken['proxied']:<10} {broken['inspects']:>9}")
        print()
        print("requests seen by the proxy (healthy stack):", ", ".join(rows[0][2]["requests"]))
        print("requests seen by the proxy (stopped services):", ", ".join(broken["requests"]))
        print("goal: median <= 0.4 s on the CI machine; API calls independent of the number of containers")
    finally:
        proxy.close()
        if args.keep:
            print(f"kept: APPLIANCE_INSTANCE={inst} APPLIANCE_DATA_DIR={tmp / 'data'}")
        else:
            purge(inst, env)
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
