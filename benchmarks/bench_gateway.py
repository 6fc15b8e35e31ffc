"""Gateway overhead: requests/s and added p50/p99 latency versus calling the engine directly.

Default (``--docker``): brings up a throw-away demo stack on the real Docker engine (unique
instance, data dir and ports; purged afterwards), creates a key, and measures the same
chat request (non-streaming, keep-alive) sent
  * straight to the demo-engine container (its IP on the stack network),
  * to the gateway container's IP (the same hop, plus the gateway: the fair comparison),
  * to the gateway's published host port (what clients use; adds Docker's port forwarding).
``--local`` runs the same with the gateway and demo engine as plain local processes.

The engine is the templated TEST engine (``init --demo --models demo-chat,demo-embed`` with the
tests' catalog overlay, tests/fixtures/catalog/templated.yaml, in the throw-away data dir): it
answers in microseconds, so what is measured is the gateway's own cost, not a model's.

Latency: sequential requests from one keep-alive connection (p50/p99 of N). Throughput:
C client threads, each with its own keep-alive connection, for T seconds. The clients run
on the same (small) machine as the servers, so absolute numbers are a floor; the
difference between the rows is the gateway's cost. Goal: <= 2 ms added at p50.

Usage: python3 benchmarks/bench_gateway.py [--local] [--requests 2000] [--clients 8] [--seconds 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BODY = json.dumps({"model": "demo-chat", "messages": [{"role": "user", "content": "How fast is the gateway?"}]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(host: str, port: int, path: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection(host, port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{host}:{port}{path} did not answer")


def one_request(conn: http.client.HTTPConnection, headers: dict) -> None:
    conn.request("POST", "/v1/chat/completions", body=BODY, headers=headers)
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise SystemExit(f"unexpected status {resp.status}")


def latency(host: str, port: int, headers: dict, n: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    for _ in range(min(200, n)):  # warm up (connection, pools, caches)
        one_request(conn, headers)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        one_request(conn, headers)
        out.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return out


def throughput(host: str, port: int, headers: dict, clients: int, seconds: float) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while time.monotonic() < stop:
            one_request(conn, headers)
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def measure(targets: list[tuple[str, str, int, dict]], args) -> None:
    rows = []
    for label, host, port, headers in targets:
        lat = latency(host, port, headers, args.requests)
        rps = throughput(host, port, headers, args.clients, args.seconds)
        rows.append((label, pct(lat, 50), pct(lat, 99), rps))
    base = rows[0]
    print(f"{'path':44} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'+p50 ms':>8} {'+p99 ms':>8}")
    for label, p50, p99, rps in rows:
        print(f"{label:44} {p50:8.3f} {p99:8.3f} {rps:8.0f} {p50 - base[1]:+8.3f} {p99 - base[2]:+8.3f}")
    fair = rows[1]
    verdict = "meets" if fair[1] - base[1] <= 2.0 else "MISSES"
    print(f"\ngateway added {fair[1] - base[1]:.3f} ms at p50, {fair[2] - base[2]:.3f} ms at p99 "
          f"({verdict} the <= 2 ms p50 goal); throughput {fair[3]:.0f} vs {base[3]:.0f} req/s direct "
          f"({args.clients} clients, {args.seconds:g} s, {args.requests} sequential requests for latency; "
          f"{os.cpu_count()} CPUs shared by clients and servers)")


def run_local(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "APPLIANCE_DATA_DIR": tmp}
        engine_port, gw_port = free_port(), free_port()
        procs = [subprocess.Popen([sys.executable, str(REPO / "images/demo/engine/main.py")],
                                  env={**env, "PORT": str(engine_port), "SERVED_MODEL_NAME": "demo-chat"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        try:
            from appliance.gateway import keys as K

            os.environ["APPLIANCE_DATA_DIR"] = tmp
            key = K.create_key("bench").key
            (Path(tmp) / "gateway" / "routes.json").write_text(
                json.dumps({"models": {"demo-chat": f"http://127.0.0.1:{engine_port}"}}))
            procs.append(subprocess.Popen([sys.executable, str(REPO / "images/gateway/main.py")],
                                          env={**env, "PORT": str(gw_port),
                                               "GATEWAY_CONFIG_DIR": str(Path(tmp) / "gateway")},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_http("127.0.0.1", engine_port, "/health")
            wait_http("127.0.0.1", gw_port, "/healthz")
            auth = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
            print("local processes (no Docker)")
            measure([("engine direct", "127.0.0.1", engine_port, {"Content-Type": "application/json"}),
                     ("gateway -> engine", "127.0.0.1", gw_port, auth)], args)
        finally:
            for p in procs:
                p.terminate()
                p.wait()


def run_docker(args) -> None:
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    sys.path.insert(0, str(REPO))  # a checkout-only script: the tests' helpers are here
    from tests.stack_support import TEMPLATED_MODELS, install_templated

    instance = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        gw_port = free_port()
        env = {**os.environ, "APPLIANCE_INSTANCE": instance, "APPLIANCE_DATA_DIR": tmp,
               "APPLIANCE_GATEWAY_PORT": str(gw_port), "APPLIANCE_APP_PORT_BASE": str(free_port())}

        def cli(*a, timeout_s=900):
            return subprocess.run([sys.executable, "-m", "appliance", *a], capture_output=True, text=True,
                                  env=env, timeout=timeout_s)

        try:
            t0 = time.monotonic()
            install_templated(tmp)  # the templated test engine (not shipped): see the module docstring
            res = cli("init", "--demo", "--yes", "--quiet", "--models", TEMPLATED_MODELS)
            if res.returncode != 0:
                raise SystemExit(f"init failed: {res.stderr[-2000:]}")
            print(f"demo stack {instance} up in {time.monotonic() - t0:.1f} s")
            key = json.loads(cli("keys", "create", "--name", "bench", "--json").stdout)["key"]
            with Docker() as d:
                cs = d.list_containers(L.instance_filter(instance))
                by_service = {c.labels.get(L.SERVICE): c for c in cs}
                # the engine is on the internal engine network only; the gateway is on it too (the
                # same hop for both rows), and the host reaches that network's addresses
                net = L.engine_network_name(instance)
                engine_ip = d.container_ip(by_service["llm-demo-chat"].id, net)
                gateway_ip = d.container_ip(by_service["gateway"].id, net)
            gw_dir = Path(tmp) / "gateway"
            routes = json.loads((gw_dir / "routes.json").read_text())["models"]
            engine_port = int(str(routes["demo-chat"]["upstream"]).rsplit(":", 1)[1])
            # the engine answers only with its own secret (what the gateway sends it)
            secret = json.loads((gw_dir / "upstream_keys.json").read_text())["services"][routes["demo-chat"]["service"]]
            auth = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
            time.sleep(1.5)  # the key reaches the gateway
            print("Docker demo stack (demo engine; one chat request, non-streaming, keep-alive)")
            measure([("engine container direct", engine_ip, engine_port,
                      {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}),
                     ("gateway container -> engine", gateway_ip, 8080, auth),
                     ("gateway published port -> engine", "127.0.0.1", gw_port, auth)], args)
        finally:
            cli("down", "--purge", "--yes", timeout_s=300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--local", action="store_true", help="local processes instead of the Docker demo stack")
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests for latency")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput")
    ap.add_argument("--seconds", type=float, default=5.0, help="throughput duration per target")
    args = ap.parse_args()
    (run_local if args.local else run_docker)(args)


if __name__ == "__main__":
    main()
