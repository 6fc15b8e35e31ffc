"""Releases in the state: which plan and stack are installed, and what came before.

A release row is written ``pending`` before any container changes and becomes ``active``
only after every service is healthy (the previous active one becomes ``superseded``);
a failed apply marks it ``failed``. So the state always names the stack that is really
running, and the previous release's stack is there to return to. The runtime also keeps
per-service agent findings (``runtime_services``: degraded reasons, restart counts) and
the stack's desired state (``up``/``down``) here.
"""

from __future__ import annotations

import json
import time

from appliance.planner.models import Plan
from appliance.runtime.models import ImageChange, Release, ReleaseChanges, StackSpec
from appliance.runtime.views import heartbeat_key  # noqa: F401 - the one key, re-exported for writers
from appliance.state.store import StateStore

DOMAIN = "runtime"
VERSION = 1
_DDL = """
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    created_ts REAL NOT NULL,
    finished_ts REAL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    version TEXT,
    plan_hash TEXT,
    stack_hash TEXT,
    plan_json TEXT NOT NULL,
    stack_json TEXT NOT NULL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS releases_instance ON releases(instance, id);
CREATE TABLE IF NOT EXISTS runtime_services (
    instance TEXT NOT NULL,
    name TEXT NOT NULL,
    degraded TEXT,
    restarts INTEGER NOT NULL DEFAULT 0,
    last_restart_ts REAL,
    next_try_ts REAL,
    failures INTEGER NOT NULL DEFAULT 0,
    held TEXT,
    updated_ts REAL NOT NULL,
    PRIMARY KEY (instance, name)
);
CREATE TABLE IF NOT EXISTS runtime_desired (
    instance TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_ts REAL NOT NULL
)
"""


def open_store(store: StateStore | None = None) -> StateStore:
    store = store or StateStore.open_default()
    store.ensure_schema(DOMAIN, VERSION, _DDL)
    return store


def _row(r) -> Release:
    return Release(id=r["id"], created_ts=r["created_ts"], status=r["status"], source=r["source"],
                   version=r["version"], plan_hash=r["plan_hash"], stack_hash=r["stack_hash"],
                   plan=Plan.model_validate_json(r["plan_json"]),
                   stack=StackSpec.model_validate_json(r["stack_json"]), note=r["note"])


def begin(store: StateStore, instance: str, plan: Plan, stack: StackSpec, *, source: str,
          version: str | None = None) -> int:
    """Record a new release as ``pending`` (before anything changes); returns its id."""
    from appliance import __version__

    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO releases(instance, created_ts, status, source, version, plan_hash, stack_hash,"
            " plan_json, stack_json) VALUES(?,?,?,?,?,?,?,?,?)",
            (instance, time.time(), "pending", source, version or __version__, stack.plan_hash,
             stack.stack_hash(), plan.model_dump_json(), stack.model_dump_json()))
        return int(cur.lastrowid)


def commit(store: StateStore, instance: str, release_id: int, note: str | None = None) -> None:
    """Make ``release_id`` the active release (the previous active one becomes superseded)."""
    with store.transaction() as conn:
        conn.execute("UPDATE releases SET status='superseded' WHERE instance=? AND status='active' AND id<>?",
                     (instance, release_id))
        conn.execute("UPDATE releases SET status='active', finished_ts=?, note=COALESCE(?, note) WHERE id=?",
                     (time.time(), note, release_id))
    store.add_event("release", f"release {release_id} is active", data={"instance": instance,
                                                                        "release": release_id})


def fail(store: StateStore, release_id: int, note: str) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE releases SET status='failed', finished_ts=?, note=? WHERE id=?",
                     (time.time(), note[:2000], release_id))


def current(store: StateStore, instance: str) -> Release | None:
    r = store.one("SELECT * FROM releases WHERE instance=? AND status='active' ORDER BY id DESC LIMIT 1",
                           (instance,))
    return _row(r) if r else None


def get(store: StateStore, release_id: int) -> Release | None:
    r = store.one("SELECT * FROM releases WHERE id=?", (release_id,))
    return _row(r) if r else None


def history(store: StateStore, instance: str, limit: int = 20) -> list[Release]:
    rows = store.query("SELECT * FROM releases WHERE instance=? ORDER BY id DESC LIMIT ?", (instance, limit))
    return [_row(r) for r in rows]


def previous(store: StateStore, instance: str) -> Release | None:
    """The release that was active before the current one (for rollback)."""
    cur = current(store, instance)
    sql = "SELECT * FROM releases WHERE instance=? AND status='superseded'"
    params: tuple = (instance,)
    if cur is not None:
        sql += " AND id<?"
        params = (instance, cur.id)
    r = store.one(sql + " ORDER BY id DESC LIMIT 1", params)
    return _row(r) if r else None


