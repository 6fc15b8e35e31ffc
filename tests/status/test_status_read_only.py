"""`appliance status` changes nothing in the state: no row, no table, no schema version.

It reads the runtime's and the journal's tables as they are (appliance/runtime/views.py), so a
state another domain created gets no runtime or bundle tables from a status run, and an
interrupted upgrade is reported (``upgrade_interrupted``, with the fix) and left to ``upgrade``,
``rollback`` or the agent. No Docker here: the engine is unreachable (the services are then
``unknown``), which is beside the point of these tests.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INST = "readonly"


def status_json() -> tuple[int, dict]:
    res = subprocess.run([sys.executable, "-m", "appliance", "status", "--json"], capture_output=True, text=True,
                         cwd=str(REPO), timeout=120,
                         env={**os.environ, "APPLIANCE_INSTANCE": INST, "DOCKER_HOST": "unix:///nonexistent/d.sock"})
    return res.returncode, json.loads(res.stdout)


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def _state_path() -> Path:
    from appliance.paths import state_path

    return state_path()


def test_a_state_of_another_domain_gets_no_tables():
    from appliance.state.store import StateStore

    store = StateStore(_state_path())  # e.g. made by `appliance keys` or `license`: core tables only
    store.set_meta("something", "else")
    store.close()
    before = dump(_state_path())
    code, report = status_json()
    assert code == 2 and report["status"] == "not_installed"
    assert dump(_state_path()) == before
    assert not [line for line in before if "releases" in line or "bundle_ops" in line]


def test_an_interrupted_upgrade_is_reported_and_left_as_it_is():
    from appliance.bundle import journal as J
    from appliance.runtime import releases
    from appliance.state.store import StateStore
    from tests.status.test_status_views import CPU, _compose

    plan, stack = _compose(CPU, True)
    store = releases.open_store(StateStore(_state_path()))
    releases.commit(store, INST, releases.begin(store, INST, plan, stack.with_hashes(), source="init",
                                                version="1.0.0"))
    op = J.begin(J.open_store(store), instance=INST, kind="upgrade", bundle="r2.bundle", manifest_sha256="0" * 64,
                 from_version="1.0.0", to_version="2.0.0", from_release=1)
    J.set_step(store, op, "switch")
    store.close()
    before = dump(_state_path())
    code, report = status_json()
    assert dump(_state_path()) == before, "status must not change the state"
    assert code == 2 and report["status"] == "unknown"  # the engine is unreachable here
    [p] = [p for p in report["problems"] if p["code"] == "upgrade_interrupted"]
    assert p["severity"] == "error" and "interrupted at step switch" in p["message"]
    assert "appliance upgrade" in p["fix"] and "appliance agent" in p["fix"]
    assert report["release"]["version"] == "1.0.0"
    lu = report["last_upgrade"]
    assert (lu["kind"], lu["from_version"], lu["to_version"], lu["status"], lu["step"]) == \
           ("upgrade", "1.0.0", "2.0.0", "running", "switch")
