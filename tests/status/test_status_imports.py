"""`appliance status --json` imports neither the Docker SDK nor pydantic (start-up time).

Like `appliance detect` (tests/detect/test_models.py), status is run in loops and by monitoring
scripts: the SDK (docker -> requests -> urllib3) and pydantic (the report, plan and stack
models) were most of its whole-process time. Each case runs the CLI in a fresh interpreter
and lists which of those modules ended up in ``sys.modules``: nothing installed; a recorded
release with the engine unreachable; and a recorded release whose containers a fake engine
(a unix socket answering the list call) reports healthy -- the whole read path, services,
problems and JSON, end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.stack_support import install_templated
from tests.status.test_status_reader import FakeEngine, response

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pydantic", "pydantic_core", "docker", "requests", "urllib3", "appliance.runtime.models",
         "appliance.planner.models")
INST = "imports"


def run_status(env: dict) -> tuple[list[str], int, dict]:
    code = ("import sys\nfrom appliance.cli import main\ncode = None\n"
            "try:\n    main(['status', '--json'])\nexcept SystemExit as exc:\n    code = exc.code\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), code, file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO),
                         env={**os.environ, "APPLIANCE_INSTANCE": INST, **env}, timeout=120)
    line = next(line for line in res.stderr.splitlines() if line.startswith("HEAVY "))
    heavy, exit_code = line[len("HEAVY "):].rsplit(" ", 1)
    return json.loads(heavy.replace("'", '"')), int(exit_code), json.loads(res.stdout)


def _install_demo_release() -> object:
    """The CPU demo plan and stack recorded as the active release (no container is made): the
    templated test engine's (its catalog overlay in this test's data dir, demo-chat + demo-embed)."""
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.paths import data_dir, state_path
    from appliance.planner import plan as make_plan
    from appliance.runtime import releases
    from appliance.runtime.compose import compose
    from appliance.state.store import StateStore

    inv = detect(snapshot=str(REPO / "tests" / "fixtures" / "nodes" / "cpu-only"), usage=False)
    install_templated(data_dir())
    cat = load_catalog()
    plan = make_plan(inv, cat, models=["demo-chat", "demo-embed"], demo=True)
    stack = compose(plan, catalog=cat, inventory=inv, instance=INST).with_hashes()
    store = releases.open_store(StateStore(state_path()))
    releases.commit(store, INST, releases.begin(store, INST, plan, stack, source="init"))
    return stack


def test_not_installed():
    heavy, code, report = run_status({})
    assert heavy == [] and code == 2 and report["status"] == "not_installed"


def test_installed_engine_unreachable(monkeypatch):
    _install_demo_release()
    heavy, code, report = run_status({"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert heavy == [] and code == 2 and report["status"] == "unknown"
    assert report["release"]["demo"] is True and all(s["state"] == "unknown" for s in report["services"])


def test_installed_and_healthy_through_a_fake_engine():
    stack = _install_demo_release()
    rows = [{"Id": f"{i:064x}", "Names": [f"/appliance-{INST}-{s.name}-{stack.hash_of(s.name)[:8]}"],
             "Image": s.run_image(), "State": "running", "Status": "Up 2 hours (healthy)",
             "Created": int(time.time()) - 9000,
             "Labels": {"appliance.managed": "true", "appliance.instance": INST, "appliance.service": s.name,
                        "appliance.kind": s.kind, "appliance.release": "1",
                        "appliance.spec-hash": stack.hash_of(s.name),
                        "appliance.models": ",".join(s.served_models)}}
            for i, s in enumerate(stack.services)]
    fake = FakeEngine([response(body=rows, chunked=True)])
    try:
        heavy, code, report = run_status({"DOCKER_HOST": fake.host})
    finally:
        fake.close()
    assert heavy == []
    assert code == 0 and report["status"] == "healthy", report["problems"]
    assert len(report["services"]) == len(stack.services) and all(s["ok"] for s in report["services"])
    assert report["node"]["docker"]["version"] == "24.0.7"
    # up since created (2.5 h ago, "Up 2 hours"): no restart to look into, so one request, no inspect
    assert (report["collect"]["docker_api_calls"], report["collect"]["docker_inspects"]) == (1, 0)
    assert all(s["restarts"] == 0 for s in report["services"])
    assert [p["code"] for p in report["problems"]] == ["agent_not_running"]
