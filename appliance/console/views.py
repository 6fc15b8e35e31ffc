"""The console's views: one function per page, each a JSON-ready dict built from the library.

Why a module of its own: the pages and the JSON API (``/api/<page>``) show exactly what
``appliance status``, ``keys list``, ``models list``, ``train list`` and the releases table
show, so every view calls those functions and only reshapes their typed results -- no second
implementation of health, problems or usage. History (the charts) comes from the agent's
bounded time series in the state (:mod:`appliance.agent.history`).

``who`` is the signed-in user ``{"user", "role"}``: an ``admin`` sees everything; a ``user``
sees only their own keys and usage (:func:`keys_view`), and no other page (the server answers
403 for those).
"""

from __future__ import annotations

import logging
import time

from appliance.errors import ApplianceError, UsageError

log = logging.getLogger("appliance.console.views")

# Chart windows a page may ask for (?window=): the raw points cover the hour, the 5-minute
# rollups the day and the week.
WINDOWS_S = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}
MAX_POINTS = 360
ADMIN_PAGES = ("overview", "models", "training", "releases")


def window_s(name: str | None) -> float:
    if not name:
        return WINDOWS_S["hour"]
    if name not in WINDOWS_S:
        raise UsageError(f"unknown window {name!r}", where="window", fix="use one of " + ", ".join(WINDOWS_S))
    return WINDOWS_S[name]


def _series(store, prefix: str, since_s: float) -> dict[str, list[list[float]]]:
    from appliance.agent.history import History

    try:
        found = History(store).series(prefix=prefix, since_s=since_s, max_points=MAX_POINTS)
    except ApplianceError as exc:  # a locked state costs the chart, not the page
        log.warning("history unavailable: %s", exc.one_line())
        return {}
    return {name: [[round(ts, 3), value] for ts, value in points] for name, points in found.items()}


def overview(store, *, docker=None, window: str | None = None, snapshot=None) -> dict:
    """The overview page: ``appliance status``'s report, plus the history of the accelerators,
    the services' health and the gateway's counters over ``window``."""
    from appliance.status.collect import collect_status

    since = window_s(window)
    report = collect_status(store=store, docker=docker, snapshot=snapshot)
    return {"page": "overview", "status": report.model_dump(), "window_s": since,
            "history": {**_series(store, "node.", since), **_series(store, "acc.", since),
                        **_series(store, "svc.", since), **_series(store, "gw.", since)}}


def models_view(store, *, docker=None, window: str | None = None) -> dict:
    """Planned and served models (status), the weights in the store (``models list``), and the
    gateway's counters per served model (totals, today, and over time from the history)."""
    from appliance.deploy.weights import box_catalog, in_use
    from appliance.models.api import list_models
    from appliance.status.collect import collect_status

    since = window_s(window)
    report = collect_status(store=store, docker=docker)
    try:
        store_models = list_models(box_catalog(), used_by=in_use()).model_dump(mode="json")
    except ApplianceError as exc:
        store_models = {"error": exc.one_line()}
    from appliance.gateway.keys import read_model_usage

    try:
        usage = {name: u.model_dump() for name, u in read_model_usage().items()}
    except ApplianceError:
        usage = {}
    from appliance.runtime import labels as L
    from appliance.runtime import releases

    release = releases.current(releases.open_store(store), L.instance())
    memory = {ps.name: ps.memory_mib_per_device for ps in (release.plan.services if release and release.plan else [])}
    served = [m.model_dump() | {"memory_mib_per_device": memory.get(m.service)} for m in report.models]
    return {"page": "models", "served": served,
            "services": [s.model_dump() for s in report.services if s.kind == "inference"],
            "store": store_models, "usage": usage, "window_s": since, "history": _series(store, "gw.", since)}


def keys_view(store, who: dict, *, window: str | None = None) -> dict:
    """The keys and usage page (``keys list``): every key for an admin, a user's own otherwise."""
    from appliance.gateway.keys import list_keys

    since = window_s(window)
    keys = [k for k in list_keys(store=store, include_revoked=True).keys
            if who.get("role") == "admin" or k.owner == who.get("user")]
    history = _series(store, "gw.key.", since)
    mine = {f"gw.key.{k.key_id}." for k in keys}
    history = {n: p for n, p in history.items() if any(n.startswith(m) for m in mine)}
    users = _series(store, "gw.user.", since)
    history.update({n: p for n, p in users.items()
                    if who.get("role") == "admin" or n.startswith(f"gw.user.{who.get('user')}.")})
    out = {"page": "keys", "user": who.get("user"), "role": who.get("role"),
           "keys": [k.model_dump(mode="json") for k in keys], "window_s": since, "history": history}
    if who.get("role") == "admin":
        from appliance.gateway.users import list_users

        out["users"] = list_users(store=store).model_dump(mode="json")["users"]
    return out


LOG_TAIL_LINES = 20
LOG_TAIL_JOBS = 3


def _served_models(store) -> dict[str, str]:
    """Model id -> the service that serves it in the current release."""
    from appliance.runtime import labels as L
    from appliance.runtime import releases

    release = releases.current(releases.open_store(store), L.instance())
    return {s.model: s.name for s in (release.plan.services if release and release.plan else [])}


