"""A cluster for real on one machine: three nodes, each a network namespace with its own Docker
engine (tests/cluster/netns.py), reached by Ansible (local connections entering each node's
namespace). ``appliance init --inventory`` brings the templated demo stack up across them: the
gateway on the head, the engines on the two workers. Then: a chat request through the head's
gateway reaches the worker's engine; the engine's published address refuses a request without the
gateway's secret; a worker's engine container killed is restored by that node's agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.cluster import netns
from tests.cluster.conftest import write_inventory
from tests.stack_support import install_templated, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.ansible, pytest.mark.slow, pytest.mark.timeout(1500)]


def _node_env(rack, node) -> dict:
    return {"DOCKER_HOST": node.socket, "APPLIANCE_DATA_DIR": str(node.data_dir),
            "APPLIANCE_INSTANCE": f"{rack.tag}-{node.name}", "APPLIANCE_NO_LIVE_PROVISION": "1"}


def on_node(rack, node, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """``appliance ARGS`` run on ``node`` (inside its namespace, with its engine and data dir)."""
    return subprocess.run(node.command(sys.executable, "-m", "appliance", *args), capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, **_node_env(rack, node)})


def _http(url: str, body: dict | None = None, key: str | None = None, timeout_s: float = 20.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:500]


@pytest.fixture(scope="module")
def rack(tmp_path_factory):
    why = netns.available()
    if why:
        pytest.skip(f"a netns cluster {why}")
    base = tmp_path_factory.mktemp("rack")
    c = netns.Cluster.create(base, 3)
    try:
        mine = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "appliance/*"],
                              capture_output=True, text=True, timeout=60).stdout.split()
        if mine:  # what the machine engine already built: each node would build the same (content tags)
            c.load_images(mine)
        hosts = {}
        for i, node in enumerate(c.nodes):
            install_templated(node.data_dir)
            hosts[node.name] = {
                "ansible_host": node.address, "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable, "appliance_data_dir": str(node.data_dir),
                "appliance_command": node.command(sys.executable, "-m", "appliance"),
                "appliance_env": _node_env(c, node), **({"appliance_head": True, "appliance_serve": False}
                                                        if i == 0 else {})}
        inventory = write_inventory(base / "hosts.yml", hosts)
        controller = base / "controller"
        install_templated(controller)
        env = {"APPLIANCE_DATA_DIR": str(controller)}
        res = run_cli("init", "--inventory", str(inventory), "--demo", "--models", "demo-chat,demo-embed",
                      "--policy", "spread", "--insecure-http", "--yes", "--json", env=env, timeout=1200)
        c.init = res
        c.inventory = inventory
        yield c
    finally:
        c.close()


def test_init_inventory_puts_the_gateway_on_the_head_and_the_engines_on_the_workers(rack):
    res = rack.init
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout)
    roles = {n["node"]: (n["role"], n["models"]) for n in out["nodes"]}
    assert roles == {"node0": ("head", []), "node1": ("worker", ["demo-chat"]), "node2": ("worker", ["demo-embed"])}
    head, w1, w2 = rack.nodes
    names = {n.name: set(n.docker("ps", "--format", "{{.Names}}").stdout.split()) for n in rack.nodes}
    assert any("gateway" in x for x in names["node0"]) and not any("llm-" in x or "embed-" in x
                                                                     for x in names["node0"])
    assert any("llm-demo-chat" in x for x in names["node1"]) and not any("gateway" in x for x in names["node1"])
    assert any("embed-demo-embed" in x for x in names["node2"])
    assert out["gateway"] == f"http://{head.address}:8080/v1"


def test_a_chat_through_the_heads_gateway_reaches_the_workers_engine(rack):
    head, w1, w2 = rack.nodes
    created = on_node(rack, head, "keys", "create", "--name", "rack", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    gw = json.loads(rack.init.stdout)["gateway"]
    status, answer = _http(f"{gw}/chat/completions", {"model": "demo-chat", "messages": [
        {"role": "user", "content": "which node?"}]}, key)
    assert status == 200, answer
    assert '"which node?"' in answer["choices"][0]["message"]["content"]
    status, emb = _http(f"{gw}/embeddings", {"model": "demo-embed", "input": "hello"}, key)
    assert status == 200 and len(emb["data"][0]["embedding"]) > 0
    logs = w1.docker("logs", next(x for x in w1.docker("ps", "--format", "{{.Names}}").stdout.split()
                                  if "llm-demo-chat" in x)).stderr
    assert "/v1/chat/completions" in logs  # the worker's own engine answered
    # the worker's engine is published on its address, and refuses anyone without the gateway's secret
    engine = json.loads(rack.init.stdout)["nodes"][1]["engines"]["llm-demo-chat"]
    status, _ = _http(f"{engine}/v1/chat/completions", {"model": "demo-chat", "messages": [
        {"role": "user", "content": "hi"}]})
    assert status == 401


def test_a_killed_engine_on_a_worker_is_restored_by_that_nodes_agent(rack):
    head, w1, w2 = rack.nodes
    name = next(x for x in w1.docker("ps", "--format", "{{.Names}}").stdout.split() if "llm-demo-chat" in x)
    w1.docker("kill", name)
    res = on_node(rack, w1, "agent", "--once", "--json", timeout_s=300)
    assert res.returncode == 0, res.stderr[-2000:]
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline:
        state = w1.docker("ps", "--filter", "name=llm-demo-chat", "--format", "{{.Status}}").stdout
        if "healthy" in state and "unhealthy" not in state:
            break
        time.sleep(1)
    assert "Up" in state and "(healthy)" in state, state
    key = json.loads(on_node(rack, head, "keys", "create", "--name", "after", "--json").stdout)["key"]
    gw = json.loads(rack.init.stdout)["gateway"]
    status, _ = _http(f"{gw}/chat/completions", {"model": "demo-chat", "messages": [
        {"role": "user", "content": "again"}]}, key)
    assert status == 200
