"""`appliance init --demo`: time by phase, the tool's own overhead, and the idle agent's cost.

Runs against the real Docker engine with throw-away instances (unique names, data dirs and
host ports; purged at the end), as whole processes (``appliance init --demo --yes --json``):

1. **cold**: a copy of the shipped resources whose local images get names of their own, so
   every service image is built (the shared ``appliance/*`` tags other stacks use are never
   touched); the Python base image is timed separately (built under a throw-away tag);
2. **warm**: a new instance with every image present (a fresh install after images were
   built or loaded from a bundle);
3. **converged**: ``init`` again on the warm instance (must change nothing).

For each: wall time of the process, every phase (detect, preflight, plan, provision, images,
start, health), and the tool's own overhead = wall time - time spent waiting for containers
to become healthy. Then the node agent runs idle on the warm instance for ``--seconds``
(default 60) and its RSS and CPU are sampled with psutil (plus the Docker daemon's CPU over
the same minute: the price of the containers' health checks).

The stacks run the templated TEST engine (``--models demo-chat,demo-embed`` from the tests'
catalog overlay, tests/fixtures/catalog/templated.yaml, installed into each data dir): this
measures appliance's own overhead, so the engine must start in well under a second and cost
nothing; the real built-in models (llama.cpp, seconds to load) would measure llama.cpp instead.

Usage: python3 benchmarks/bench_init.py [--seconds 60] [--interval 15] [--skip-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# the same free-port and purge helpers as the Docker tests (a checkout-only script, so tests/ is here)
from tests.stack_support import (  # noqa: E402
    TEMPLATED_CATALOG,
    TEMPLATED_MODELS,
    free_port_block,
    install_templated,
    purge_instance,
)


def run_init(env: dict, *extra: str) -> tuple[float, dict]:
    """``init --demo`` of the templated test engine (its overlay must be in the data dir)."""
    gw = free_port_block(1)
    apps = free_port_block(3)
    t = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "appliance", "init", "--demo", "--yes", "--json", "--quiet",
                          "--models", TEMPLATED_MODELS,
                          "--gateway-port", str(env.get("BENCH_GW", gw)),
                          "--app-port-base", str(env.get("BENCH_APPS", apps)), *extra],
                         capture_output=True, text=True, env={**os.environ, **env}, cwd=str(REPO))
    wall = time.monotonic() - t
    if res.returncode != 0:
        raise SystemExit(f"init failed ({res.returncode}): {res.stderr[-2000:]}")
    return wall, json.loads(res.stdout)


def report(name: str, wall: float, result: dict) -> None:
    phases = {p["name"]: p for p in result["phases"]}
    waiting = sum(p["waiting_s"] for p in result["phases"])
    changed = [c for c in result["changes"] if c["action"] != "keep"]
    cells = "  ".join(f"{n} {phases[n]['seconds']:.2f}" for n in
                      ("detect", "preflight", "plan", "provision", "images", "start", "health") if n in phases)
    print(f"{name:<10} wall {wall:6.2f}s | {cells} | waiting for health {waiting:.2f}s | "
          f"tool overhead {wall - waiting:.2f}s | {len(changed)} change(s)")


def bench_pyrt() -> None:
    from appliance.runtime import pyrt
    from appliance.runtime.docker_adapter import Docker

    tag = f"appliance/pyrt-bench:{uuid.uuid4().hex[:8]}"
    with Docker() as d, tempfile.TemporaryFile() as fh:
        t = time.monotonic()
        summary = pyrt.write_context(fh)
        staged = time.monotonic() - t
        fh.seek(0)
        os.environ["APPLIANCE_BUILD_NOCACHE"] = "1"
        try:
            d.build_image(fh, tag, {"appliance.managed": "true"})
        finally:
            os.environ.pop("APPLIANCE_BUILD_NOCACHE")
        total = time.monotonic() - t
        size = d.client.api.inspect_image(tag)["Size"]
        d.remove_image(tag)
    print(f"pyrt base  {total:.2f}s to build ({staged:.2f}s writing the context: {summary['files']} files, "
          f"{summary['bytes'] / 1e6:.0f} MB), image {size / 1e6:.0f} MB")


def cold_resources(tmp: Path, tag: str) -> tuple[Path, Path]:
    """A resources copy and a templated overlay copy whose local images have names of their own."""
    root = tmp / "resources"
    shutil.copytree(REPO / "images", root / "images", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / "playbooks").mkdir()
    overlay = tmp / "templated-cold.yaml"
    shutil.copyfile(TEMPLATED_CATALOG, overlay)
    for yaml in [*(root / "images" / "catalog").glob("*.yaml"), overlay]:
        text = yaml.read_text()
        for name in ("demo-engine", "gateway", "app-customer-service", "app-knowledge-base", "app-code-assistant"):
            text = text.replace(f"appliance/{name}:0.1.0", f"appliance/bench-{tag}-{name}:0.1.0")
        yaml.write_text(text)
    return root, overlay


def idle_agent(env: dict, seconds: float, interval: float) -> None:
    import psutil

    def daemon_cpu() -> float:
        total = 0.0
        for p in psutil.process_iter(["name"]):
            if p.info["name"] in ("dockerd", "containerd") or (p.info["name"] or "").startswith("containerd-shim"):
                try:
                    c = p.cpu_times()
                    total += c.user + c.system
                except psutil.Error:
                    pass
        return total

    proc = subprocess.Popen([sys.executable, "-m", "appliance", "agent", "--interval", str(interval),
                             "--metrics-port", str(free_port_block(1))],
                            env={**os.environ, **env}, cwd=str(REPO), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        p = psutil.Process(proc.pid)
        time.sleep(5)  # startup (imports, first pass) is not "idle"
        c0, d0, t0 = p.cpu_times(), daemon_cpu(), time.monotonic()
        rss = []
        while time.monotonic() - t0 < seconds:
            rss.append(p.memory_info().rss)
            time.sleep(1)
        c1, d1, elapsed = p.cpu_times(), daemon_cpu(), time.monotonic() - t0
        with_health = subprocess.run(["docker", "ps", "-q", "--filter", "health=healthy"], capture_output=True,
                                     text=True).stdout.split()
        cpu_s = (c1.user + c1.system) - (c0.user + c0.system)
        print(f"agent idle {elapsed:.0f}s at --interval {interval:g}: RSS {max(rss) / 2**20:.1f} MiB max "
              f"({min(rss) / 2**20:.1f} min), CPU {cpu_s:.2f}s = {100 * cpu_s / elapsed:.2f}% of one core; "
              f"Docker daemons meanwhile {d1 - d0:.2f}s CPU ({100 * (d1 - d0) / elapsed:.2f}%, "
              f"mostly health checks of the {len(with_health)} healthy containers on this engine, "
              f"not all ours)")
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="idle agent sampling time")
    ap.add_argument("--interval", type=float, default=15.0, help="agent reconcile interval")
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold (image build) run")
    args = ap.parse_args()

    tag = uuid.uuid4().hex[:6]
    instances: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-init-"))
    cold_images: list[str] = []
    try:
        print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
        if not args.skip_cold:
            bench_pyrt()
            inst = f"bench{tag}c"
            instances.append(inst)
            res_root, overlay = cold_resources(tmp, tag)
            install_templated(tmp / "cold", overlay)
            wall, result = run_init({"APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(tmp / "cold"),
                                     "APPLIANCE_RESOURCES": str(res_root), "APPLIANCE_BUILD_NOCACHE": "1"})
            cold_images = sorted({s["image"] for s in result["stack"]["services"]})
            report("cold", wall, result)
            purge_instance(inst)
        inst = f"bench{tag}w"
        instances.append(inst)
        env = {"APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(tmp / "warm"),
               "BENCH_GW": str(free_port_block(1)), "BENCH_APPS": str(free_port_block(3))}
        install_templated(tmp / "warm")
        wall, result = run_init(env)
        report("warm", wall, result)
        wall, result = run_init(env)
        report("converged", wall, result)
        idle_agent(env, args.seconds, args.interval)
    finally:
        for inst in instances:
            purge_instance(inst)
        if cold_images:
            from appliance.runtime.docker_adapter import Docker

            with Docker() as d:
                for image in cold_images:
                    if "/bench-" in image:
                        d.remove_image(image)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
