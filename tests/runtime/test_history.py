"""The agent's bounded metrics history (appliance/agent/history.py) on a real SQLite file.

Points are written with explicit timestamps, so the rollup of closed 5-minute buckets and the
retention of both tiers are checked exactly, without waiting.
"""

from __future__ import annotations

import math

import pytest

from appliance.agent import history as H
from appliance.agent.history import History, samples_from
from appliance.gateway.keys import KeyUsage
from appliance.inventory.detect import detect
from appliance.runtime.views import ServiceStateView
from appliance.state.store import StateStore
from tests.support import H200

T0 = 1_800_000_000.0  # a bucket boundary: divisible by 300


@pytest.fixture
def store(tmp_path):
    s = StateStore(tmp_path / "state.db")
    yield s
    s.close()


def test_points_come_back_in_time_order_per_series(store):
    h = History(store)
    assert h.record({"svc.gateway.up": 1, "acc.nvidia.0.power_w": 120.5}, ts=T0) == 2
    assert h.record({"svc.gateway.up": 0, "acc.nvidia.0.power_w": 130.0}, ts=T0 + 15) == 2
    got = h.series(prefix="svc.", now=T0 + 20)
    assert got == {"svc.gateway.up": [(T0, 1.0), (T0 + 15, 0.0)]}
    assert h.series(["acc.nvidia.0.power_w"], now=T0 + 20)["acc.nvidia.0.power_w"][-1] == (T0 + 15, 130.0)
    assert h.names_like("acc.") == ["acc.nvidia.0.power_w"]
    assert h.series(prefix="svc.", since_s=10, now=T0 + 20) == {"svc.gateway.up": [(T0 + 15, 0.0)]}


def test_closed_buckets_roll_up_into_their_average(store):
    h = History(store)
    for i, v in enumerate([10, 20, 30, 40]):  # bucket [T0, T0+300)
        h.record({"gw.requests": v}, ts=T0 + 60 * i)
    h.record({"gw.requests": 100}, ts=T0 + 310)  # opens the next bucket: the first one is closed
    rollups = store.query("SELECT ts, value FROM history WHERE tier=1 AND series='gw.requests'")
    assert [(r["ts"], r["value"]) for r in rollups] == [(T0, 25.0)]
    # a window longer than the raw retention reads the rollups plus the open bucket's raw points
    day = h.series(["gw.requests"], since_s=86400, now=T0 + 320)["gw.requests"]
    assert day == [(T0, 25.0), (T0 + 310, 100.0)]


def test_retention_deletes_old_raw_points_and_old_rollups(store):
    h = History(store)
    h.record({"a": 1}, ts=T0)
    h.record({"a": 2}, ts=T0 + H.BUCKET_S)          # rolls up T0's bucket
    h.record({"a": 3}, ts=T0 + H.RAW_KEEP_S + 400)   # raw T0 and T0+300 are now too old
    raw = [r["ts"] for r in store.query("SELECT ts FROM history WHERE tier=0 ORDER BY ts")]
    assert raw == [T0 + H.RAW_KEEP_S + 400]
    assert store.one("SELECT COUNT(*) AS n FROM history WHERE tier=1")["n"] == 2
    h.record({"a": 4}, ts=T0 + H.ROLLUP_KEEP_S + H.BUCKET_S * 2)
    rollup_ts = [r["ts"] for r in store.query("SELECT ts FROM history WHERE tier=1 ORDER BY ts")]
    assert all(ts >= T0 + H.BUCKET_S * 2 for ts in rollup_ts), rollup_ts


def test_bad_values_and_too_many_series_are_dropped(store):
    h = History(store)
    samples = {"nan": math.nan, "inf": math.inf, "none": None, "flag": True, "text": "1", "": 1.0,
               "x" * (H.MAX_NAME_CHARS + 1): 1.0, "ok": 3}
    assert h.record(samples, ts=T0) == 1
    many = {f"s{i:04d}": float(i) for i in range(H.MAX_SERIES + 50)}
    assert h.record(many, ts=T0 + 1) == H.MAX_SERIES
    assert len(h.names_like("s")) == H.MAX_SERIES