def training_view(store, *, docker=None, operation: dict | None = None) -> dict:
    """Fine-tuning jobs as ``train list`` shows them, with the loss curve the agent recorded
    (the last 2 hours' raw points), the log tail (``train logs JOB``) of the newest jobs, which
    service serves a finished job's model (``appliance serve JOB`` from the page), and a serve
    started here with its progress."""
    from appliance.agent.history import RAW_KEEP_S
    from appliance.train.jobs import job_logs, list_jobs

    served = _served_models(store)
    jobs = [j.model_dump(mode="json") for j in list_jobs(docker=docker, store=store)]
    jobs.sort(key=lambda j: j["created_ts"], reverse=True)
    for i, job in enumerate(jobs):
        job["served_by"] = served.get(job["output_model"]) if job["registered"] else None
        job["servable"] = job["status"] == "completed" and job["registered"] and job["served_by"] is None
        job["loss_history"] = _series(store, f"job.{job['id']}.loss", RAW_KEEP_S).get(f"job.{job['id']}.loss", [])
        if i < LOG_TAIL_JOBS:
            try:
                raw = job_logs(job["id"], tail=LOG_TAIL_LINES, docker=docker, store=store)
                job["log_tail"] = raw.decode("utf-8", "replace")[-8000:] if isinstance(raw, bytes) else ""
            except ApplianceError as exc:
                job["log_tail"] = f"(log unavailable: {exc.one_line()})"
    op = operation if operation and operation.get("kind") == "serve" else None
    return {"page": "training", "jobs": jobs, "operation": op}


def servable_job(store, job_id: str) -> None:
    """Refuse, with the CLI's words, to serve a job that does not exist or has not completed
    (``appliance serve`` checks the same through :func:`appliance.train.serve.resolve_model`)."""
    from appliance.runtime import labels as L
    from appliance.train import store as S

    job = S.get(S.open_store(store), job_id, L.instance())
    if job is None:
        raise UsageError(f"no training job {job_id!r}", where="job", fix="see `appliance train list`")
    if job.status != "completed" or not job.registered:
        raise UsageError(f"job {job_id} is {job.status} and has no registered output", where=f"job {job_id}",
                         fix=f"wait until it completes (appliance train status {job_id})")


def releases_view(store, *, limit: int = 20, operation: dict | None = None) -> dict:
    """Release history with what each release changed against the one before it
    (:func:`appliance.runtime.releases.changes`: services, images, models, version), what
    ``rollback`` returns to (``rollback_target``: the same words as the CLI's confirmation), an
    operation started here and its progress, and the recent events."""
    from appliance.deploy.upgrade import rollback_target
    from appliance.runtime import labels as L
    from appliance.runtime import releases

    inst = L.instance()
    rows = releases.history_with_changes(releases.open_store(store), inst, limit=limit)
    try:
        current, target = rollback_target(store)
        rollback = {"from": current, "to": target}
    except ApplianceError as exc:
        rollback = {"unavailable": exc.message}
    return {"page": "releases", "instance": inst, "rollback": rollback, "operation": operation,
            "releases": [{"id": r.id, "status": r.status, "source": r.source, "version": r.version,
                          "created_ts": r.created_ts, "plan_hash": r.plan_hash, "note": r.note,
                          "services": [s.name for s in r.stack.services] if r.stack else [],
                          "changes": ch.model_dump()} for r, ch in rows],
            "events": [e for e in store.events(limit=50)
                       if e.get("kind") in ("deploy", "release", "bundle", "console")]}


def daily(points: list) -> dict[str, float]:
    """A cumulative counter's increase per UTC day (a drop -- the counters were reset -- counts
    from 0), from successive points."""
    out: dict[str, float] = {}
    for (_, v0), (t1, v1) in zip(points, points[1:]):
        day = time.strftime("%Y-%m-%d", time.gmtime(t1))
        out[day] = out.get(day, 0.0) + (v1 - v0 if v1 >= v0 else v1)
    return out


def csv_daily(store, who: dict) -> str:
    """Requests and tokens per day of the last week, per key, per user and per model (what the
    agent's history recorded); a ``user`` gets only their own keys and themself."""
    import csv
    import io

    keys = {k["key_id"]: k["name"] for k in keys_view(store, who)["keys"]}
    admin = who.get("role") == "admin"
    rows: dict[tuple, dict] = {}
    for name, points in _series(store, "gw.", WINDOWS_S["week"]).items():
        parts = name.split(".")
        if len(parts) < 4 or parts[1] not in ("key", "user", "model") or parts[-1] not in ("requests", "tokens"):
            continue
        kind, subject, counter = parts[1], ".".join(parts[2:-1]), parts[-1]
        if kind == "key":
            if subject not in keys:
                continue
            subject = keys[subject]
        elif not admin and not (kind == "user" and subject == who.get("user")):
            continue
        for day, value in daily(points).items():
            rows.setdefault((day, kind, subject), {"requests": 0.0, "tokens": 0.0})[counter] += value
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["day", "kind", "name", "requests", "tokens"])
    for (day, kind, subject), v in sorted(rows.items()):
        w.writerow([day, kind, subject, round(v["requests"]), round(v["tokens"])])
    return buf.getvalue()


def csv_usage(store, who: dict) -> str:
    """Per-key usage as CSV (the keys page's export): what ``keys list --json`` counts."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["name", "key_id", "owner", "status", "requests", "prompt_tokens", "completion_tokens",
                "tokens_today", "denied", "last_used_at"])
    for k in keys_view(store, who)["keys"]:
        u = k["usage"]
        last = u.get("last_used_at")
        w.writerow([k["name"], k["key_id"], k["owner"], k["status"], u["requests"], u["prompt_tokens"],
                    u["completion_tokens"], u["tokens_today"], u["denied"],
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last)) if last else ""])
    return buf.getvalue()
