"""`appliance status` against the REAL demo stack on the Docker engine (issue 6's Must-show).

One demo stack for the module (`appliance init --demo --yes --models demo-chat,demo-embed`: the
templated test engine from its catalog overlay, tests/stack_support.py; under a unique instance, data
directory and free ports), driven through the CLI as an admin would; everything with the
instance label is removed afterwards. Order matters and is kept by pytest's file order:
healthy -> one service stopped -> Docker unreachable -> `appliance up` -> healthy again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack_support import DemoStack
from tests.support import poll

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class Stack(DemoStack):
    def __init__(self, root: Path):
        super().__init__(root, "st")

    def status_json(self, **kw) -> tuple[int, dict]:
        res = self.cli("status", "--json", **kw)
        return res.returncode, json.loads(res.stdout)

    def container(self, service: str) -> str:
        out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=appliance.instance={self.instance}",
                              "--filter", f"label=appliance.service={service}"], capture_output=True, text=True,
                             check=True).stdout.split()
        assert len(out) == 1, out
        return out[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("status-stack"))
    try:
        res = st.init_demo("--quiet")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        yield st
    finally:
        st.purge(down_first=True)
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=appliance.instance={st.instance}"],
                              capture_output=True, text=True).stdout.split()
        assert left == []


def test_demo_stack_healthy_exit_0(stack):
    code, r = stack.status_json()
    assert code == 0 and (r["status"], r["healthy"], r["exit_code"]) == ("healthy", True, 0), r["problems"]
    assert len(r["services"]) >= 6
    assert all(s["state"] == "running" and s["health"] == "healthy" and s["ok"] for s in r["services"])
    assert all(s["restarts"] == 0 and s["uptime_s"] is not None and s["image"] for s in r["services"])
    assert [p for p in r["problems"] if p["severity"] == "error"] == []
    assert r["release"]["id"] >= 1 and r["release"]["demo"] is True
    assert r["endpoints"]["gateway"] == f"http://127.0.0.1:{stack.gateway_port}/v1"
    assert set(r["endpoints"]["apps"]) == {"code-assistant", "customer-service", "knowledge-base"}
    assert {m["name"] for m in r["models"]} >= {"demo-chat", "demo-embed"} and all(m["ready"] for m in r["models"])
    assert r["node"]["docker"]["reachable"] is True and r["node"]["docker"]["version"]
    # cheap: ONE list call (the light reader needs no /version or /_ping); nothing inspected on a healthy stack
    assert (r["collect"]["docker_api_calls"], r["collect"]["docker_inspects"]) == (1, 0)
    human = stack.cli("status")
    assert human.returncode == 0 and "HEALTHY" in human.stdout and "gateway" in human.stdout


def test_stopped_service_degraded_exit_1_named_with_fix(stack):
    subprocess.run(["docker", "stop", "-t", "2", stack.container("llm-demo-chat")], check=True, capture_output=True)
    code, r = stack.status_json()
    assert code == 1 and (r["status"], r["healthy"]) == ("degraded", False)
    svc = next(s for s in r["services"] if s["name"] == "llm-demo-chat")
    assert svc["state"] == "exited" and svc["ok"] is False and svc["exit_code"] is not None
    prob = next(p for p in r["problems"] if p["subject"] == "llm-demo-chat")
    assert prob["code"] == "service_stopped" and prob["severity"] == "error"
    assert "appliance up" in prob["fix"] and "appliance logs llm-demo-chat" in prob["fix"]
    assert next(m for m in r["models"] if m["name"] == "demo-chat")["ready"] is False
    assert r["collect"]["docker_inspects"] == 1 and r["collect"]["docker_api_calls"] == 2
    human = stack.cli("status")
    assert human.returncode == 1
    assert "llm-demo-chat" in human.stdout and "appliance up" in human.stdout
    assert "degraded" in human.stdout.strip().splitlines()[-1]


def test_the_light_reader_sees_what_the_sdk_sees(stack):
    """status reads through docker_adapter.EngineReader (no SDK): the same containers as the
    runtime's Docker.list_containers, the same inspect documents, the same engine version."""
    from dataclasses import replace

    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker, EngineReader

    with Docker() as sdk, EngineReader() as reader:
        filters = L.instance_filter(stack.instance)
        light = reader.list_containers(filters)
        same = [replace(c, status=c.status.split(" ")[0]) for c in sdk.list_containers(filters)]
        assert [replace(c, status=c.status.split(" ")[0]) for c in light] == same and len(light) >= 6
        stopped = next(c for c in light if c.state != "running")  # llm-demo-chat, stopped above
        assert reader.inspect_container(stopped.id) == sdk.inspect_container(stopped.id)
        assert reader.inspect_container("0" * 64) is None
        assert reader.api_calls == 3 and reader.server_header == sdk.server_header


