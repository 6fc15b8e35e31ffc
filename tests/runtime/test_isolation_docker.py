"""Issue 14 items 2 and 6 on the real Docker engine: engines reachable only through the gateway,
every container of ours least-privileged.

One templated demo stack (tests/stack_support.py: its own instance, data dir and ports, purged
afterwards) brought up through the CLI, then attacked from this host and from an app container:
an engine's address answers nothing without its secret, the gateway answers; ``docker inspect``
of every container shows its account, read-only root, no-new-privileges, no capabilities and
pids/memory bounds, engines on the internal network only. A stack recorded before the engine
network converges to the new shape (tests/runtime/conftest.py's ``instance``: purged after).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.stack_support import DemoStack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OUR_KINDS = ("inference", "gateway", "app")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    st = DemoStack(tmp_path_factory.mktemp("isolation"), "iso")
    try:
        res = st.init_demo("--quiet")
        assert res.returncode == 0, f"init failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        yield st
    finally:
        st.purge(down_first=True)


def _containers(st) -> dict[str, dict]:
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        return {c.service: d.inspect_container(c.id) for c in d.list_containers(L.instance_filter(st.instance))}


def _http(url: str, body: dict | None = None, key: str | None = None, timeout_s: float = 5) -> int | None:
    """The status a request gets, or None when nothing answers (refused, unreachable, timed out)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url, headers=headers, data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code
    except OSError:
        return None


CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "Who may call you?"}]}


def _engine_base(info: dict, network: str) -> str:
    """``http://<its address on network>:<its port>`` of an engine container (each has its own port)."""
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    return f"http://{info['NetworkSettings']['Networks'][network]['IPAddress']}:{env['PORT']}"


def test_an_engine_answers_nothing_without_its_secret_and_the_gateway_answers(stack):
    from appliance.runtime.compose import engine_secrets_dir

    engines_net = f"appliance-{stack.instance}-engines"
    infos = _containers(stack)
    engines = {name: info for name, info in infos.items() if info["Config"]["Labels"]["appliance.kind"] == "inference"}
    assert engines
    upstream = json.loads((stack.data_dir / "gateway" / "upstream_keys.json").read_text())["services"]
    for name, info in engines.items():
        base = _engine_base(info, engines_net)
        assert _http(f"{base}/health") == 200                              # the probes' path stays open
        for path, body in (("/v1/models", None), ("/v1/chat/completions", CHAT)):
            assert _http(base + path, body) in (401, None), (name, path)
            assert _http(base + path, body, key="not-the-secret") in (401, None), (name, path)
            # another engine's secret does not open it either
            other = next((s for n, s in upstream.items() if n != name), None)
            if other:
                assert _http(base + path, body, key=other) in (401, None), (name, path)
        secret = (engine_secrets_dir(name, stack.data_dir) / "api_key").read_text().strip()
        assert upstream[name] == secret
        assert _http(f"{base}/v1/models", key=secret) == 200                # it is the secret the gateway sends
    # through the gateway, with a user's key, the same engines answer
    key = json.loads(stack.cli("keys", "create", "--name", "iso", "--json").stdout)["key"]
    url = f"{stack.gateway}/v1/chat/completions"
    assert wait_for(lambda: _http(url, CHAT, key=key) == 200, 10), _http(url, CHAT, key=key)
    assert _http(f"{stack.gateway}/v1/models", key=key) == 200


