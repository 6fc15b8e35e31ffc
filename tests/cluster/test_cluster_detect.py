"""``appliance cluster detect`` through real Ansible (ansible-runner, local connections): each
host runs its own ``appliance detect`` from its node snapshot and the JSON comes back."""

from __future__ import annotations

import json
import sys

import pytest

from appliance.inventory.detect import detect
from tests.cluster.conftest import ASCEND8, CPU, write_inventory
from tests.stack_support import run_cli

pytestmark = [pytest.mark.ansible]


def test_each_nodes_inventory_comes_back_through_ansible_and_is_kept_for_planning(tmp_path):
    common = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
              "appliance_command": [sys.executable, "-m", "appliance"]}
    inv = write_inventory(tmp_path / "hosts.yml", {
        "npu1": {**common, "appliance_head": True, "appliance_snapshot": str(ASCEND8)},
        "cpu1": {**common, "appliance_snapshot": str(CPU)}})
    res = run_cli("cluster", "detect", "--inventory", str(inv), "--json", "-q", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert set(out["nodes"]) == {"npu1", "cpu1"}
    expected = json.loads(detect(snapshot=str(ASCEND8)).model_dump_json())
    for doc in (out["nodes"]["npu1"], expected):
        doc.pop("probes")  # each probe's timing differs run to run
    assert out["nodes"]["npu1"] == expected and len(expected["accelerators"]) == 8
    assert out["nodes"]["cpu1"]["accelerators"] == []
    from pathlib import Path

    kept = Path(out["kept_in"])
    assert sorted(p.name for p in kept.iterdir()) == ["cpu1.json", "npu1.json"]

    # a host that cannot run detect: the failure names it, no traceback
    bad = write_inventory(tmp_path / "bad.yml", {
        "npu1": {**common, "appliance_snapshot": str(ASCEND8)},
        "broken": {**common, "appliance_command": ["/nonexistent/appliance"]}})
    res = run_cli("cluster", "detect", "--inventory", str(bad), "-q", timeout=300)
    assert res.returncode != 0 and "broken" in res.stderr and "Traceback" not in res.stderr
