"""The pure parts of status: Docker's status text, which containers get inspected, problem rules.

These take the runtime's own models (ServiceState) and the report's models as input -- plain
values, no Docker; the real engine is exercised in test_status_docker.py.
"""

from __future__ import annotations

import time

import pytest

from appliance.runtime.models import ServiceState
from appliance.status import problems as P
from appliance.status.models import DiskStatus, ServiceStatus
from appliance.status.node import disk_problems
from appliance.status.services import (
    MAX_INSPECTS,
    choose_inspects,
    inspect_facts,
    looks_restarted,
    service_status,
    uptime_bounds,
)


@pytest.mark.parametrize("text,bounds", [
    ("Up Less than a second", (0, 1)),
    ("Up 7 seconds (healthy)", (7, 8)),
    ("Up About a minute (health: starting)", (60, 120)),
    ("Up 12 minutes (unhealthy)", (720, 780)),
    ("Up About an hour", (3600, 7200)),
    ("Up 5 hours", (18000, 21600)),
    ("Up 3 days (healthy)", (3 * 86400, 4 * 86400)),
    ("Up 2 weeks", (14 * 86400, 21 * 86400)),
    ("Up 4 minutes (Paused)", (240, 300)),
    ("Exited (137) 5 minutes ago", None),
    ("Restarting (1) 3 seconds ago", None),
    ("Created", None),
    ("", None),
])
def test_uptime_bounds(text, bounds):
    assert uptime_bounds(text) == bounds


def test_restart_detection_allows_for_docker_rounding():
    now = time.time()
    assert not looks_restarted(now - 2.5 * 3600, "Up 2 hours", now)   # 2h..3h covers its age
    assert looks_restarted(now - 3 * 86400, "Up 2 hours", now)         # created days ago, up for hours
    assert not looks_restarted(now - 40, "Up 38 seconds", now)
    assert looks_restarted(now - 300, "Up 10 seconds (healthy)", now)


def _state(name, state="running", health="healthy", status="Up 10 minutes (healthy)", age_s=600.0, **kw):
    return ServiceState(name=name, state=state, health=health, status_text=status, container_id=f"{name:0<64}"[:64],
                        created_ts=time.time() - age_s, **kw)


def test_inspects_are_bounded_and_prioritised():
    states = [_state(f"ok{i}") for i in range(20)]
    states += [_state("restarted", status="Up 5 seconds (healthy)", age_s=3600)]
    states += [_state("sick", health="unhealthy", status="Up 9 minutes (unhealthy)")]
    states += [_state(f"down{i}", state="exited", health=None, status="Exited (1) 1 minute ago") for i in range(5)]
    chosen = choose_inspects(states)
    assert len(chosen) == MAX_INSPECTS
    assert all(s.name.startswith("down") for s in chosen)  # stopped ones first
    assert [s.name for s in choose_inspects(states[:22])] == ["sick", "restarted"]
    assert choose_inspects([_state(f"ok{i}") for i in range(50)]) == []  # healthy: no inspect at all


def test_inspect_facts_from_a_docker_inspect_document():
    info = {"RestartCount": 3, "State": {
        "Status": "running", "ExitCode": 0, "OOMKilled": False, "Error": "",
        "StartedAt": "2024-05-01T10:00:00.5Z", "FinishedAt": "0001-01-01T00:00:00Z",
        "Health": {"Status": "unhealthy", "FailingStreak": 4,
                   "Log": [{"ExitCode": 1, "Output": "curl: (7) Failed to connect\nconnection refused\n"}]}}}
    f = inspect_facts(info)
    assert f["restarts"] == 3 and f["failing_streak"] == 4 and f["finished_ts"] is None
    assert f["started_ts"] == pytest.approx(1714557600.5)
    assert f["health_output"] == "connection refused"


