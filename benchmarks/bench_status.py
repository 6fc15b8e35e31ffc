#!/usr/bin/env python3
"""Benchmark: whole-process time and Docker API calls of `appliance status --json`, against `docker ps`.

Brings up the demo stack (`appliance init --demo --yes --models demo-chat,demo-embed`: 6
containers) under a unique instance, data directory and free host ports, then:

1. times ``appliance status --json`` as a whole process and ``docker ps`` (the Docker CLI, the
   yardstick of the goal) in the same loop, alternately, after one warm-up each: median, p90,
   min, the child's CPU time, and the ratio of the medians. The goal ("One deploy pipeline",
   status item): a median of at most 150 ms with 6 and with 14 containers on the shared 2-vCPU
   VM, at most 7x ``docker ps``. With ``--compare DIR`` (another checkout, e.g. ``git archive
   HEAD`` of the code before a change) that checkout's ``appliance status --json`` is timed in
   the same loop too, against the same stack, so before and after meet the same load;
2. counts the Docker API requests of one run twice: as the status report counts them
   (``collect.docker_api_calls``) and independently, through a small counting proxy on a unix
   socket (``DOCKER_HOST=unix://...``) that forwards to the real engine and counts HTTP
   request lines;
3. adds 8 more services to the release (copies of the demo embedding engine, applied through
   the runtime's library like any release change) and repeats 1-2 with 14 containers;
4. stops 6 services and repeats 2: the inspects stay bounded (at most 4) however many fail.

The engine is the templated TEST engine (the tests' catalog overlay,
tests/fixtures/catalog/templated.yaml, installed into the benchmark's data dir): what is measured is
status's own cost, so the engine containers should be cheap and quick to start; the real built-in
models (llama.cpp) would only add load to the machine being measured.

The load average is printed at the start and the end (the VM is shared: note it with the
figures). Everything it creates carries the instance label and is removed at the end (also on
Ctrl-C). Nothing is asserted; the numbers are for people.

Children run with their bytecode cached in the benchmark's temporary directory
(``PYTHONPYCACHEPREFIX``; ``PYTHONDONTWRITEBYTECODE`` dropped), as an installed appliance has
its ``.pyc`` files; ``--no-bytecode-cache`` keeps the environment as it is.

    python3 benchmarks/bench_status.py [--runs 21] [--extra 8] [--compare DIR] [--keep] [--no-bytecode-cache]
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
from tests.stack_support import TEMPLATED_MODELS, free_port_block, install_templated, purge_instance  # noqa: E402

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


def _stats(walls: list[float], cpus: list[float]) -> dict:
    walls = sorted(walls)
    return {"median_s": statistics.median(walls), "p90_s": walls[int(0.9 * (len(walls) - 1))], "min_s": walls[0],
            "cpu_median_s": statistics.median(cpus)}


def time_round(env: dict, runs: int, compare: Path | None) -> dict:
    """``appliance status --json`` (this checkout, and ``compare``'s) and ``docker ps``, alternately."""
    cmds = {"status": ([sys.executable, "-m", "appliance", "status", "--json"], REPO),
            "docker ps": (["docker", "ps"], REPO)}
    if compare is not None:
        cmds["status (compare)"] = ([sys.executable, "-m", "appliance", "status", "--json"], compare)
    samples: dict[str, tuple[list, list]] = {name: ([], []) for name in cmds}
    last: dict[str, subprocess.CompletedProcess] = {}
    for argv, cwd in cmds.values():  # warm-up (page cache, bytecode)
        subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(cwd), timeout=120)
    for _ in range(runs):
        for name, (argv, cwd) in cmds.items():
            c0, t0 = child_cpu_s(), time.perf_counter()
            last[name] = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(cwd), timeout=120)
            samples[name][0].append(time.perf_counter() - t0)
            samples[name][1].append(child_cpu_s() - c0)
    out = {}
    for name, (walls, cpus) in samples.items():
        out[name] = _stats(walls, cpus) | {"exit": last[name].returncode}
        if name.startswith("status"):
            report = json.loads(last[name].stdout)
            out[name] |= {"status": report["status"], "containers": len(report["services"])}
    return out