def test_many_points_are_thinned_to_max_points_by_averaging(store):
    h = History(store)
    for i in range(100):
        h.record({"u": float(i)}, ts=T0 + i)
    got = h.series(["u"], since_s=100, now=T0 + 100, max_points=10)["u"]
    assert len(got) == 10
    assert got[0] == (T0 + 4.5, 4.5) and got[-1] == (T0 + 94.5, 94.5)


def test_history_survives_reopening_the_state(tmp_path):
    first = StateStore(tmp_path / "state.db")
    History(first).record({"svc.app.up": 1}, ts=T0)
    first.close()
    again = StateStore(tmp_path / "state.db")
    assert History(again).series(["svc.app.up"], now=T0 + 1) == {"svc.app.up": [(T0, 1.0)]}
    again.close()


def _service(name: str, state: str, health: str | None) -> ServiceStateView:
    return ServiceStateView(name=name, state=state, health=health)


def test_samples_from_a_real_node_snapshot_services_and_usage():
    inventory = detect(snapshot=str(H200), usage=True)
    services = [_service("gateway", "running", "healthy"), _service("vllm-chat", "running", "unhealthy"),
                _service("kb", "exited", None), _service("probe-only", "running", None)]
    usage = {"k1": KeyUsage(requests=3, prompt_tokens=10, completion_tokens=5, denied=1),
             "k2": KeyUsage(requests=2, prompt_tokens=1, completion_tokens=1)}
    s = samples_from(inventory, services, usage)
    acc = inventory.accelerators[0]
    assert s[f"acc.nvidia.{acc.index}.memory_total_mib"] == acc.memory_mib
    if acc.usage is not None and acc.usage.memory_used_mib is not None:
        assert s[f"acc.nvidia.{acc.index}.memory_used_mib"] == acc.usage.memory_used_mib
    assert (s["svc.gateway.up"], s["svc.vllm-chat.up"], s["svc.kb.up"], s["svc.probe-only.up"]) == (1, 0, 0, 1)
    assert (s["gw.requests"], s["gw.prompt_tokens"], s["gw.completion_tokens"], s["gw.denied"]) == (5, 11, 6, 1)
    assert s["gw.key.k1.tokens"] == 15 and s["gw.key.k2.requests"] == 2
    assert not any(k.startswith("gw.") for k in samples_from(None, [], {}))


def test_too_many_series_are_logged_once_and_restarts_come_from_the_agents_notes(store, caplog):
    h = History(store)
    many = {f"m{i:04d}": 1.0 for i in range(H.MAX_SERIES + 1)}
    with caplog.at_level("WARNING", logger="appliance.agent.history"):
        h.record(many, ts=T0)
        h.record(many, ts=T0 + 15)
    assert len([r for r in caplog.records if "more than" in r.getMessage()]) == 1
    s = samples_from(None, [_service("gateway", "running", "healthy"), _service("kb", "running", None)], None,
                     {"gateway": {"restarts": 3}})
    assert (s["svc.gateway.restarts"], s["svc.kb.restarts"]) == (3, 0)
    assert "svc.gateway.restarts" not in samples_from(None, [_service("gateway", "running", "healthy")], None)


def test_buckets_closed_while_the_agent_was_away_are_all_rolled_up_once(store):
    h = History(store)
    h.record({"a": 1, "b": 10}, ts=T0 + 10)
    h.record({"a": 3}, ts=T0 + 20)
    h.record({"a": 5}, ts=T0 + H.BUCKET_S + 1)        # a second bucket (b missing: a gap, not a zero)
    h.record({"a": 9}, ts=T0 + 3 * H.BUCKET_S + 5)     # two buckets closed at once
    h.record({"a": 9}, ts=T0 + 3 * H.BUCKET_S + 20)    # same bucket: nothing rolled up again
    rows = store.query("SELECT series, ts, value FROM history WHERE tier=1 ORDER BY series, ts")
    assert [(r["series"], r["ts"], r["value"]) for r in rows] == [
        ("a", T0, 2.0), ("a", T0 + H.BUCKET_S, 5.0), ("b", T0, 10.0)]