def test_service_status_restarts_known_only_when_it_can_be():
    fresh = service_status(_state("a"))
    assert fresh.restarts == 0 and fresh.ok and 600 <= fresh.uptime_s < 660
    bounced = service_status(_state("b", status="Up 5 seconds (healthy)", age_s=3600))
    assert bounced.restarts is None  # restarted, not inspected: unknown, not 0
    inspected = service_status(_state("c", status="Up 5 seconds (healthy)", age_s=3600),
                               facts={"restarts": 2, "started_ts": time.time() - 5})
    assert inspected.restarts == 2 and inspected.uptime_s in (5, 6)


def _svc(name, state="running", health="healthy", **kw) -> ServiceStatus:
    ok = state == "running" and health in ("healthy", None)
    return ServiceStatus(name=name, state=state, health=health, ok=ok, **kw)


def test_service_problems_name_the_service_with_a_fix():
    services = [_svc("gw"), _svc("llm", state="exited", health=None), _svc("emb", health="unhealthy"),
                _svc("kb", state="restarting", health=None), _svc("cs", state="missing", health=None),
                _svc("app", health="starting"), _svc("old", up_to_date=False, release=1)]
    facts = {"llm": {"exit_code": 137, "oom_killed": True}, "emb": {"health_output": "HTTP 503"},
             "kb": {"restarts": 7, "exit_code": 1}}
    probs = {p.subject: p for p in P.service_problems(services, facts, desired="up")}
    assert "gw" not in probs
    assert probs["llm"].code == "service_stopped" and "out of memory" in probs["llm"].message
    assert "appliance up" in probs["llm"].fix and "appliance logs llm" in probs["llm"].fix
    assert probs["emb"].code == "service_unhealthy" and "HTTP 503" in probs["emb"].message
    assert probs["kb"].code == "service_restarting" and "7 restart(s)" in probs["kb"].message
    assert probs["cs"].code == "service_missing" and probs["cs"].severity == "error"
    assert probs["app"].code == "service_starting" and probs["app"].severity == "warning"
    assert probs["old"].code == "release_inconsistent"


def test_held_and_down_are_not_reported_as_crashes():
    services = [_svc("llm", state="exited", health=None, note="held: maintenance"), _svc("gw")]
    probs = P.service_problems(services, {}, desired="up")
    assert [(p.code, p.severity) for p in probs] == [("service_held", "warning")]
    down = P.service_problems([_svc("llm", state="exited", health=None), _svc("gw", state="exited")], {},
                              desired="down")
    assert [(p.code, p.subject) for p in down] == [("stack_down", "stack")] and "appliance up" in down[0].fix


def test_disk_thresholds():
    def disk(free_mib, used_pct, total=100 * 1024):
        return DiskStatus(path="/var/lib/docker", purpose="x", total_mib=total, free_mib=free_mib, used_pct=used_pct)

    assert disk_problems([disk(50 * 1024, 50.0)]) == []
    assert [p.severity for p in disk_problems([disk(8 * 1024, 92.0)])] == ["warning"]
    assert [p.severity for p in disk_problems([disk(3 * 1024, 97.0)])] == ["error"]
    assert [p.severity for p in disk_problems([disk(800, 20.0, total=1024)])] == ["error"]  # small disk, < 1 GiB
    assert disk_problems([disk(3 * 1024, 97.0)])[0].code == "disk_nearly_full"


def test_license_rules():
    from appliance.licensing.models import LicenseStatus

    expired = LicenseStatus(license_id="l1", models=["pro-chat"], valid=False, reason="expired on 2024-01-01T00:00:00Z")
    soon = LicenseStatus(license_id="l2", models=["other"], valid=True, days_left=3, expires_at="2030-01-01T00:00:00Z")
    later = LicenseStatus(license_id="l3", models=["pro-chat"], valid=True, days_left=200)
    probs = P.license_problems([expired, soon, later], served_models={"pro-chat"})
    assert [(p.code, p.severity, p.subject) for p in probs] == [
        ("license_invalid", "error", "license l1"), ("license_expiring", "warning", "license l2")]