def test_status_json_on_the_real_stack_imports_no_sdk_or_pydantic(stack):
    code = ("import sys\nfrom appliance.cli import main\n"
            "try:\n    main(['status', '--json'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('pydantic', 'docker', 'requests', 'urllib3') if m in sys.modules),"
            " file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **stack.env}, cwd=str(Path(__file__).resolve().parents[2]))
    assert "HEAVY []" in res.stderr, res.stderr[-2000:]
    assert json.loads(res.stdout)["services"]


def test_docker_unreachable_one_line_exit_2(stack):
    res = stack.cli("status", env={"DOCKER_HOST": "unix:///nonexistent"})
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: docker: cannot reach the Docker engine at unix:///nonexistent")
    assert "(fix: " in lines[0]
    code, r = stack.status_json(env={"DOCKER_HOST": "unix:///nonexistent"})
    assert code == 2 and r["status"] == "unknown" and r["healthy"] is False
    assert r["node"]["docker"]["reachable"] is False
    assert all(s["state"] == "unknown" for s in r["services"]) and r["release"] is not None


def test_crashed_service_restarted_by_docker_is_counted(stack):
    """The main process dies (not `docker stop`): Docker's restart policy brings it back; status
    notices from the list call that it started after it was created and inspects it for the count."""
    import time

    from appliance.status.services import RESTART_SLACK_S, _parse_docker_time

    cid = stack.container("customer-service")

    def inspect(fmt: str) -> str:
        return subprocess.run(["docker", "inspect", "-f", fmt, cid], capture_output=True, text=True,
                              check=True).stdout.strip()

    # From the list call alone a restart shows only in a container clearly older than its uptime
    # (Docker rounds the uptime): a young stack ages past that first (up to 15 s, once)
    poll(lambda: time.time() - _parse_docker_time(inspect("{{.Created}}")) > RESTART_SLACK_S + 8,
         timeout_s=30, interval_s=0.5)
    pid = int(inspect("{{.State.Pid}}"))
    try:
        os.kill(pid, signal.SIGKILL)
    except PermissionError:
        pytest.skip("killing a container's process needs root")
    # Docker notices and restarts it (status is fast enough to ask before it has)
    poll(lambda: int(inspect("{{.RestartCount}}")) >= 1, timeout_s=60, interval_s=0.2)
    seen = {}

    def healthy_again() -> bool:
        seen["code"], seen["r"] = stack.status_json()
        seen["svc"] = next(s for s in seen["r"]["services"] if s["name"] == "customer-service")
        return seen["svc"]["health"] == "healthy"

    poll(healthy_again, timeout_s=120, interval_s=1)  # bounded; the asserts below say what was seen last
    code, r, svc = seen["code"], seen["r"], seen["svc"]
    assert svc["state"] == "running" and svc["health"] == "healthy", svc
    assert svc["restarts"] >= 1 and svc["container_id"] == cid[:12]
    prob = next(p for p in r["problems"] if p["subject"] == "customer-service")
    assert prob["code"] == "service_restarted" and prob["severity"] == "warning"
    assert "appliance logs customer-service" in prob["fix"]
    assert code in (0, 1)  # the stopped llm-demo-chat of the earlier test may still be down
    assert r["collect"]["docker_inspects"] <= 4


def test_fix_hint_works_healthy_again(stack):
    res = stack.cli("up", "--quiet")
    assert res.returncode == 0, res.stderr
    code, r = stack.status_json()
    assert code == 0 and r["status"] == "healthy", r["problems"]
