"""Health probes that fit the image (no Docker): which check each probe kind gives a container,
where the probe kind comes from (catalog -> plan -> stack), the outside HTTP probe against
loopback servers that answer well, badly or not at all, and converge's wait on it.

Why: a vendor image may ship neither python3 nor curl (llama.cpp's ``server`` image has curl and
no python3), so a python3 health check there never turns healthy. Docker tests of the same:
test_probe_docker.py.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest

from appliance.catalog.schema import EngineImage
from appliance.planner.models import HealthCheck, PlannedService
from appliance.runtime import labels as L
from appliance.runtime.compose import NO_HEALTHCHECK, compose, curl_test, health_test, healthcheck, inference_service
from appliance.runtime.converge import Converger, ServiceUnhealthy, _Pending, container_spec
from appliance.runtime.docker_adapter import ContainerAddress, ContainerInfo
from appliance.runtime.models import HealthSpec, ServiceSpec, Settings, StackSpec
from appliance.runtime.probe import MAX_HEADER_BYTES, health_state, http_probe

OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}"
BUSY_ANSWER = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"


# ---- a loopback server that answers as told --------------------------------------------------------
@contextmanager
def loopback(answer, *, max_conns: int = 50):
    """A server on 127.0.0.1 (bounded: at most ``max_conns`` connections, 0.2 s accept polls);
    ``answer(conn, n)`` handles the n-th connection (its request already read). Yields
    (port, list of request heads)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()
    requests: list[bytes] = []

    def serve():
        for n in range(max_conns):
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                    break
                except socket.timeout:
                    continue
            else:
                return
            with conn:
                conn.settimeout(2)
                head = b""
                try:
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        data = conn.recv(4096)
                        if not data:
                            break
                        head += data
                    requests.append(head)
                    answer(conn, n)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1], requests
    finally:
        stop.set()
        thread.join(5)
        srv.close()


def _send(data: bytes):
    return lambda conn, n: conn.sendall(data)


# ---- the probe -------------------------------------------------------------------------------------
def test_200_is_healthy_and_the_request_is_a_plain_get():
    with loopback(_send(OK_ANSWER)) as (port, requests):
        res = http_probe("127.0.0.1", port, "/health", 2)
    assert res.ok and res.status == 200 and res.detail == "HTTP 200"
    assert res.text() == f"HTTP 200 from http://127.0.0.1:{port}/health"
    assert requests[0].startswith(b"GET /health HTTP/1.1\r\n") and f"Host: 127.0.0.1:{port}".encode() in requests[0]


def test_503_and_other_statuses_are_not_healthy():
    with loopback(_send(BUSY_ANSWER)) as (port, _):
        res = http_probe("127.0.0.1", port, "/health", 2)
    assert not res.ok and res.status == 503 and res.detail == "HTTP 503"
    with loopback(_send(b"HTTP/1.1 204 No Content\r\n\r\n")) as (port, _):
        assert http_probe("127.0.0.1", port, "/health", 2).status == 204


def test_a_server_that_never_answers_costs_the_timeout_and_no_more():
    release = threading.Event()
    with loopback(lambda conn, n: release.wait(5)) as (port, _):
        start = time.monotonic()
        res = http_probe("127.0.0.1", port, "/health", 0.5)
        took = time.monotonic() - start
        release.set()
    assert not res.ok and res.status is None and res.detail == "no answer within 0.5s"
    assert 0.4 < took < 2


def test_a_trickling_server_is_bounded_by_one_deadline():
    """A byte every 0.1 s never finishes the headers: the whole probe still ends at its timeout."""
    def trickle(conn, n):
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(50):
            conn.sendall(b"X")
            time.sleep(0.1)

    with loopback(trickle) as (port, _):
        start = time.monotonic()
        res = http_probe("127.0.0.1", port, "/health", 0.6)
        took = time.monotonic() - start
    assert not res.ok and "no answer within" in res.detail and took < 2


def test_garbage_and_oversized_answers_are_failures_not_errors():
    with loopback(_send(b"SSH-2.0-OpenSSH_9.6\r\n")) as (port, _):
        res = http_probe("127.0.0.1", port, "/health", 2)
    assert not res.ok and res.status is None and res.detail.startswith("not an HTTP answer")
    huge = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * (4 * MAX_HEADER_BYTES) + b"\r\n\r\n"
    with loopback(_send(huge)) as (port, _):
        res = http_probe("127.0.0.1", port, "/health", 2)
    assert not res.ok and "headers exceed 16 KiB" in res.detail
    with loopback(lambda conn, n: None) as (port, _):   # accepts, reads, closes without a word
        res = http_probe("127.0.0.1", port, "/health", 2)
    assert not res.ok and res.detail == "the connection closed without an answer"


