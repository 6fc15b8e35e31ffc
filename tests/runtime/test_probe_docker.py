"""Health probes on the real engine: an ``http``-probe service has no Docker health check and is
probed from outside -- by converge while it waits, by the agent every pass -- and a ``curl`` probe
is the container's Docker health check.

The engine is the locally built templated test engine (images/demo/engine, no weights) with the
probe forced in the ServiceSpec: it stands in for a vendor image without python3. Everything
runs under a unique instance (the ``instance`` fixture purges its containers and network); the
engine image is the content-tagged build the other docker tests share (kept, like theirs).
"""

from __future__ import annotations

import time

import pytest

from appliance.runtime import labels as L
from appliance.runtime.compose import curl_test
from appliance.runtime.converge import Converger, ServiceUnhealthy, container_spec
from appliance.runtime.models import HealthSpec, ServiceSpec, Settings, StackSpec
from appliance.runtime.probe import http_probe

pytestmark = [pytest.mark.docker]

ENGINE_IMAGE = "appliance/demo-engine:0.1.0"
ENGINE_BUILD = "demo/engine"


@pytest.fixture(scope="module")
def engine_image():
    from appliance.runtime.docker_adapter import Docker
    from appliance.runtime.images import ImageEnsurer

    with Docker() as d:
        ensured = ImageEnsurer(d).ensure(ENGINE_IMAGE, ENGINE_BUILD)
    return ensured.ref, ensured.content_hash


def _engine(image, name: str, probe: str, *, env: dict | None = None, start_period_s: float = 30.0) -> ServiceSpec:
    ref, content_hash = image
    return ServiceSpec(
        name=name, kind="inference", image=ENGINE_IMAGE, build=ENGINE_BUILD, content_hash=content_hash, image_ref=ref,
        command=["--host", "0.0.0.0", "--port", "8000", "--served-model-name", name, "--role", "chat"],
        env={"PORT": "8000", **(env or {})}, port=8000, aliases=[name], tmpfs={"/tmp": "rw,size=64m"},
        hardened=True, memory_limit_mib=256, served_models=[name], demo=True,
        health=HealthSpec(port=8000, path="/health", interval_s=1, timeout_s=2, start_period_s=start_period_s,
                          wait_timeout_s=60, probe=probe))


def _stack(instance: str, *services: ServiceSpec, health_timeout_s: float | None = None) -> StackSpec:
    return StackSpec(instance=instance, network=L.network_name(instance), services=list(services),
                     settings=Settings(health_timeout_s=health_timeout_s)).with_hashes()


def test_converge_waits_for_the_outside_probe_of_a_container_without_a_health_check(engine_image, instance, docker):
    # the engine listens only after 3 s: Docker reports no health at all, so only the probe can say
    svc = _engine(engine_image, "llm-outside", "http", env={"DEMO_START_DELAY_S": "3"})
    stack = _stack(instance, svc)
    result = Converger(docker, stack, release=1).apply()
    assert result.created == ["llm-outside"] and result.waiting_s >= 2.5
    (c,) = docker.list_containers(L.instance_filter(instance))
    info = docker.inspect_container(c.id)
    assert info["Config"]["Healthcheck"] == {"Test": ["NONE"]}      # nothing runs inside the container
    assert "Health" not in info["State"] and c.health is None
    assert c.labels[L.PROBE] == "http"
    addr = docker.container_address(c.id, stack.network)
    assert addr.state == "running" and addr.ip and addr.started_ts
    assert http_probe(addr.ip, 8000, "/health", 2).ok                # what converge saw


def test_an_engine_the_outside_probe_never_finds_healthy_is_undone(engine_image, instance, docker):
    svc = _engine(engine_image, "llm-broken", "http", env={"DEMO_FAIL_HEALTH": "1"}, start_period_s=1)
    stack = _stack(instance, svc, health_timeout_s=4)
    with pytest.raises(ServiceUnhealthy) as err:
        Converger(docker, stack, release=1).apply()
    msg = err.value.message
    assert "did not become healthy within 4s (health: unhealthy, last check from this host: HTTP 503 from http://" \
           in msg and ":8000/health" in msg
    assert any("serving llm-broken" in line for line in err.value.log_lines)   # the engine's own output
    assert docker.list_containers(L.instance_filter(instance)) == []          # the change was undone


def test_a_curl_probe_is_the_container_s_docker_health_check(engine_image, instance, docker):
    """Created, not started (our image has no curl): what Docker is told to run, and how often."""
    svc = _engine(engine_image, "llm-curl", "curl")
    stack = _stack(instance, svc)
    spec = container_spec(svc, stack, 1)
    docker.ensure_network(stack.network, {**L.base_labels(instance), L.SERVICE: "network"})
    cid = docker.replace_container(spec, start=False)
    hc = docker.inspect_container(cid)["Config"]["Healthcheck"]
    assert hc["Test"] == curl_test(8000, "/health", 2) == [
        "CMD", "curl", "-fsS", "-o", "/dev/null", "--max-time", "2", "http://127.0.0.1:8000/health"]
    assert (hc["Interval"], hc["Timeout"], hc["StartPeriod"], hc["Retries"]) == (10**9, 2 * 10**9, 30 * 10**9, 3)
    assert docker.inspect_container(cid)["Config"]["Labels"][L.PROBE] == "curl"


def test_the_agent_probes_from_outside_and_restarts_an_engine_that_stops_answering(engine_image, instance):
    from prometheus_client import generate_latest

    from appliance.agent.loop import Agent, AgentConfig
    from appliance.planner.models import Plan
    from appliance.runtime import releases, views
    from appliance.runtime.stack import list_services
    from tests.support import NODES

    good = _engine(engine_image, "llm-good", "http")
    bad = _engine(engine_image, "llm-bad", "http", env={"DEMO_FAIL_HEALTH": "1"}, start_period_s=0)
    stack = _stack(instance, good, bad)
    store = releases.open_store()
    rid = releases.begin(store, instance, Plan(), stack, source="test")
    releases.commit(store, instance, rid)
    agent = Agent(AgentConfig(snapshot=str(NODES / "cpu-only"), metrics_port=0, interval_s=1, unhealthy_passes=2),
                  store=store)
    try:
        first = agent.reconcile_once()     # nothing runs yet: both are created
        assert first.error is None and sorted(r["action"] for r in first.repairs) == ["recreate", "recreate"]
        restarts = []
        for _ in range(12):                # bounded: the restart comes on the 2nd unhealthy pass
            time.sleep(0.5)
            report = agent.reconcile_once()
            assert report.error is None
            restarts += [r for r in report.repairs if r["action"] == "restart"]
            states = {s.name: s for s in list_services(agent.docker, store, instance)}
            if restarts and states["llm-good"].health == "healthy":
                break
        assert restarts and restarts[0] == {"service": "llm-bad", "action": "restart", "ok": True}
        assert all(r["service"] == "llm-bad" for r in restarts)         # the answering one is left alone
        event = next(e for e in store.events(kind="agent", service="llm-bad") if "restarting" in e["message"])
        assert "last check from outside: HTTP 503 from http://" in event["message"]
        # readers (list_services, appliance status) take the agent's probe as the health of the container
        assert states["llm-good"].probe == "http" and states["llm-good"].health == "healthy"
        record = views.probe_records(store, instance)["llm-good"]
        assert record["container"] == states["llm-good"].container_id and record["detail"].startswith("HTTP 200")
        assert 'appliance_service_healthy{service="llm-good"} 1.0' in generate_latest(agent.metrics.registry).decode()
    finally:
        agent.close()
