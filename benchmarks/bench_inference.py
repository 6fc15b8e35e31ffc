"""Tokens/s and time to first token of the real default stack: through the gateway, at the engine, in-process.

    python3 benchmarks/bench_inference.py [--clients 1,4,16] [--requests 3] [--rounds 3] [--max-tokens 64]

Brings up the README's main job on the real Docker engine in a throw-away instance (``appliance
init --demo --yes``: SmolLM2-135M-Instruct on the locally built llama.cpp engine; purged
afterwards), then for each concurrency C runs C clients that each send REQUESTS streamed chat
requests (same prompt, temperature 0, ``max_tokens`` fixed, ``ignore_eos`` so every answer has the
same length) against each of these, ROUNDS times in a rotated order (medians reported, with the range):

* **gateway**: the gateway container's address on the stack network (the hop clients make, minus
  Docker's host port forwarding -- the fair comparison with the next row);
* **engine**: the engine container's address directly (no gateway);
* **in-process**: xllamacpp's server in this process on the same GGUF, with the same threads and
  slots (what llama.cpp itself does on this machine without containers: the limit).

Reported per row: aggregate tokens/s (completion tokens of all clients / wall time), per-client
tokens/s, and the median time to first token. The gateway's cost on tokens/s is the ratio of the
gateway row to the engine row (goal: at most 3 % lower). The clients run on the same small
machine as the servers, so the absolute numbers are a floor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PROMPT = "Write a short story about a robot who learns to paint."


def stream_once(host: str, port: int, headers: dict, model: str, max_tokens: int) -> tuple[float, int, float]:
    """(seconds to first token, completion tokens, total seconds) of one streamed chat request."""
    body = json.dumps({"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                       "ignore_eos": True, "messages": [{"role": "user", "content": PROMPT}]})
    conn = http.client.HTTPConnection(host, port, timeout=300)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"{host}:{port}: HTTP {resp.status}: {resp.read()[:300]!r}")
    first = None
    tokens = 0
    buf = b""
    while True:
        data = resp.read1(65536)
        if not data:
            break
        buf += data
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            doc = json.loads(event[6:])
            delta = (doc.get("choices") or [{}])[0].get("delta") or {}
            if delta.get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    conn.close()
    return first or total, tokens, total


def run(host: str, port: int, headers: dict, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    ttfts: list[float] = []
    per_client: list[float] = []
    total_tokens = [0]
    lock = threading.Lock()

    def worker() -> None:
        tok, secs = 0, 0.0
        for _ in range(requests):
            ttft, n, t = stream_once(host, port, headers, model, max_tokens)
            tok, secs = tok + n, secs + t
            with lock:
                ttfts.append(ttft)
                total_tokens[0] += n
        with lock:
            per_client.append(tok / secs if secs else 0.0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"tokens_s": total_tokens[0] / wall, "client_tokens_s": statistics.median(per_client),
            "ttft_ms": statistics.median(ttfts) * 1000, "tokens": total_tokens[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=3, help="requests per client per row")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds per concurrency; each round runs every target, in a rotated order; medians shown")
    args = ap.parse_args()
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker
    from tests.stack_support import free_port_block, purge_instance, unique_instance

    inst = unique_instance("bi")
    data = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    env = {**os.environ, "APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(data)}
    in_proc = None
    try:
        res = subprocess.run([sys.executable, "-m", "appliance", "init", "--demo", "--yes", "--json", "-q",
                              "--gateway-port", str(free_port_block(1)), "--app-port-base", str(free_port_block(3))],
                             capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
        if res.returncode:
            raise SystemExit(res.stderr[-3000:])
        plan = json.loads(res.stdout)["plan"]
        chat = next(s for s in plan["services"] if s["role"] == "chat")
        key = json.loads(subprocess.run([sys.executable, "-m", "appliance", "keys", "create", "--name", "bench",
                                         "--json"], capture_output=True, text=True, env=env, cwd=REPO,
                                        check=True).stdout)["key"]
        with Docker() as d:
            by_service = {c.service: c for c in d.list_containers(L.instance_filter(inst))}
            # the engine is on the internal engine network only, the gateway on it too (same hop)
            net = L.engine_network_name(inst)
            engine_ip = d.container_ip(by_service[chat["name"]].id, net)
            gateway_ip = d.container_ip(by_service["gateway"].id, net)
        # the engine answers only with its own secret (what the gateway sends it)
        secret = json.loads((data / "gateway" / "upstream_keys.json").read_text())["services"][chat["name"]]
        threads = int(chat["command"][chat["command"].index("-t") + 1])
        slots = int(chat["command"][chat["command"].index("--parallel") + 1])
        ctx = int(chat["command"][chat["command"].index("-c") + 1])
        in_proc = start_in_process(data / "models" / chat["model"] / chat["precision"] / chat["weights_files"][0],
                                   chat["served_model_name"], threads, slots, ctx)
        targets = [("gateway", gateway_ip, 8080, {"Authorization": f"Bearer {key}"}),
                   ("engine", engine_ip, chat["port"], {"Authorization": f"Bearer {secret}"}),
                   ("in-process", "127.0.0.1", in_proc[1], {})]
        print(f"SmolLM2-135M-Instruct ({chat['precision']}), llama.cpp via xllamacpp, {threads} thread(s), "
              f"{slots} slot(s); {args.requests} requests x {args.max_tokens} tokens per client; load "
              f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
        for _name, host, port, headers in targets:  # warm-up (prompt cache, first-touch of the weights)
            stream_once(host, port, headers, chat["served_model_name"], 8)
        print(f"{'clients':>7} {'target':<11} {'tokens/s':>9} {'per client':>10} {'TTFT p50':>9}   (tokens/s range)")
        for c in [int(x) for x in args.clients.split(",")]:
            samples: dict[str, list[dict]] = {name: [] for name, *_ in targets}
            for r in range(args.rounds):  # rotate the order so drift in the machine's load hits every target
                for name, host, port, headers in targets[r % len(targets):] + targets[:r % len(targets)]:
                    samples[name].append(run(host, port, headers, chat["served_model_name"], c, args.requests,
                                             args.max_tokens))
            rows = {name: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
                    for name, runs in samples.items()}
            for name, r in rows.items():
                spread = [x["tokens_s"] for x in samples[name]]
                print(f"{c:>7} {name:<11} {r['tokens_s']:>9.1f} {r['client_tokens_s']:>10.1f} "
                      f"{r['ttft_ms']:>7.0f}ms   ({min(spread):.0f}..{max(spread):.0f})")
            cost = 1 - rows["gateway"]["tokens_s"] / rows["engine"]["tokens_s"]
            print(f"{'':>7} gateway cost on tokens/s: {cost * 100:+.1f}% (goal <= 3%); engine vs in-process: "
                  f"{rows['engine']['tokens_s'] / rows['in-process']['tokens_s'] * 100:.0f}%")
    finally:
        if in_proc is not None:
            in_proc[0].terminate()
            in_proc[0].wait(30)
        purge_instance(inst)


def start_in_process(gguf: Path, alias: str, threads: int, slots: int, ctx: int):
    """The same launcher the engine image runs, as a local process (xllamacpp from this venv)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(REPO / "images/engines/llamacpp/main.py"), "-m", str(gguf),
                             "--alias", alias, "--host", "127.0.0.1", "--port", str(port), "-c", str(ctx),
                             "--parallel", str(slots), "-t", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the in-process engine did not start")


if __name__ == "__main__":
    main()
