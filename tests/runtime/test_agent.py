"""The node agent on a snapshot-planned release: degraded marking, backoff, accelerator metrics.

The release is the real plan for the H200 snapshot, recorded through the runtime's release
API; hardware re-detection reads a copy of the snapshot from which the GPU's PCI function is
removed (as when a GPU falls off the bus). Docker is real: repairs of the engine services
fail here because the engine image does not exist, which is what exercises the backoff.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from appliance.agent.loop import Agent, AgentConfig
from appliance.catalog import load_catalog
from appliance.inventory.detect import detect
from appliance.planner import plan as make_plan
from appliance.runtime import releases
from appliance.runtime.compose import compose
from tests.support import H200

REPO = Path(__file__).resolve().parents[2]
GPU_BDF = "0000:00:06.0"

pytestmark = [pytest.mark.docker]


@pytest.fixture
def snapshot_copy(tmp_path):
    dest = tmp_path / "node"
    shutil.copytree(H200, dest, symlinks=True)
    return dest


@pytest.fixture
def h200_release(instance):
    store = releases.open_store()
    plan = make_plan(detect(snapshot=str(H200), usage=False), load_catalog())
    stack = compose(plan, catalog=load_catalog(), instance=instance).with_hashes()
    rid = releases.begin(store, instance, plan, stack, source="test")
    releases.commit(store, instance, rid)
    return store, plan, stack


def _metrics(agent: Agent) -> str:
    return generate_latest(agent.metrics.registry).decode()


def test_services_on_a_vanished_gpu_are_marked_degraded_and_recover(h200_release, snapshot_copy, instance):
    store, plan, _ = h200_release
    releases.set_desired(store, instance, "down")   # observe only: no repairs in this test
    agent = Agent(AgentConfig(snapshot=str(snapshot_copy), metrics_port=0), store=store)
    report = agent.reconcile_once()
    assert report.error is None and report.degraded == {}
    text = _metrics(agent)
    assert 'appliance_accelerator_info{driver="580.159.04",index="0",model="NVIDIA H200"' in text
    assert "appliance_accelerators 1.0" in text

    gpu = snapshot_copy / "root" / "sys" / "bus" / "pci" / "devices" / GPU_BDF
    shutil.rmtree(gpu)
    report = agent.reconcile_once()
    engines = sorted(s.name for s in plan.services)
    assert sorted(report.degraded) == engines
    assert all("nvidia:0" in why and "GPU-bd03a26d" in why for why in report.degraded.values())
    notes = releases.service_notes(store, instance)
    assert all(notes[name]["degraded"] for name in engines)
    assert "appliance_accelerators 0.0" in _metrics(agent)
    events = [e for e in store.events(kind="agent") if e["data"] and e["data"].get("action") == "degraded"]
    assert sorted(e["service"] for e in events) == engines

    agent.reconcile_once()   # still gone: no duplicate events
    assert len([e for e in store.events(kind="agent") if e["data"] and e["data"].get("action") == "degraded"]) == 2

    shutil.copytree(H200 / "root" / "sys" / "bus" / "pci" / "devices" / GPU_BDF, gpu, symlinks=True)
    report = agent.reconcile_once()
    assert report.degraded == {}
    assert not any(n["degraded"] for n in releases.service_notes(store, instance).values())
    assert len([e for e in store.events(kind="agent") if e["data"] and e["data"].get("action") == "recovered"]) == 2
    agent.close()


def test_failing_repairs_back_off(h200_release, snapshot_copy, instance):
    store, plan, stack = h200_release
    chat = plan.services[0].name
    # hold everything but one engine down so only its repair runs
    for svc in stack.services:
        if svc.name != chat:
            releases.note_service(store, instance, svc.name, held="test")
    agent = Agent(AgentConfig(snapshot=str(snapshot_copy), metrics_port=0, interval_s=30), store=store)

    def attempts():
        return [e for e in store.events(kind="agent", service=chat) if e["data"] and "attempt" in e["data"]]

    first = agent.reconcile_once()
    assert first.repairs == [{"service": chat, "action": "recreate", "ok": False}]
    assert "vllm/vllm-openai" in attempts()[0]["message"]       # why it failed is recorded
    agent.reconcile_once()                                       # first retry is immediate
    assert [e["data"]["attempt"] for e in attempts()] == [2, 1]
    third = agent.reconcile_once()                               # then it waits 2 x interval
    assert third.repairs == [] and len(attempts()) == 2
    note = releases.service_notes(store, instance)[chat]
    assert note["failures"] == 2 and note["next_try_ts"] - note["last_restart_ts"] == pytest.approx(60, abs=1)
    assert 'appliance_service_repairs_total{action="recreate",service="' + chat + '"} 2.0' in _metrics(agent)
    agent.close()


def test_a_locked_state_database_costs_passes_not_the_agent(tmp_path, instance, monkeypatch):
    """Another process holding the state's write lock longer than the agent's busy timeout:
    the agent's passes fail to record (typed StateError, logged), the agent keeps running and
    records again once the lock is gone (before, a raw sqlite3 'database is locked' escaped
    the heartbeat and ended the loop)."""
    import json
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    from appliance.agent.loop import heartbeat_key
    from appliance.state.store import StateStore
    from tests.support import wait_until

    data = tmp_path / "data"
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(data))
    db = data / "state.db"
    releases.open_store(StateStore(db)).close()  # the state exists, nothing installed

    def beat_ts() -> float:
        store = StateStore(db)
        try:
            raw = store.get_meta(heartbeat_key(instance))
        finally:
            store.close()
        return json.loads(raw)["ts"] if raw else 0.0

    env = {**os.environ, "APPLIANCE_DATA_DIR": str(data), "APPLIANCE_INSTANCE": instance}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "agent", "--interval", "0.3", "--metrics-port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: beat_ts() > 0, what="the agent's first heartbeat", timeout_s=30)
        holder = sqlite3.connect(str(db), timeout=1, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # every writer now waits, and gives up after its busy timeout
        try:
            locked_at = time.time()
            time.sleep(5)  # the point of the test: longer than the agent's 2 s busy timeout, several passes
            assert proc.poll() is None, proc.communicate()[0][-3000:]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert beat_ts() < locked_at, "no heartbeat could be written while the lock was held"
        wait_until(lambda: beat_ts() > locked_at + 5, what="a heartbeat after the lock was released", timeout_s=30)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "locked" in out and "Traceback" not in out, out[-3000:]