def count_calls(env: dict, proxy: CountingProxy, cwd: Path = REPO) -> dict:
    proxy.reset()
    res = subprocess.run([sys.executable, "-m", "appliance", "status", "--json"], capture_output=True, text=True,
                         env={**env, "DOCKER_HOST": f"unix://{proxy.path}"}, cwd=str(cwd), timeout=120)
    time.sleep(0.2)  # let the pump threads finish counting
    report = json.loads(res.stdout)
    return {"reported": report["collect"]["docker_api_calls"], "inspects": report["collect"]["docker_inspects"],
            "proxied": len(proxy.requests),
            "requests": sorted({re.sub(r"/[0-9a-f]{64}/", "/<id>/", r.split("?")[0].replace(" HTTP/1.1", ""))
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


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--extra", type=int, default=8, help="services added for the second stack size")
    ap.add_argument("--compare", type=Path, default=None,
                    help="another checkout whose `appliance status --json` is timed in the same loop (before/after)")
    ap.add_argument("--keep", action="store_true", help="leave the stack running (for poking at it)")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="keep this environment's PYTHONDONTWRITEBYTECODE (every run compiles the code again)")
    args = ap.parse_args()
    compare = args.compare.resolve() if args.compare else None
    if compare is not None and not (compare / "appliance" / "status").is_dir():
        raise SystemExit(f"--compare {compare}: not a checkout of this project")

    inst = f"bench{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-status-"))
    base = free_port_block(4)
    env = {**os.environ, "APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(tmp / "data"),
           "APPLIANCE_GATEWAY_PORT": str(base), "APPLIANCE_APP_PORT_BASE": str(base + 1)}
    env.pop("DOCKER_HOST", None)
    if not args.no_bytecode_cache:
        # an installed appliance has its .pyc files; a checkout run with PYTHONDONTWRITEBYTECODE=1
        # would compile every module on every run. Cache them outside the checkout.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    proxy = CountingProxy(str(tmp / "docker-proxy.sock"))
    loads = [os.getloadavg()]
    print(f"machine: {os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in loads[0])}; "
          f"Python {sys.version.split()[0]}; instance {inst}; bytecode "
          f"{'as the environment says' if args.no_bytecode_cache else 'cached (PYTHONPYCACHEPREFIX)'}", flush=True)
    pass_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        pass_times.append(time.perf_counter() - t0)
    try:
        t = time.perf_counter()
        install_templated(tmp / "data")  # the templated test engine (see the module docstring)
        res = run_cli(["init", "--demo", "--yes", "--quiet", "--models", TEMPLATED_MODELS], env, timeout_s=1200)
        if res.returncode != 0:
            print(res.stdout[-2000:], res.stderr[-3000:])
            return 1
        print(f"demo stack up in {time.perf_counter() - t:.1f}s", flush=True)
        rows = []
        for label in ("demo stack", f"demo stack + {args.extra} services"):
            if label != "demo stack":
                add_services(env, args.extra)
            t = time.perf_counter()
            timing = time_round(env, args.runs, compare)
            calls = {"status": count_calls(env, proxy)}
            if compare is not None:
                calls["status (compare)"] = count_calls(env, proxy, compare)
            rows.append((label, timing, calls))
            print(f"{label}: timed in {time.perf_counter() - t:.1f}s, load {os.getloadavg()[0]:.2f}", flush=True)
        stopped = docker_ids(inst, "label=appliance.kind=inference")[:6]
        subprocess.run(["docker", "stop", "-t", "2", *stopped], capture_output=True, check=True)
        broken = count_calls(env, proxy)
        loads.append(os.getloadavg())

        print()
        print(f"load average (1/5/15 min) at the start {' '.join(f'{x:.2f}' for x in loads[0])}, "
              f"at the end {' '.join(f'{x:.2f}' for x in loads[-1])}; {args.runs} runs each, alternating")
        print(f"baseline `python -c pass`: median {_ms(statistics.median(pass_times))}")
        print(f"{'stack':<26} {'what':<18} {'containers':>10} {'median':>8} {'p90':>8} {'min':>8} {'cpu':>8} "
              f"{'x docker ps':>11} {'exit':>5} {'API calls (report/proxy)':>25} {'inspects':>9}")
        for label, tm, cl in rows:
            ps = tm["docker ps"]
            for name, st in tm.items():
                ratio = f"{st['median_s'] / ps['median_s']:.1f}x" if name != "docker ps" else ""
                c = cl.get(name)
                calls = f"{c['reported']:>12} / {c['proxied']:<10}" if c else f"{'':>25}"
                print(f"{label:<26} {name:<18} {st.get('containers', ''):>10} {_ms(st['median_s']):>8} "
                      f"{_ms(st['p90_s']):>8} {_ms(st['min_s']):>8} {_ms(st['cpu_median_s']):>8} {ratio:>11} "
                      f"{st['exit']:>5} {calls} {c['inspects'] if c else '':>9}")
        print(f"{'... ' + str(len(stopped)) + ' services stopped':<26} {'status':<18} {broken['containers']:>10} "
              f"{'':>8} {'':>8} {'':>8} {'':>8} {'':>11} {broken['exit']:>5} {broken['reported']:>12} / "
              f"{broken['proxied']:<10} {broken['inspects']:>9}")
        print()
        print("requests seen by the proxy (healthy stack):", ", ".join(rows[0][2]["status"]["requests"]))
        if compare is not None:
            print("  ... by the compared checkout:", ", ".join(rows[0][2]["status (compare)"]["requests"]))
        print("requests seen by the proxy (stopped services):", ", ".join(broken["requests"]))
        print("goal: median <= 150 ms with 6 and with 14 containers (<= 7x `docker ps`); "
              "API calls independent of the number of containers")
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