def changes(new: Release, old: Release | None) -> ReleaseChanges:
    """What ``new`` changed against ``old`` (the release it replaced): services added and
    removed, images swapped, definitions changed, models served or dropped, the version.

    Why from the recorded stacks: they are what was really applied (with the hashes the
    containers were labelled with), so an upgrade's "what changed" reads the same whichever
    appliance version wrote the rows.
    """
    out = ReleaseChanges(release=new.id, against=old.id if old else None,
                         from_version=old.version if old else None, to_version=new.version)
    before = {s.name: s for s in (old.stack.services if old and old.stack else [])}
    after = {s.name: s for s in (new.stack.services if new.stack else [])}
    out.added = sorted(set(after) - set(before))
    out.removed = sorted(set(before) - set(after))
    for name in sorted(set(after) & set(before)):
        a, b = before[name], after[name]
        if a.run_image() != b.run_image():
            out.images.append(ImageChange(service=name, from_image=a.run_image(), to_image=b.run_image()))
        elif old.stack.hash_of(name) != new.stack.hash_of(name):
            out.reconfigured.append(name)
    models_before = {s.model for s in (old.plan.services if old and old.plan else [])}
    models_after = {s.model for s in (new.plan.services if new.plan else [])}
    out.models_added = sorted(models_after - models_before)
    out.models_removed = sorted(models_before - models_after)
    return out


def history_with_changes(store: StateStore, instance: str, limit: int = 20) -> list[tuple[Release, ReleaseChanges]]:
    """The newest ``limit`` releases, each with what it changed against the release that was in
    place before it (the nearest older one that was applied: failed attempts are skipped)."""
    rows = history(store, instance, limit=limit + 10)
    out = []
    for i, rel in enumerate(rows[:limit]):
        base = next((r for r in rows[i + 1:] if r.status in ("active", "superseded", "removed")), None)
        out.append((rel, changes(rel, base)))
    return out


# ---- desired state and agent findings ------------------------------------------------------
def desired(store: StateStore, instance: str) -> str:
    r = store.one("SELECT state FROM runtime_desired WHERE instance=?", (instance,))
    return r["state"] if r else "up"


def set_desired(store: StateStore, instance: str, state: str) -> None:
    with store.transaction() as conn:
        conn.execute("INSERT INTO runtime_desired(instance, state, updated_ts) VALUES(?,?,?) "
                     "ON CONFLICT(instance) DO UPDATE SET state=excluded.state, updated_ts=excluded.updated_ts",
                     (instance, state, time.time()))


def service_notes(store: StateStore, instance: str) -> dict[str, dict]:
    """service -> the agent's findings (its ``runtime_services`` row; ``probe``: its last outside
    health probe, :func:`appliance.runtime.views.probe_records`)."""
    from appliance.runtime.views import with_probes

    rows = store.query("SELECT * FROM runtime_services WHERE instance=?", (instance,))
    return with_probes({r["name"]: dict(r) for r in rows}, store, instance)


def record_probes(store: StateStore, instance: str, records: dict[str, dict], *, valid_s: float) -> None:
    """Record the agent's outside probes of this pass (service -> {container, health, detail, ts});
    readers ignore them after ``valid_s`` seconds. An empty ``records`` clears an earlier record
    (written only when there was one)."""
    from appliance.runtime.views import probes_key

    key = probes_key(instance)
    if not records and store.get_meta(key) is None:
        return
    store.set_meta(key, json.dumps({"expires_ts": time.time() + valid_s, "services": records}, sort_keys=True))


def note_service(store: StateStore, instance: str, name: str, **fields) -> None:
    """Upsert agent findings for a service (degraded, restarts, failures, next_try_ts...)."""
    allowed = {"degraded", "restarts", "last_restart_ts", "next_try_ts", "failures", "held"}
    fields = {k: v for k, v in fields.items() if k in allowed}
    cols = ["instance", "name", "updated_ts", *fields]
    vals = [instance, name, time.time(), *fields.values()]
    update = ", ".join(f"{k}=excluded.{k}" for k in ["updated_ts", *fields])
    with store.transaction() as conn:
        conn.execute(f"INSERT INTO runtime_services({', '.join(cols)}) VALUES({', '.join('?' * len(cols))}) "
                     f"ON CONFLICT(instance, name) DO UPDATE SET {update}", vals)


def clear_instance(store: StateStore, instance: str) -> None:
    """Forget the instance's agent findings (after ``down --purge``); releases stay as history."""
    from appliance.runtime.views import probes_key

    with store.transaction() as conn:
        conn.execute("DELETE FROM runtime_services WHERE instance=?", (instance,))
        conn.execute("DELETE FROM meta WHERE key=?", (probes_key(instance),))
        conn.execute("UPDATE releases SET status='removed' WHERE instance=? AND status IN ('active', 'pending')",
                     (instance,))
        conn.execute("INSERT INTO runtime_desired(instance, state, updated_ts) VALUES(?,?,?) "
                     "ON CONFLICT(instance) DO UPDATE SET state=excluded.state, updated_ts=excluded.updated_ts",
                     (instance, "purged", time.time()))


def dump(obj) -> str:
    return json.dumps(obj, sort_keys=True)