def test_a_big_body_is_never_read():
    body = b"x" * (8 << 20)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    with loopback(lambda conn, n: conn.sendall(answer + body)) as (port, _):
        res = http_probe("127.0.0.1", port, "/health", 2)
    assert res.ok


def test_connection_refused():
    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        res = http_probe("127.0.0.1", port, "/health", 1)
    assert not res.ok and res.status is None and res.detail == "connection refused"


def test_health_state_follows_docker_start_period():
    assert health_state(True, 0, 60) == "healthy"
    assert health_state(False, 10, 60) == "starting"
    assert health_state(False, 61, 60) == "unhealthy"


# ---- the container's health check per probe kind ------------------------------------------------------
def _svc(probe: str, **kw) -> ServiceSpec:
    return ServiceSpec(name="llm-x", kind="inference", image="vendor/engine:1", port=8000,
                       health=HealthSpec(port=8000, path="/health", timeout_s=4, probe=probe), **kw)


def test_each_probe_kind_gives_its_healthcheck():
    py = healthcheck(_svc("python3").health)
    assert py["test"] == health_test(8000, "/health") and py["test"][:2] == ["CMD", "python3"]
    assert py["retries"] == 3 and py["timeout_s"] == 4
    curl = healthcheck(_svc("curl").health)
    assert curl["test"] == ["CMD", "curl", "-fsS", "-o", "/dev/null", "--max-time", "4",
                            "http://127.0.0.1:8000/health"] == curl_test(8000, "/health", 4)
    assert curl["interval_s"] == 5.0 and curl["start_period_s"] == 600.0
    # http: nothing runs inside; ["NONE"] also switches off a HEALTHCHECK the image declares
    assert healthcheck(_svc("http").health) == {"test": ["NONE"]} and NO_HEALTHCHECK == ["NONE"]


def test_container_spec_carries_the_probe_as_check_and_label():
    for probe in ("python3", "curl", "http"):
        svc = _svc(probe)
        stack = StackSpec(instance="unit", network="appliance-unit-net", services=[svc]).with_hashes()
        spec = container_spec(svc, stack, 1)
        assert spec.labels[L.PROBE] == probe
        assert spec.healthcheck == healthcheck(svc.health)
    curl = container_spec(_svc("curl"), StackSpec(instance="u", network="n", services=[_svc("curl")]), 1)
    assert "python3" not in curl.healthcheck["test"] and curl.healthcheck["test"][1] == "curl"


def test_the_adapter_sends_none_without_timings():
    """Docker is given {"Test": ["NONE"]} for an http probe (no interval/retries to misread)."""
    from appliance.runtime.docker_adapter import ContainerCreate, Docker

    class Api:
        hooks = {"response": []}

        def create_host_config(self, **kw):
            return kw

        def create_networking_config(self, cfg):
            return cfg

        def create_endpoint_config(self, **kw):
            return kw

        def create_container(self, **kw):
            self.kw = kw
            return {"Id": "c1"}

    class Client:
        api = Api()

    docker = Docker(client=Client())
    docker.create_container(ContainerCreate(name="n", image="i", labels={}, healthcheck={"test": ["NONE"]}))
    assert Client.api.kw["healthcheck"] == {"Test": ["NONE"]}
    docker.create_container(ContainerCreate(name="n", image="i", labels={}, healthcheck=healthcheck(
        _svc("curl").health)))
    hc = Client.api.kw["healthcheck"]
    assert hc["Test"][1] == "curl" and hc["Timeout"] == 4_000_000_000 and hc["Retries"] == 3


def test_python3_probe_keeps_the_spec_hash_of_definitions_made_before_probes():
    import hashlib
    import json

    svc = _svc("python3")
    before = svc.model_dump(mode="json", exclude={"depends_on"})
    del before["health"]["probe"]
    for later in ("recipe", "pids_limit", "user", "networks", "tls"):  # nor had it these fields
        del before[later]
    assert svc.spec_hash() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert _svc("http").spec_hash() != svc.spec_hash() != _svc("curl").spec_hash()
    # a stack recorded before the field validates as python3 (what its containers run)
    old = ServiceSpec.model_validate({**svc.model_dump(mode="json"), "health": before["health"]})
    assert old.health.probe == "python3" and old.spec_hash() == svc.spec_hash()


