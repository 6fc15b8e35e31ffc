"""The README's main job against the real Docker engine: the demo stack end to end.

One stack (its own instance, data dir and free host ports; the templated test engine from its
catalog overlay, ``--models demo-chat,demo-embed``) is brought up once through the
CLI and then exercised in order: a chat request, labels and hardening, re-running init,
a changed plan, the agent repairing kill/rm, logs, down/up, and finally purge.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.stack_support import (
    REPO,
    TEMPLATED_MODELS,
    DemoStack,
    free_port_block,
    install_templated,
    run_cli,
    unique_instance,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    st = DemoStack(tmp_path_factory.mktemp("demo"), "t", ports_in_env=False)
    try:
        res = st.init_demo()
        yield {"instance": st.instance, "data": st.data_dir, "env": st.env, "gateway": st.gateway_port,
               "apps": st.app_port_base, "init": res, "stack": st}
    finally:
        st.purge()


@pytest.fixture
def in_demo(demo, monkeypatch):
    """Library calls in this process act on the demo instance."""
    demo["stack"].use_in_process(monkeypatch)
    return demo


def _containers(inst: str) -> dict[str, dict]:
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        return {c.service: {"id": c.id, "state": c.state, "health": c.health, "name": c.name}
                for c in d.list_containers(L.instance_filter(inst))}


def _post(url: str, body: dict, key: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_init_brings_the_demo_stack_up_and_says_how_to_call_it(demo):
    res = demo["init"]
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert f"http://127.0.0.1:{demo['gateway']}/v1" in out
    assert "appliance keys create" in out and "/chat/completions" in out
    assert "DEMO" in out
    states = _containers(demo["instance"])
    assert set(states) >= {"gateway", "knowledge-base", "customer-service", "code-assistant"}
    assert all(s["state"] == "running" and s["health"] == "healthy" for s in states.values()), states


def test_a_chat_request_through_the_gateway_answers(demo):
    res = run_cli("keys", "create", "--name", "tester", "--json", env=demo["env"])
    assert res.returncode == 0, res.stderr
    key = json.loads(res.stdout)["key"]
    url = f"http://127.0.0.1:{demo['gateway']}/v1/chat/completions"
    body = {"model": "demo-chat", "messages": [{"role": "user", "content": "What is the capital of Peru?"}]}
    code, answer = (wait_for(lambda: (lambda r: r if r[0] == 200 else None)(_post(url, body, key)), 5)
                    or _post(url, body, key))
    assert code == 200, answer
    assert '"What is the capital of Peru?"' in answer["choices"][0]["message"]["content"]
    assert _post(url, body, None)[0] == 401


def test_containers_are_labelled_scoped_and_not_privileged(demo):
    from appliance.runtime.docker_adapter import Docker

    inst = demo["instance"]
    with Docker() as d:
        for service, c in _containers(inst).items():
            info = d.inspect_container(c["id"])
            labels, host = info["Config"]["Labels"], info["HostConfig"]
            assert labels["appliance.managed"] == "true" and labels["appliance.instance"] == inst
            assert labels["appliance.service"] == service and labels["appliance.release"] == "1"
            assert labels["appliance.plan-hash"] and labels["appliance.spec-hash"]
            assert c["name"].startswith(f"appliance-{inst}-{service}-")
            assert host["Privileged"] is False and host["ReadonlyRootfs"] is True
            assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"]
            assert host["RestartPolicy"]["Name"] == "unless-stopped"
            assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
            assert host["Memory"] > 0
            assert host["PidsLimit"] > 0 and info["Config"]["User"] not in ("", "0", "root", "0:0")
            nets = set(info["NetworkSettings"]["Networks"])
            ports = host["PortBindings"] or {}
            if labels["appliance.kind"] == "inference":  # behind the gateway only (test_isolation_docker.py)
                assert ports == {} and nets == {f"appliance-{inst}-engines"}
                continue
            assert nets == ({f"appliance-{inst}-net", f"appliance-{inst}-engines"}
                            if labels["appliance.kind"] == "gateway" else {f"appliance-{inst}-net"})
            (binding,) = [b for v in ports.values() for b in v]
            assert binding["HostIp"] == "127.0.0.1"
        gw = d.inspect_container(_containers(inst)["gateway"]["id"])
        assert gw["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1",
                                                                  "HostPort": str(demo["gateway"])}]}


def test_the_state_holds_the_release_and_no_plaintext_key(in_demo):
    from appliance.runtime.stack import current_release

    rel = current_release()
    assert rel.id == 1 and rel.status == "active" and rel.plan.plan_hash
    raw = (in_demo["data"] / "state.db").read_bytes()
    key_file = in_demo["data"] / "apps" / "knowledge-base" / "secrets" / "api_key"
    key = key_file.read_text().strip()
    assert key.startswith("apk_") and key.encode() not in raw
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_rerunning_init_recreates_nothing(demo):
    before = _containers(demo["instance"])
    res = run_cli("init", "--demo", "--yes", "--gateway-port", str(demo["gateway"]),
                  "--app-port-base", str(demo["apps"]), env=demo["env"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "unchanged:" in res.stdout and "release 1 is active" in res.stdout
    assert {k: v["id"] for k, v in _containers(demo["instance"]).items()} == {k: v["id"] for k, v in before.items()}


def test_rerunning_init_without_its_options_keeps_them(demo):
    """The installer's --gateway-port/--app-port-base/--demo are recorded: a bare `init --yes`
    later keeps the endpoints and recreates nothing (before, it moved them back to 8080/8081+)."""
    before = _containers(demo["instance"])
    res = run_cli("init", "--yes", "--json", "-q", env=demo["env"])
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["endpoints"]["gateway"] == f"http://127.0.0.1:{demo['gateway']}/v1"
    assert out["site_changes"] == [] and {c["action"] for c in out["changes"]} <= {"keep"}
    assert {k: v["id"] for k, v in _containers(demo["instance"]).items()} == {k: v["id"] for k, v in before.items()}
    shown = json.loads(run_cli("config", "show", "--json", env=demo["env"]).stdout)
    assert shown["recorded"] and shown["site"]["gateway_port"] == demo["gateway"] and shown["site"]["demo"] is True
    # a flag given now is a change, said as such, and recorded
    res = run_cli("init", "--yes", "--dry-run", "--health-timeout", "45", env=demo["env"])
    assert res.returncode == 0 and "configuration: health_timeout_s: default -> 45.0" in res.stderr


def test_preflight_on_the_installed_box_counts_its_own_ports_as_free(demo):
    """The box's own gateway and apps hold their ports: `appliance preflight` must not fail on
    them (before, it failed on the box's own gateway port), while a stranger's port still fails."""
    import socket

    res = run_cli("preflight", "--json", env=demo["env"])
    report = json.loads(res.stdout)
    ports = next(r for r in report["rules"] if r["id"] == "ports")
    assert ports["status"] == "pass", ports
    assert demo["gateway"] in ports["details"]["checked"] and demo["apps"] in ports["details"]["checked"]
    res = run_cli("preflight", "--json", "--port", str(demo["gateway"]), env=demo["env"])
    assert next(r for r in json.loads(res.stdout)["rules"] if r["id"] == "ports")["status"] == "pass"
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        taken = stranger.getsockname()[1]
        res = run_cli("preflight", "--json", "--port", str(taken), env=demo["env"])
        rule = next(r for r in json.loads(res.stdout)["rules"] if r["id"] == "ports")
        assert rule["status"] == "fail" and str(taken) in rule["message"], rule


def test_dry_run_on_the_converged_stack_would_keep_everything(demo):
    res = run_cli("init", "--demo", "--dry-run", "--json", "--gateway-port", str(demo["gateway"]),
                  "--app-port-base", str(demo["apps"]), env=demo["env"])
    assert res.returncode == 0, res.stderr[-2000:]
    changes = json.loads(res.stdout)["changes"]
    assert changes and {c["action"] for c in changes} == {"keep"}


def test_a_changed_plan_replaces_only_the_affected_service(in_demo):
    from appliance.catalog import load_catalog
    from appliance.runtime import stack as S

    before = _containers(in_demo["instance"])
    rel = S.current_release()
    plan = rel.plan.model_copy(deep=True)
    target = next(s for s in plan.services if s.role == "embedding")
    target.env["DEMO_NOTE"] = "changed"
    since = int(time.time()) - 1
    from appliance.runtime.compose import compose

    stack = compose(plan, catalog=load_catalog(), settings=rel.stack.settings)
    release_id, result = S.apply_stack(stack, plan)
    # blue/green, from the engine's own event log: the new container is healthy before the old one goes
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        events = list(d.client.api.events(since=since, until=int(time.time()) + 1, decode=True,
                                          filters={"label": [f"appliance.instance={in_demo['instance']}",
                                                             f"appliance.service={target.name}"],
                                                   "type": "container"}))
    old_id = before[target.name]["id"]
    seq = [("old" if e["id"] == old_id else "new", e["status"]) for e in events]
    assert seq.index(("new", "start")) < seq.index(("new", "health_status: healthy")) < seq.index(("old", "kill")) \
        < seq.index(("old", "destroy")), seq
    assert release_id == rel.id + 1
    assert result.replaced == [target.name] and result.created == []
    after = _containers(in_demo["instance"])
    changed = [name for name in before if before[name]["id"] != after[name]["id"]]
    assert changed == [target.name]
    assert after[target.name]["state"] == "running" and after[target.name]["health"] == "healthy"
    assert S.current_release().id == release_id
    assert len(after) == len(before)  # the old container is gone


def test_agent_restores_killed_and_removed_containers(in_demo):
    from appliance.state.store import StateStore

    inst = in_demo["instance"]
    before = _containers(inst)
    chat = next(n for n in before if n.startswith("llm-"))
    subprocess.run(["docker", "kill", before[chat]["id"]], check=True, capture_output=True)
    subprocess.run(["docker", "rm", "-f", before["customer-service"]["id"]], check=True, capture_output=True)
    interval = 2.0
    metrics_port = free_port_block(1)
    env = {**os.environ, **in_demo["env"]}
    agent = subprocess.Popen([sys.executable, "-m", "appliance", "agent", "--interval", str(interval),
                              "--metrics-port", str(metrics_port)], env=env, cwd=str(REPO),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        start = time.monotonic()

        def restored():
            now = _containers(inst)
            return now if all(now.get(s, {}).get("state") == "running" for s in (chat, "customer-service")) else None

        now = wait_for(restored, 2 * interval + 1.5, 0.1)
        took = time.monotonic() - start
        assert now, f"not restored within two intervals: {_containers(inst)}"
        assert now[chat]["id"] == before[chat]["id"]                         # killed: started again
        assert now["customer-service"]["id"] != before["customer-service"]["id"]  # removed: recreated
        print(f"restored in {took:.2f}s (interval {interval}s)")
        text = wait_for(lambda: _metrics(metrics_port), 5)
        assert "appliance_agent_reconcile_total" in text and "process_resident_memory_bytes" in text
        assert 'appliance_service_repairs_total{action="recreate",service="customer-service"} 1.0' in text
    finally:
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=20)
    assert agent.returncode == 0, out.decode()[-2000:]
    events = StateStore(in_demo["data"] / "state.db").events(kind="agent", limit=50)
    msgs = [(e["service"], e["data"] and e["data"].get("action")) for e in events]
    assert (chat, "start") in msgs and ("customer-service", "recreate") in msgs
    assert any(e["message"] == "agent stopped" for e in events)


def _metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
            return text if "appliance_service_up" in text else None
    except OSError:
        return None


def test_logs_shows_the_service_output(demo):
    chat = next(n for n in _containers(demo["instance"]) if n.startswith("llm-"))
    res = run_cli("logs", chat, "--tail", "all", env=demo["env"])
    assert res.returncode == 0 and "DEMO, not a language model" in res.stdout
    res = run_cli("logs", "no-such-service", env=demo["env"])
    assert res.returncode == 2 and res.stderr.startswith("error: logs: no service named 'no-such-service'")


def test_held_services_stay_down_until_started_again(in_demo):
    from appliance.runtime import stack as S

    embed = next(n for n in _containers(in_demo["instance"]) if n.startswith("embed-"))
    before = _containers(in_demo["instance"])[embed]["id"]
    assert S.stop_services([embed], reason="training job 7 preempted it") == [embed]
    assert _containers(in_demo["instance"])[embed]["state"] == "exited"
    state = {s.name: s for s in S.list_services()}[embed]
    assert state.state == "exited" and state.degraded == "training job 7 preempted it"
    res = run_cli("agent", "--once", "--json", env=in_demo["env"])
    assert res.returncode == 0 and json.loads(res.stdout)["repairs"] == []
    with pytest.raises(Exception, match="no service named"):
        S.stop_services(["nope"])
    result = S.start_services([embed])
    assert [c.action for c in result.changes] == ["start"]
    after = _containers(in_demo["instance"])[embed]
    assert after["id"] == before and after["state"] == "running" and after["health"] == "healthy"
    assert {s.name: s for s in S.list_services()}[embed].degraded is None


def test_down_stops_and_the_agent_leaves_it_down_until_up(demo):
    before = _containers(demo["instance"])
    res = run_cli("down", env=demo["env"])
    assert res.returncode == 0, res.stderr
    assert all(c["state"] == "exited" for c in _containers(demo["instance"]).values())
    res = run_cli("agent", "--once", "--json", env=demo["env"])
    assert res.returncode == 0 and json.loads(res.stdout)["repairs"] == []
    res = run_cli("up", env=demo["env"])
    assert res.returncode == 0, res.stderr
    after = _containers(demo["instance"])
    assert {k: v["id"] for k, v in after.items()} == {k: v["id"] for k, v in before.items()}
    assert all(c["state"] == "running" and c["health"] == "healthy" for c in after.values())


def test_down_purge_leaves_nothing_of_ours(demo):
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    res = run_cli("down", "--purge", env=demo["env"])  # no terminal: refuses without --yes
    assert res.returncode == 2 and "--yes" in res.stderr
    res = run_cli("down", "--purge", "--yes", env=demo["env"])
    assert res.returncode == 0, res.stderr
    with Docker() as d:
        flt = L.instance_filter(demo["instance"])
        assert d.list_containers(flt) == []
        assert d.list_networks(flt) == []
        assert d.list_volumes(flt) == []
    res = run_cli("up", env=demo["env"])
    assert res.returncode == 2 and "appliance init" in res.stderr


def test_dry_run_on_a_fresh_instance_lists_every_change_and_changes_nothing(tmp_path):
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    inst = unique_instance("t")
    data = tmp_path / "fresh"
    install_templated(data)
    res = run_cli("init", "--demo", "--dry-run", "--json", "--models", TEMPLATED_MODELS,
                  env={"APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(data)})
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["dry_run"] is True and out["release"] is None
    actions = {(c["action"], c["target"]) for c in out["changes"]}
    assert ("create-network", f"appliance-{inst}-net") in actions
    assert ("create-network", f"appliance-{inst}-engines") in actions
    assert any(a == "write-config" and t.endswith("gateway/upstream_keys.json") for a, t in actions)
    for svc in out["stack"]["services"]:
        assert ("create", svc["name"]) in actions
    assert any(a == "write-config" and t.endswith("routes.json") for a, t in actions)
    assert any(a == "write-config" and t.endswith("knowledge-base/secrets/api_key") for a, t in actions)
    assert [s["name"] for s in out["plan"]["services"]] == [s["name"] for s in out["stack"]["services"]
                                                              if s["kind"] == "inference"]
    with Docker() as d:
        assert d.list_containers(L.instance_filter(inst)) == [] and d.list_networks(L.instance_filter(inst)) == []
    assert not (data / "state.db").exists() and not (data / "gateway" / "routes.json").exists()
    human = run_cli("init", "--demo", "--dry-run", "--models", TEMPLATED_MODELS,
                    env={"APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(data)})
    assert "DRY RUN: nothing was changed" in human.stdout and "changes it would make" in human.stdout
