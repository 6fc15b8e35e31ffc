"""Services for ``appliance status``: one Docker list call, a bounded number of inspects.

The list call already says almost everything: state, health (Docker's status text ends in
``(healthy)``/``(unhealthy)``/``(health: starting)``), uptime (``Up 3 minutes``) and the
labels the runtime puts on every container (service, kind, release, spec hash, models,
endpoint). What it lacks -- Docker's restart count, the exit code, the health check's last
output -- is fetched by inspecting only containers that look wrong: not running, unhealthy,
or started later than they were created (restarted). At most :data:`MAX_INSPECTS` of them,
so the number of Docker requests of a healthy stack is the same for 6 or 60 containers.
"""

from __future__ import annotations

import re
import time

from appliance.status.models import ServiceStatus

MAX_INSPECTS = 4
# a container whose age exceeds its uptime by more than this (beyond Docker's rounding) restarted
RESTART_SLACK_S = 5.0

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400,
          "year": 365 * 86400}
_UP = re.compile(r"^Up (?P<amount>.+?)(?: \((?:healthy|unhealthy|health: starting|Paused)\))*$")


def uptime_bounds(status_text: str | None) -> tuple[int, int] | None:
    """(at least, less than) seconds of uptime from Docker's status text, or None when not up.

    Docker rounds (``units.HumanDuration``): "Less than a second", "N seconds", "About a
    minute" (60-119 s), "N minutes", "About an hour", "N hours" (up to 47), "N days",
    "N weeks", "N months", "N years".
    """
    m = _UP.match((status_text or "").strip())
    if not m:
        return None
    text = m.group("amount").strip().lower()
    if text == "less than a second":
        return 0, 1
    if text == "about a minute":
        return 60, 120
    if text == "about an hour":
        return 3600, 7200
    parts = text.split()
    if len(parts) == 2 and parts[0].isdigit():
        unit = _UNITS.get(parts[1].rstrip("s"))
        if unit:
            n = int(parts[0])
            return n * unit, (n + 1) * unit
    return None


def _parse_docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 times with nanoseconds (``2024-05-01T10:00:00.123456789Z``)."""
    if not text or text.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return None
    from datetime import datetime  # only for inspected containers

    frac = float(m.group(2) or 0)
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(m.group(1) + tz).timestamp() + frac


def looks_restarted(created_ts: float | None, status_text: str | None, now: float) -> bool:
    bounds = uptime_bounds(status_text)
    if bounds is None or not created_ts:
        return False
    return (now - created_ts) > bounds[1] + RESTART_SLACK_S


def inspect_priority(state) -> int | None:
    """Lower first; None: no inspect needed (running, healthy or no check, never restarted)."""
    if not state.container_id:
        return None
    if state.state in ("restarting", "exited", "dead"):
        return 0
    if state.state == "running" and state.health == "unhealthy":
        return 1
    if state.state == "running" and looks_restarted(state.created_ts, state.status_text, time.time()):
        return 2
    return None


def choose_inspects(states: list, limit: int = MAX_INSPECTS) -> list:
    ranked = sorted(((p, i, s) for i, s in enumerate(states) if (p := inspect_priority(s)) is not None),
                    key=lambda row: (row[0], row[1]))
    return [s for _, _, s in ranked[:limit]]


def inspect_facts(info: dict | None) -> dict:
    """What status takes from one ``docker inspect``."""
    if not info:
        return {}
    st = info.get("State") or {}
    health = st.get("Health") or {}
    log = health.get("Log") or []
    last_output = (log[-1].get("Output") or "").strip() if log else ""
    return {"restarts": int(info.get("RestartCount") or 0), "exit_code": st.get("ExitCode"),
            "oom_killed": bool(st.get("OOMKilled")), "error": st.get("Error") or None,
            "started_ts": _parse_docker_time(st.get("StartedAt")),
            "finished_ts": _parse_docker_time(st.get("FinishedAt")),
            "failing_streak": health.get("FailingStreak"),
            "health_output": last_output.splitlines()[-1][:200] if last_output else None}


def service_status(state, *, svc=None, notes: dict | None = None, facts: dict | None = None,
                   now: float | None = None) -> ServiceStatus:
    """A service's state (:class:`appliance.runtime.views.ServiceStateView`, or the runtime's
    ``ServiceState``: the same fields) + its release spec, agent notes, inspect facts, as reported."""
    now = now or time.time()
    facts = facts or {}
    notes = notes or {}
    running = state.state == "running"
    uptime = None
    if running:
        if facts.get("started_ts"):
            uptime = max(0, int(now - facts["started_ts"]))
        else:
            bounds = uptime_bounds(state.status_text)
            uptime = bounds[0] if bounds else None
    if "restarts" in facts:
        restarts = facts["restarts"]
    elif running and state.created_ts and not looks_restarted(state.created_ts, state.status_text, now):
        restarts = 0  # up since it was created (within Docker's rounding)
    else:
        restarts = None
    devices = [f"{d.vendor}:{d.index}" for d in (svc.device_refs if svc is not None else [])]
    ok = running and state.health in ("healthy", None) and state.up_to_date
    note = (f"held: {notes['held']}" if notes.get("held")
            else f"degraded: {notes['degraded']}" if notes.get("degraded") else None)
    return ServiceStatus(
        name=state.name, kind=state.kind or (svc.kind if svc is not None else None), state=state.state,
        health=state.health, ok=bool(ok), uptime_s=uptime, restarts=restarts,
        repairs=int(notes.get("restarts") or 0), devices=devices,
        endpoint=state.endpoint or (svc.endpoint() if svc is not None else None),
        image=state.image or (svc.image if svc is not None else None),
        models=list(state.served_models or (svc.served_models if svc is not None else [])),
        container=state.container_name, container_id=state.container_id[:12] if state.container_id else None,
        release=state.release, up_to_date=state.up_to_date, status_text=state.status_text,
        exit_code=facts.get("exit_code") if state.state != "running" else None, note=note)


def offline_status(svc, notes: dict | None = None) -> ServiceStatus:
    """A service of the release when Docker cannot be asked: state unknown."""
    notes = notes or {}
    return ServiceStatus(name=svc.name, kind=svc.kind, state="unknown", ok=False,
                         devices=[f"{d.vendor}:{d.index}" for d in svc.device_refs], endpoint=svc.endpoint(),
                         image=svc.image, models=list(svc.served_models), repairs=int(notes.get("restarts") or 0))