# ---- where the probe kind comes from ---------------------------------------------------------------------
def test_probe_for_explicit_else_python3_for_our_builds_else_http():
    assert HealthCheck.probe_for(None, "images/engines/llamacpp") == "python3"
    assert HealthCheck.probe_for(None, None) == "http"
    assert HealthCheck.probe_for("curl", None) == "curl"
    assert HealthCheck.probe_for("http", "images/x") == "http"
    assert EngineImage(image="ghcr.io/ggml-org/llama.cpp:server", version="b1", probe="curl").probe == "curl"
    assert EngineImage(image="vendor/x:1", version="1").probe is None
    with pytest.raises(ValueError):
        EngineImage(image="vendor/x:1", version="1", probe="wget")


def test_plans_carry_the_probe_of_the_chosen_image():
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from tests.support import H200, NODES

    cat = load_catalog()
    for node in (H200, NODES / "cpu-only"):
        plan = make_plan(detect(snapshot=str(node), usage=False), cat)
        stack = compose(plan, catalog=cat, instance="unit")
        for ps in plan.services:
            image = next(i for i in cat.engines[ps.engine].images if i.image == ps.image)
            want = HealthCheck.probe_for(image.probe, image.build or cat.engines[ps.engine].build)
            assert ps.health.probe == want
            assert stack.service(ps.name).health.probe == want
        for svc in stack.services:
            if svc.kind != "inference":
                assert svc.health.probe == "python3"  # the gateway and the apps are ours


def test_a_plan_made_before_probes_gets_one_by_its_image():
    """A recorded plan without ``probe`` (None): python3 for a local build, else http."""
    base = dict(name="llm-x", role="chat", model="m", served_model_name="m", engine="e", backend="cpu",
                image="vendor/engine:1", image_version="1", precision="bf16", tensor_parallel=1, devices=[],
                memory_mib_per_device=1, port=8000)
    from appliance.planner.models import MemoryBudget

    budget = MemoryBudget(weights_mib=1, kv_cache_mib=1, overhead_mib=1, total_mib=3)
    vendor = PlannedService(**base, memory=budget, health=HealthCheck(port=8000))
    assert vendor.health.probe is None
    assert inference_service(vendor, None).health.probe == "http"
    ours = PlannedService(**base, memory=budget, health=HealthCheck(port=8000), build="images/engines/llamacpp")
    assert inference_service(ours, None).health.probe == "python3"


# ---- converge waits for the outside probe -------------------------------------------------------------------
class ProbeDocker:
    """What _wait_healthy asks of Docker for an http-probe service: the container is running at
    127.0.0.1 (the loopback server plays the engine)."""

    def __init__(self, state="running"):
        self.state = state
        self.addresses = 0

    def container_address(self, ref, network):
        self.addresses += 1
        return ContainerAddress(state=self.state, ip="127.0.0.1", exit_code=None, started_ts=time.time())

    def health(self, ref):  # Docker has no health for it: converge must not take that as healthy
        return self.state, None, None

    def log_tail(self, ref, lines=20):
        return ["engine log line"]


def _pending(port: int, limit: float = 30, **health) -> tuple[StackSpec, _Pending]:
    svc = ServiceSpec(name="llm-x", kind="inference", image="vendor/engine:1", port=port,
                      health=HealthSpec(port=port, path="/health", interval_s=0.2, timeout_s=1, probe="http",
                                        **health))
    stack = StackSpec(instance="unit", network="appliance-unit-net", services=[svc],
                      settings=Settings(health_timeout_s=limit))
    return stack, _Pending(svc=svc, container_id="c1", started_ts=time.monotonic())


def test_converge_waits_until_the_outside_probe_answers_200():
    answers = [BUSY_ANSWER] * 3 + [OK_ANSWER] * 10
    with loopback(lambda conn, n: conn.sendall(answers[min(n, len(answers) - 1)])) as (port, requests):
        stack, p = _pending(port)
        conv = Converger(ProbeDocker(), stack)
        start = time.monotonic()
        conv._wait_healthy([p])
    assert len(requests) == 4                            # 503, 503, 503, then 200: healthy
    assert time.monotonic() - start >= 0.5               # the probes are spaced, not a busy loop
    assert p.last_probe.ok


def test_converge_fails_with_the_outside_probe_s_last_answer():
    with loopback(_send(BUSY_ANSWER)) as (port, _):
        stack, p = _pending(port, limit=1.5, start_period_s=0.0)
        conv = Converger(ProbeDocker(), stack)
        with pytest.raises(ServiceUnhealthy) as err:
            conv._wait_healthy([p])
    msg = err.value.message
    assert "did not become healthy within 1.5s (health: unhealthy" in msg
    assert f"last check from this host: HTTP 503 from http://127.0.0.1:{port}/health" in msg
    assert err.value.log_lines == ["engine log line"] and "probe: curl" not in err.value.fix


