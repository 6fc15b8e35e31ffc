"""A cluster for real on one machine: three nodes, each a network namespace with its own Docker
engine (tests/cluster/netns.py), reached by Ansible (local connections entering each node's
namespace). ``appliance init --inventory --replicas 2`` brings the templated demo stack up across
them: the gateway on the head, each model's engines on both workers. Then: chat requests through
the head's gateway reach both workers' engines in turn; an engine's published address refuses a
request without the gateway's secret; a worker's engine container killed is restored by that
node's agent; a worker's whole Docker engine stopped makes ``status --inventory`` degraded naming
that node, while the gateway keeps answering from the replica on the other worker.
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
from tests.stack_support import REPO, install_templated, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.ansible, pytest.mark.slow, pytest.mark.timeout(1500)]


def _node_env(rack, node) -> dict:
    """A node's environment. ``PYTHONPATH``: the node runs this checkout's code and resources (the
    templated engine's sources are not in an installed wheel), as ``run_cli`` does on the controller
    from the checkout's directory -- Ansible runs the node's commands from elsewhere."""
    return {"DOCKER_HOST": node.socket, "APPLIANCE_DATA_DIR": str(node.data_dir),
            "APPLIANCE_INSTANCE": f"{rack.tag}-{node.name}", "APPLIANCE_NO_LIVE_PROVISION": "1",
            "PYTHONPATH": str(REPO)}


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
    netns.require()
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
                      "--policy", "spread", "--replicas", "2", "--insecure-http", "--yes", "--json", env=env,
                      timeout=1200)
        c.init = res
        c.inventory = inventory
        yield c
    finally:
        c.close()


def test_init_inventory_puts_the_gateway_on_the_head_and_the_engines_on_the_workers(rack):
    res = rack.init
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout)
    roles = {n["node"]: (n["role"], sorted(n["models"])) for n in out["nodes"]}
    both = ["demo-chat", "demo-embed"]
    assert roles == {"node0": ("head", []), "node1": ("worker", both), "node2": ("worker", both)}
    head, w1, w2 = rack.nodes
    names = {n.name: set(n.docker("ps", "--format", "{{.Names}}").stdout.split()) for n in rack.nodes}
    assert any("gateway" in x for x in names["node0"]) and not any("llm-" in x or "embed-" in x
                                                                     for x in names["node0"])
    for worker in ("node1", "node2"):
        assert any("llm-demo-chat" in x for x in names[worker]) and any("embed-demo-embed" in x for x in names[worker])
        assert not any("gateway" in x for x in names[worker])
    assert out["gateway"] == f"http://{head.address}:8080/v1"


def _engine_log(node, service: str) -> str:
    name = next(x for x in node.docker("ps", "--format", "{{.Names}}").stdout.split() if service in x)
    res = node.docker("logs", name)
    return res.stdout + res.stderr


def test_chats_through_the_heads_gateway_reach_both_workers_engines_in_turn(rack):
    head, w1, w2 = rack.nodes
    created = on_node(rack, head, "keys", "create", "--name", "rack", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    gw = json.loads(rack.init.stdout)["gateway"]
    for i in range(4):
        status, answer = _http(f"{gw}/chat/completions", {"model": "demo-chat", "messages": [
            {"role": "user", "content": f"question {i}"}]}, key)
        assert status == 200, answer
        assert f'"question {i}"' in answer["choices"][0]["message"]["content"]
    status, emb = _http(f"{gw}/embeddings", {"model": "demo-embed", "input": "hello"}, key)
    assert status == 200 and len(emb["data"][0]["embedding"]) > 0
    for worker in (w1, w2):  # each worker's own engine answered its turns
        assert _engine_log(worker, "llm-demo-chat").count("/v1/chat/completions") == 2
    # the worker's engine is published on its address, and refuses anyone without the gateway's secret
    engine = next(n for n in json.loads(rack.init.stdout)["nodes"] if n["node"] == "node1")["engines"]["llm-demo-chat"]
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


def test_a_worker_whose_docker_engine_stops_is_named_by_status_and_its_replica_answers(rack):
    head, w1, w2 = rack.nodes
    res = run_cli("status", "--inventory", str(rack.inventory), "--json", timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert json.loads(res.stdout)["status"] == "healthy"
    w1.proc.terminate()  # node1's whole Docker engine, and every container on it
    w1.proc.wait(60)
    res = run_cli("status", "--inventory", str(rack.inventory), "--json", timeout=300)
    report = json.loads(res.stdout)
    assert res.returncode == 1 and report["status"] == "degraded", report
    assert {n["node"]: n["status"] for n in report["nodes"]}["node1"] != "healthy"
    assert report["summary"].startswith("degraded: node1 not healthy")
    assert any(p["node"] == "node1" and p["severity"] == "error" for p in report["problems"])
    human = run_cli("status", "--inventory", str(rack.inventory), timeout=300)
    assert human.returncode == 1 and "node1" in human.stdout
    key = json.loads(on_node(rack, head, "keys", "create", "--name", "failover", "--json").stdout)["key"]
    gw = json.loads(rack.init.stdout)["gateway"]
    before = _engine_log(w2, "llm-demo-chat").count("/v1/chat/completions")
    for i in range(3):  # node1's engine is gone: every request is answered by node2's replica
        status, answer = _http(f"{gw}/chat/completions", {"model": "demo-chat", "messages": [
            {"role": "user", "content": f"still there {i}"}]}, key)
        assert status == 200, answer
    assert _engine_log(w2, "llm-demo-chat").count("/v1/chat/completions") == before + 3
