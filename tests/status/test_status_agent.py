"""`appliance status` tells whether the node agent is alive, from the heartbeat each pass records."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from appliance.agent.loop import heartbeat_key
from appliance.state.store import StateStore
from appliance.status.collect import _agent_heartbeat
from appliance.status.models import AgentStatus


def _report(installed: bool = True):
    return SimpleNamespace(release=object() if installed else None, agent=AgentStatus())


def _beat(store, inst, age_s, interval_s=5.0, running=True):
    store.set_meta(heartbeat_key(inst), json.dumps({"ts": time.time() - age_s, "interval_s": interval_s,
                                                    "pid": 1, "running": running}))


def test_no_heartbeat_on_an_installed_node_is_a_warning_with_the_fix(tmp_path):
    store = StateStore(tmp_path / "state.db")
    report = _report()
    [problem] = _agent_heartbeat(report, store, "i1")
    assert (problem.severity, problem.code) == ("warning", "agent_not_running")
    assert "never run" in problem.message and "appliance agent" in problem.fix
    assert report.agent.running is None


def test_a_fresh_heartbeat_means_running_and_no_problem(tmp_path):
    store = StateStore(tmp_path / "state.db")
    _beat(store, "i1", age_s=2)
    report = _report()
    assert _agent_heartbeat(report, store, "i1") == []
    assert report.agent.running is True and report.agent.interval_s == 5.0 and report.agent.last_pass_at


def test_a_stale_or_stopped_heartbeat_is_reported(tmp_path):
    store = StateStore(tmp_path / "state.db")
    _beat(store, "i1", age_s=60)            # 3 x 5 s + 10 s has passed
    report = _report()
    assert [p.code for p in _agent_heartbeat(report, store, "i1")] == ["agent_not_running"]
    assert report.agent.running is False
    _beat(store, "i2", age_s=1, running=False)  # stopped cleanly (SIGTERM)
    assert [p.code for p in _agent_heartbeat(_report(), store, "i2")] == ["agent_not_running"]


def test_nothing_installed_means_no_agent_problem(tmp_path):
    store = StateStore(tmp_path / "state.db")
    assert _agent_heartbeat(_report(installed=False), store, "i1") == []


def test_the_agent_records_a_heartbeat_each_pass_and_on_stop(tmp_path, monkeypatch):
    from appliance.agent.loop import Agent, AgentConfig

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")  # a pass that cannot reach Docker still beats
    store = StateStore(tmp_path / "state.db")
    agent = Agent(AgentConfig(interval_s=2.0, once=True, metrics_port=0), instance="hb", store=store)
    assert agent.run() == 0
    beat = json.loads(store.get_meta(heartbeat_key("hb")))
    assert beat["running"] is False and beat["interval_s"] == 2.0 and time.time() - beat["ts"] < 60