def test_converge_within_the_start_period_says_starting():
    with socket.socket() as s:  # nothing listens: connection refused (reachable, so no routing hint)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        stack, p = _pending(port, limit=0.6)
        with pytest.raises(ServiceUnhealthy) as err:
            Converger(ProbeDocker(), stack)._wait_healthy([p])
    assert "(health: starting, last check from this host: connection refused" in err.value.message
    assert "probe: curl" not in err.value.fix


def test_an_address_that_never_answers_hints_at_an_engine_this_host_cannot_route_to():
    release = threading.Event()
    with loopback(lambda conn, n: release.wait(3)) as (port, _):
        stack, p = _pending(port, limit=0.8)
        with pytest.raises(ServiceUnhealthy) as err:
            Converger(ProbeDocker(), stack)._wait_healthy([p])
        release.set()
    assert "no answer within 1s" in err.value.message
    assert "rootless" in err.value.fix and "probe: curl" in err.value.fix


def test_converge_gives_up_at_once_when_the_container_exits():
    stack, p = _pending(1)
    with pytest.raises(ServiceUnhealthy) as err:
        Converger(ProbeDocker(state="exited"), stack)._wait_healthy([p])
    assert "its container exited" in err.value.message


# ---- the agent's recorded probes are the service's health for readers ------------------------------------------
def test_service_states_show_the_agent_s_probe_of_the_same_container(tmp_path):
    from appliance.runtime import releases, views
    from appliance.runtime.stack import list_services
    from appliance.state.store import StateStore

    svc = _svc("http")
    stack = StackSpec(instance="unit", network="appliance-unit-net", services=[svc, _svc("python3").model_copy(
        update={"name": "gateway", "kind": "gateway"})]).with_hashes()
    store = releases.open_store(StateStore(tmp_path / "state.db"))
    from appliance.planner.models import Plan

    rid = releases.begin(store, "unit", Plan(), stack, source="test")
    releases.commit(store, "unit", rid)

    def container(name, probe, cid):
        labels = {L.MANAGED: "true", L.INSTANCE: "unit", L.SERVICE: name, L.KIND: stack.service(name).kind,
                  L.SPEC_HASH: stack.hash_of(name), L.RELEASE: str(rid), L.PROBE: probe}
        return ContainerInfo(id=cid, name=f"appliance-unit-{name}", image="i", state="running", status="Up 1 minute",
                             health=None, labels=labels, created_ts=1.7e9)

    class Docker:
        def list_containers(self, filters, all=True):
            return [container("llm-x", "http", "c-new"), container("gateway", "python3", "c-gw")]

        def inspect_container(self, ref):
            return {"Id": ref, "RestartCount": 0, "State": {"Status": "running", "ExitCode": 0}}

    def states():
        got = views.service_states(Docker(), "unit", views.current(store, "unit"), views.service_notes(store, "unit"))
        want = list_services(Docker(), store, "unit")
        assert [s.model_dump() for s in got] == [s.model_dump() for s in want]
        return {s.name: s for s in got}

    assert states()["llm-x"].health is None and states()["llm-x"].probe == "http"   # no agent yet: running
    releases.record_probes(store, "unit", {"llm-x": {"container": "c-old", "health": "unhealthy", "detail": "x",
                                                     "ts": time.time()}}, valid_s=30)
    assert states()["llm-x"].health is None        # a record of another container says nothing of this one
    releases.record_probes(store, "unit", {"llm-x": {"container": "c-new", "health": "unhealthy",
                                                     "detail": "HTTP 503 from http://10.0.0.2:8000/health",
                                                     "ts": time.time()}}, valid_s=30)
    assert states()["llm-x"].health == "unhealthy" and states()["gateway"].health is None
    assert views.service_notes(store, "unit")["llm-x"]["probe"]["detail"].startswith("HTTP 503")
    from appliance.status.collect import collect_status
    from tests.support import NODES

    report = collect_status(snapshot=NODES / "cpu-only", instance="unit", store=store, docker=Docker())
    (problem,) = [p for p in report.problems if p.code == "service_unhealthy"]
    assert problem.subject == "llm-x"
    assert "fails its health check: the agent's probe: HTTP 503 from http://10.0.0.2:8000/health" in problem.message
    releases.record_probes(store, "unit", {"llm-x": {"container": "c-new", "health": "healthy", "detail": "HTTP 200",
                                                     "ts": time.time()}}, valid_s=-1)
    assert states()["llm-x"].health is None        # expired (the agent stopped): not shown as its health
    releases.clear_instance(store, "unit")
    assert views.probe_records(store, "unit") == {}
