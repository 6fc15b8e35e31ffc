"""A cluster installed from a signed bundle and upgraded node by node (issue "A rack of boxes"):
three network-namespace nodes with a Docker engine each (tests/cluster/netns.py); the engine
images come only from the bundles, loaded into each node's engine by that node's own
``appliance init --bundle`` / ``appliance upgrade`` which ``init --inventory`` and ``upgrade
--inventory`` run through Ansible -- the workers one at a time, then the head."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cluster import netns
from tests.cluster.conftest import write_inventory
from tests.stack_support import REPO, TEMPLATED_MODELS, run_cli

pytestmark = [pytest.mark.ansible, pytest.mark.slow, pytest.mark.timeout(1800)]


def _engine_images(node) -> dict[str, str]:
    out = {}
    for line in node.docker("ps", "--format", "{{.Names}} {{.Image}}").stdout.splitlines():
        name, image = line.split()
        if "demo-chat" in name or "demo-embed" in name:
            out["chat" if "demo-chat" in name else "embed"] = image
    return out


@pytest.fixture(scope="module")
def rack(release_bundles, release_images, keypair, node_resources, tmp_path_factory):
    netns.require()
    base = tmp_path_factory.mktemp("bundle-rack")
    c = netns.Cluster.create(base, 3)
    try:
        hosts = {}
        for i, node in enumerate(c.nodes):
            env = {"DOCKER_HOST": node.socket, "APPLIANCE_DATA_DIR": str(node.data_dir),
                   "APPLIANCE_INSTANCE": f"{c.tag}-{node.name}", "APPLIANCE_NO_LIVE_PROVISION": "1",
                   "APPLIANCE_BUNDLE_PUBKEYS": keypair.public_key, "APPLIANCE_RESOURCES": str(node_resources),
                   "PYTHONPATH": str(REPO)}  # this checkout's code on every node, as on the controller
            hosts[node.name] = {
                "ansible_host": node.address, "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable, "appliance_data_dir": str(node.data_dir),
                "appliance_command": node.command(sys.executable, "-m", "appliance"), "appliance_env": env,
                **({"appliance_head": True, "appliance_serve": False} if i == 0 else {})}
        c.inventory = write_inventory(base / "hosts.yml", hosts)
        c.env = {"APPLIANCE_DATA_DIR": str(base / "controller"), "APPLIANCE_RESOURCES": str(node_resources)}
        c.init = run_cli("init", "--inventory", str(c.inventory), "--bundle", str(release_bundles.r1), "--demo",
                         "--models", TEMPLATED_MODELS, "--policy", "spread", "--replicas", "2", "--insecure-http",
                         "--yes", "--json", env=c.env, timeout=1500)
        yield c
    finally:
        c.close()


def test_init_inventory_from_a_bundle_then_upgrade_node_by_node(rack, release_bundles, release_images):
    res = rack.init
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    head, w1, w2 = rack.nodes
    for worker in (w1, w2):  # the engines run the bundle's image, which only the bundle could provide
        assert set(_engine_images(worker).values()) == {release_images["1.0.0"]}, _engine_images(worker)
    res = run_cli("upgrade", "--inventory", str(rack.inventory), str(release_bundles.r2), "--yes", "--json",
                  env=rack.env, timeout=1500)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout)
    assert out["ok"] and [(n["node"], n["state"]) for n in out["nodes"]] == [
        ("node1", "upgraded"), ("node2", "upgraded"), ("node0", "upgraded")]
    for worker in (w1, w2):
        assert set(_engine_images(worker).values()) == {release_images["2.0.0"]}, _engine_images(worker)
    status = run_cli("status", "--inventory", str(rack.inventory), "--json", env=rack.env, timeout=300)
    report = json.loads(status.stdout)
    assert status.returncode == 0 and report["status"] == "healthy", report


def test_a_node_that_refuses_the_upgrade_stops_it_and_the_upgraded_nodes_roll_back(rack, release_bundles, keypair):
    """node2 no longer trusts the vendor key: node1 (upgraded first) is rolled back, the head is
    not touched, and the command fails naming node2."""
    import os

    import yaml

    head, w1, w2 = rack.nodes
    doc = yaml.safe_load(rack.inventory.read_text())
    doc["all"]["hosts"]["node2"]["appliance_env"].pop("APPLIANCE_BUNDLE_PUBKEYS")
    distrust = rack.inventory.with_name("distrust.yml")
    distrust.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = run_cli("upgrade", "--inventory", str(distrust), str(release_bundles.r3), "--yes", "--json",
                  env=rack.env, timeout=1500)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads(res.stdout)
    states = {n["node"]: n["state"] for n in out["nodes"]}
    assert not out["ok"] and states == {"node1": "rolled back", "node2": "failed", "node0": "not reached"}, out
    assert "node2" in next(n["detail"] for n in out["nodes"] if n["node"] == "node2")

    def version(node) -> str:
        env = {**os.environ, **doc["all"]["hosts"][node.name]["appliance_env"]}
        st = json.loads(subprocess.run(node.command(sys.executable, "-m", "appliance", "status", "--json"),
                                       capture_output=True, text=True, timeout=120, env=env).stdout)
        return st["release"]["version"]

    assert [version(n) for n in (head, w1, w2)] == ["2.0.0", "2.0.0", "2.0.0"]