def test_a_locked_state_costs_the_agent_its_sample_not_the_pass(tmp_path, caplog):
    import sqlite3

    from appliance.agent.loop import Agent, AgentConfig

    db = tmp_path / "state.db"
    store = StateStore(db, busy_timeout_s=0.1)
    agent = Agent(AgentConfig(metrics_port=0), store=store)
    agent._record_history([_service("gateway", "running", "healthy")], {})
    holder = sqlite3.connect(str(db), timeout=1, isolation_level=None)  # another process's write lock
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level("WARNING", logger="appliance.agent"):
            agent._record_history([_service("gateway", "running", "unhealthy")], {})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert any("cannot record the history" in r.getMessage() and "locked" in r.getMessage() for r in caplog.records)
    agent._record_history([_service("gateway", "running", "unhealthy")], {})
    assert [v for _, v in History(store).series(["svc.gateway.up"])["svc.gateway.up"]] == [1.0, 0.0]
    store.close()


@pytest.mark.docker
def test_an_agent_pass_records_services_accelerators_and_gateway_usage(instance):
    """The way tests/runtime/test_agent.py runs a pass: the real plan for the H200 snapshot
    recorded as the release, desired state down (observe only), real Docker."""
    import json

    from appliance.agent.loop import Agent, AgentConfig
    from appliance.catalog import load_catalog
    from appliance.gateway.keys import gateway_dir
    from appliance.planner import plan as make_plan
    from appliance.runtime import releases
    from appliance.runtime.compose import compose

    store = releases.open_store()
    plan = make_plan(detect(snapshot=str(H200), usage=False), load_catalog())
    stack = compose(plan, catalog=load_catalog(), instance=instance).with_hashes()
    releases.commit(store, instance, releases.begin(store, instance, plan, stack, source="test"))
    releases.set_desired(store, instance, "down")
    gateway_dir().mkdir(parents=True, exist_ok=True)
    (gateway_dir() / "usage.json").write_text(json.dumps(
        {"keys": {"0123456789ab": {"requests": 4, "prompt_tokens": 30, "completion_tokens": 12}}}))
    agent = Agent(AgentConfig(snapshot=str(H200), metrics_port=0), store=store)
    try:
        assert agent.reconcile_once().error is None
        agent.reconcile_once()
    finally:
        agent.close()
    got = History(store).series(since_s=600)
    services = {f"svc.{s.name}.up" for s in stack.services}
    assert services <= set(got) and all(len(got[name]) == 2 for name in services)
    assert all(v == 0.0 for name in services for _, v in got[name])   # desired down: nothing runs
    assert got["acc.nvidia.0.memory_total_mib"][-1][1] == 143771
    assert got["gw.requests"][-1][1] == 4 and got["gw.key.0123456789ab.tokens"][-1][1] == 42


def test_per_model_usage_becomes_model_series(tmp_path):
    import json
    import time

    from appliance.agent.history import model_samples
    from appliance.gateway.keys import read_model_usage

    today = time.strftime("%Y-%m-%d", time.gmtime())
    (tmp_path / "usage.json").write_text(json.dumps({"keys": {}, "models": {
        "demo-chat": {"requests": 3, "prompt_tokens": 10, "completion_tokens": 20, "day": today, "day_requests": 2,
                      "day_tokens": 7},
        "old": {"requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "day": "2000-01-01", "day_tokens": 2},
        "broken": {"requests": "many"}, "not-a-dict": 5}}))
    usage = read_model_usage(tmp_path)
    assert set(usage) == {"demo-chat", "old"}
    assert (usage["demo-chat"].requests_today, usage["demo-chat"].tokens_today) == (2, 7)
    assert usage["old"].tokens_today == 0  # another day's count is not today's
    assert model_samples(usage) == {"gw.model.demo-chat.requests": 3.0, "gw.model.demo-chat.tokens": 30.0,
                                    "gw.model.old.requests": 1.0, "gw.model.old.tokens": 2.0}
    assert model_samples(None) == {} and read_model_usage(tmp_path / "missing") == {}


def test_per_user_usage_becomes_user_series():
    from appliance.agent.history import user_samples
    from appliance.gateway.users import UserUsage

    assert user_samples({"bob": UserUsage(requests=2, prompt_tokens=3, completion_tokens=4)}) == {
        "gw.user.bob.requests": 2.0, "gw.user.bob.tokens": 7.0}
    assert user_samples(None) == {}