def test_an_app_cannot_reach_an_engine_but_reaches_the_gateway(stack):
    """The apps are on the front network only: an engine's name does not even resolve there."""
    infos = _containers(stack)
    engine = next(n for n, i in infos.items() if i["Config"]["Labels"]["appliance.kind"] == "inference")
    port = dict(e.split("=", 1) for e in infos[engine]["Config"]["Env"])["PORT"]
    probe = ("import socket,sys\n"
             "def reach(h,p):\n"
             " try:socket.create_connection((h,p),3).close();return 'yes'\n"
             " except OSError as e:return type(e).__name__\n"
             "print(reach(sys.argv[1],int(sys.argv[2])), reach('gateway',8080))")
    out = subprocess.run(["docker", "exec", infos["customer-service"]["Id"], "python3", "-c", probe, engine, port],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    to_engine, to_gateway = out.stdout.split()
    assert to_engine != "yes" and to_gateway == "yes", out.stdout


def test_every_container_of_ours_is_least_privileged_and_engines_are_internal(stack):
    from appliance.runtime import pyrt
    from appliance.runtime.docker_adapter import Docker

    inst = stack.instance
    front, engines_net = f"appliance-{inst}-net", f"appliance-{inst}-engines"
    accounts = {"gateway": pyrt.GATEWAY_UID, "app": pyrt.APP_UID, "inference": pyrt.ENGINE_UID}
    infos = _containers(stack)
    assert {i["Config"]["Labels"]["appliance.kind"] for i in infos.values()} == set(OUR_KINDS)
    for name, info in infos.items():
        kind, host = info["Config"]["Labels"]["appliance.kind"], info["HostConfig"]
        uid = accounts[kind]
        assert info["Config"]["User"] == f"{uid}:{uid}", name                 # not root, not nobody
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"] and not host["CapAdd"], name
        assert "no-new-privileges:true" in host["SecurityOpt"] and host["Privileged"] is False, name
        assert host["PidsLimit"] and host["PidsLimit"] > 0 and host["Memory"] > 0, name
        nets = set(info["NetworkSettings"]["Networks"])
        if kind == "inference":
            assert nets == {engines_net} and not host["PortBindings"] and not info["NetworkSettings"]["Ports"], name
        elif kind == "gateway":
            assert nets == {front, engines_net}, name
        else:
            assert nets == {front}, name
    with Docker() as d:
        networks = {n["name"]: n for n in d.list_networks([f"appliance.instance={inst}"])}
    assert networks[engines_net]["internal"] is True and networks[front]["internal"] is False
    # the processes inside run as those accounts too
    for name in ("gateway", "knowledge-base"):
        out = subprocess.run(["docker", "exec", infos[name]["Id"], "python3", "-c", "import os;print(os.getuid())"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == str(accounts[infos[name]["Config"]["Labels"]["appliance.kind"]]), out.stderr


def test_secrets_are_files_of_their_readers_and_nowhere_else(stack):
    """Engine secrets: 0600 files of the engine account, the gateway's copy 0600 of the gateway's;
    no secret in any container's inspect data (env, args, labels), routes.json or the state."""
    import os

    from appliance.runtime import pyrt

    gw_dir = stack.data_dir / "gateway"
    upstream = gw_dir / "upstream_keys.json"
    secrets = list(json.loads(upstream.read_text())["services"].values())
    assert secrets and all(len(s) >= 43 for s in secrets)
    st = upstream.stat()
    assert (st.st_mode & 0o777) == 0o600 and (st.st_uid if os.geteuid() == 0 else pyrt.GATEWAY_UID) == pyrt.GATEWAY_UID
    for f in (stack.data_dir / "engines").glob("*/secrets/api_key"):
        st = f.stat()
        assert (st.st_mode & 0o777) == 0o600
        assert os.geteuid() != 0 or (st.st_uid, st.st_gid) == (pyrt.ENGINE_UID, pyrt.ENGINE_UID)
    inspected = json.dumps(_containers(stack))
    places = {"docker inspect": inspected, "routes.json": (gw_dir / "routes.json").read_text(),
              "state": (stack.data_dir / "state.db").read_bytes().decode("latin-1")}
    for where, text in places.items():
        assert not any(s in text for s in secrets), where
    # the knowledge base writes its data volume (handed to the app account)
    kb = _containers(stack)["knowledge-base"]["Id"]
    out = subprocess.run(["docker", "exec", kb, "python3", "-c",
                          "import os;open('/data/.probe','w').write('x');print(os.stat('/data').st_uid)"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == str(pyrt.APP_UID), out.stderr


def test_a_lost_secret_is_made_again_and_only_its_engine_is_replaced(stack):
    """Secrets are kept across runs; one whose file is lost is made again by the next init, the
    gateway gets it, and that engine's container (which read the old one) is replaced -- nothing else."""
    from appliance.runtime.compose import engine_secrets_dir

    infos = _containers(stack)
    before = {n: i["Id"] for n, i in infos.items()}
    engine = sorted(n for n, i in infos.items() if i["Config"]["Labels"]["appliance.kind"] == "inference")[0]
    key_file = engine_secrets_dir(engine, stack.data_dir) / "api_key"
    old_secret = key_file.read_text().strip()
    key_file.unlink()
    res = stack.cli("init", "--yes", "--json", "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    changes = {(c["action"], c["target"]) for c in json.loads(res.stdout)["changes"]}
    assert ("replace", engine) in changes and ("write-config", str(key_file)) in changes
    after = {n: i["Id"] for n, i in _containers(stack).items()}
    assert [n for n in before if before[n] != after[n]] == [engine]
    new_secret = key_file.read_text().strip()
    assert new_secret != old_secret
    upstream = json.loads((stack.data_dir / "gateway" / "upstream_keys.json").read_text())["services"]
    assert upstream[engine] == new_secret
    base = _engine_base(_containers(stack)[engine], f"appliance-{stack.instance}-engines")
    assert _http(f"{base}/v1/models", key=new_secret) == 200 and _http(f"{base}/v1/models", key=old_secret) == 401
    key = json.loads(stack.cli("keys", "create", "--name", "iso-after", "--json").stdout)["key"]
    model = "demo-chat" if engine.startswith("llm-") else "demo-embed"
    body = CHAT if model == "demo-chat" else {"model": model, "input": "hello"}
    path = "/v1/chat/completions" if model == "demo-chat" else "/v1/embeddings"
    assert wait_for(lambda: _http(stack.gateway + path, body, key=key) == 200, 10)


def test_the_agent_recreates_a_removed_engine_on_the_engine_network_with_its_secret(stack):
    infos = _containers(stack)
    engine = next(n for n, i in infos.items() if i["Config"]["Labels"]["appliance.kind"] == "inference")
    subprocess.run(["docker", "rm", "-f", infos[engine]["Id"]], check=True, capture_output=True)
    res = stack.cli("agent", "--once", "--json")
    assert res.returncode == 0, res.stderr
    assert {"service": engine, "action": "recreate", "ok": True} in json.loads(res.stdout)["repairs"]
    info = _containers(stack)[engine]
    assert set(info["NetworkSettings"]["Networks"]) == {f"appliance-{stack.instance}-engines"}
    base = _engine_base(info, f"appliance-{stack.instance}-engines")
    assert wait_for(lambda: _http(f"{base}/health") == 200, 15)
    assert _http(f"{base}/v1/models") in (401, None)


def test_a_stack_recorded_before_the_engine_network_converges_to_the_new_shape(instance, docker):
    """A release from before (every service on the one stack network, running as root): applying the
    new shape replaces the engine onto the internal network as its account, blue/green, and the
    old container goes; applying the old record again (a rollback) brings that shape back."""
    from appliance.runtime import labels as L
    from appliance.runtime import pyrt
    from appliance.runtime.converge import Converger
    from appliance.runtime.images import ImageEnsurer
    from appliance.runtime.models import HealthSpec, ServiceSpec, StackSpec

    ensured = ImageEnsurer(docker).ensure("appliance/demo-engine:0.1.0", "demo/engine")
    old_svc = ServiceSpec(
        name="llm-old", kind="inference", image="appliance/demo-engine:0.1.0", build="demo/engine",
        content_hash=ensured.content_hash, image_ref=ensured.ref, port=8000, aliases=["llm-old"],
        command=["--host", "0.0.0.0", "--port", "8000", "--served-model-name", "llm-old", "--role", "chat"],
        env={"PORT": "8000"}, tmpfs={"/tmp": "rw,size=64m"}, hardened=True, memory_limit_mib=256, demo=True,
        served_models=["llm-old"], health=HealthSpec(port=8000, interval_s=1, start_period_s=30, wait_timeout_s=60))
    old = StackSpec(instance=instance, network=L.network_name(instance), services=[old_svc]).with_hashes()
    assert "engine_network" not in json.loads(old.model_dump_json(exclude_none=True))
    Converger(docker, old, release=1).apply()
    (before,) = docker.list_containers(L.instance_filter(instance))
    assert set(docker.inspect_container(before.id)["NetworkSettings"]["Networks"]) == {L.network_name(instance)}

    engines = L.engine_network_name(instance)
    new_svc = old_svc.model_copy(update={"networks": [engines], "user": f"{pyrt.ENGINE_UID}:{pyrt.ENGINE_UID}"})
    new = StackSpec(instance=instance, network=L.network_name(instance), engine_network=engines,
                    services=[new_svc]).with_hashes()
    result = Converger(docker, new, release=2).apply()
    assert result.replaced == ["llm-old"]
    assert ("create-network", engines) in {(c.action, c.target) for c in result.changes}
    (after,) = docker.list_containers(L.instance_filter(instance))
    info = docker.inspect_container(after.id)
    assert after.id != before.id and set(info["NetworkSettings"]["Networks"]) == {engines}
    assert info["Config"]["User"] == f"{pyrt.ENGINE_UID}:{pyrt.ENGINE_UID}"
    addr = docker.container_address(after.id, new.network)    # a caller naming the front network finds it
    assert addr.ip == info["NetworkSettings"]["Networks"][engines]["IPAddress"]
    # a rollback to the recorded old stack: its definition hashes as it did, so it is recreated as it was
    assert old.hash_of("llm-old") == old_svc.spec_hash()
    Converger(docker, old, release=1).apply()
    (back,) = docker.list_containers(L.instance_filter(instance))
    assert set(docker.inspect_container(back.id)["NetworkSettings"]["Networks"]) == {L.network_name(instance)}


def test_the_agent_probes_an_engine_on_the_engine_network_from_outside(instance):
    """A vendor-like engine (``http`` probe: no check inside) on the internal engine network only:
    the agent, which names the stack's front network, still finds and probes it from this host."""
    from appliance.agent.loop import Agent, AgentConfig
    from appliance.planner.models import Plan
    from appliance.runtime import labels as L
    from appliance.runtime import releases
    from appliance.runtime.docker_adapter import Docker
    from appliance.runtime.images import ImageEnsurer
    from appliance.runtime.models import HealthSpec, ServiceSpec, StackSpec
    from appliance.runtime.stack import list_services
    from tests.support import NODES

    with Docker() as d:
        ensured = ImageEnsurer(d).ensure("appliance/demo-engine:0.1.0", "demo/engine")
    engines = L.engine_network_name(instance)
    svc = ServiceSpec(
        name="llm-vendorlike", kind="inference", image="appliance/demo-engine:0.1.0", build="demo/engine",
        content_hash=ensured.content_hash, image_ref=ensured.ref, port=8000, aliases=["llm-vendorlike"],
        command=["--port", "8000", "--served-model-name", "llm-vendorlike"], env={"PORT": "8000"},
        tmpfs={"/tmp": "rw,size=64m"}, hardened=True, memory_limit_mib=256, networks=[engines], demo=True,
        health=HealthSpec(port=8000, interval_s=1, timeout_s=2, start_period_s=30, wait_timeout_s=60, probe="http"))
    stack = StackSpec(instance=instance, network=L.network_name(instance), engine_network=engines,
                      services=[svc]).with_hashes()
    store = releases.open_store()
    rid = releases.begin(store, instance, Plan(), stack, source="test")
    releases.commit(store, instance, rid)
    agent = Agent(AgentConfig(snapshot=str(NODES / "cpu-only"), metrics_port=0, interval_s=1), store=store)
    try:
        assert [r["action"] for r in agent.reconcile_once().repairs] == ["recreate"]
        healthy = wait_for(lambda: agent.reconcile_once() and {s.name: s for s in list_services(
            agent.docker, store, instance)}["llm-vendorlike"].health == "healthy", 20, 0.5)
        assert healthy
        (c,) = agent.docker.list_containers(L.instance_filter(instance))
        assert set(agent.docker.inspect_container(c.id)["NetworkSettings"]["Networks"]) == {engines}
    finally:
        agent.close()
