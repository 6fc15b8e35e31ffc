"""The bundle journal: every upgrade/rollback step recorded in the state before it happens.

Why a journal: an upgrade moves gigabytes and replaces running services; a power cut or a
``kill -9`` can land anywhere. Each operation is one ``bundle_ops`` row whose ``step`` is
advanced (in its own transaction) before the step starts, so the next ``appliance upgrade``,
``appliance rollback`` or ``appliance status`` knows exactly how far it got and either
finishes it or undoes it (:func:`appliance.bundle.apply.recover`). The final commit writes
the runtime's release switch and the journal's ``done`` in ONE transaction, so there is no
moment where the state names a release the journal does not agree with.

``bundle_installed`` is the installed version: the bundle version the box runs and the release
directory its catalog, playbooks and packages come from. It is monotonic state: only a
committed upgrade (in the same transaction as its journal's ``done``) and a rollback change it
-- never ``init`` or ``serve`` -- so rollback protection cannot be bypassed by re-running
``init``.

``bundle_versions`` remembers each installed bundle's manifest (images and blob digests):
rollback uses it to re-tag or reload the previous release's images, and the content store
is trimmed to the blobs of the versions still referenced.

An exclusive file lock (``<data_dir>/bundle-<instance>.lock``) serialises operations; a
killed process releases it, so recovery can always take it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from appliance.errors import BundleError
from appliance.state.store import StateStore

DOMAIN = "bundle"
VERSION = 2
_DDL = """
CREATE TABLE IF NOT EXISTS bundle_ops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    kind TEXT NOT NULL,
    bundle TEXT,
    manifest_sha256 TEXT,
    from_version TEXT,
    to_version TEXT,
    from_release INTEGER,
    to_release INTEGER,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    started_ts REAL NOT NULL,
    updated_ts REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS bundle_ops_instance ON bundle_ops(instance, id);
CREATE TABLE IF NOT EXISTS bundle_installed (
    instance TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    manifest_sha256 TEXT,
    release_dir TEXT,
    updated_ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bundle_versions (
    instance TEXT NOT NULL,
    version TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    manifest_json TEXT NOT NULL,
    release_dir TEXT NOT NULL,
    staged_ts REAL NOT NULL,
    PRIMARY KEY (instance, version)
)
"""

# Steps in order. "switch" is the first step that changes the running stack.
STEPS = ("verified", "staged", "loaded", "provisioned", "switch", "commit", "done")
RUNNING, DONE, ROLLED_BACK, FAILED = "running", "done", "rolled_back", "failed"


@dataclass
class Op:
    id: int
    instance: str
    kind: str
    bundle: str | None
    manifest_sha256: str | None
    from_version: str | None
    to_version: str | None
    from_release: int | None
    to_release: int | None
    step: str
    status: str
    started_ts: float
    updated_ts: float
    error: str | None

    def reached(self, step: str) -> bool:
        return STEPS.index(self.step) >= STEPS.index(step)


def open_store(store: StateStore | None = None) -> StateStore:
    store = store or StateStore.open_default()
    store.ensure_schema(DOMAIN, VERSION, _DDL)
    return store


def _op(row) -> Op:
    return Op(**{k: row[k] for k in row.keys()})


def begin(store: StateStore, *, instance: str, kind: str, bundle: str | None, manifest_sha256: str | None,
          from_version: str | None, to_version: str | None, from_release: int | None,
          step: str = "verified") -> Op:
    now = time.time()
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO bundle_ops(instance, kind, bundle, manifest_sha256, from_version, to_version, from_release,"
            " step, status, started_ts, updated_ts) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (instance, kind, bundle, manifest_sha256, from_version, to_version, from_release, step, RUNNING,
             now, now))
        op_id = int(cur.lastrowid)
    store.add_event("bundle", f"{kind} {from_version or '-'} -> {to_version or '-'} started",
                    data={"op": op_id, "bundle": bundle})
    return get(store, op_id)


def get(store: StateStore, op_id: int) -> Op:
    return _op(store.one("SELECT * FROM bundle_ops WHERE id=?", (op_id,)))


def set_step(store: StateStore, op: Op, step: str, **fields) -> None:
    """Record that ``step`` is about to run (or, for the last steps, has run)."""
    allowed = {"to_release", "error", "status"}
    cols = {k: v for k, v in fields.items() if k in allowed}
    sets = ", ".join(["step=?", "updated_ts=?", *(f"{k}=?" for k in cols)])
    with store.transaction() as conn:
        conn.execute(f"UPDATE bundle_ops SET {sets} WHERE id=?", (step, time.time(), *cols.values(), op.id))
    op.step = step
    for k, v in cols.items():
        setattr(op, k, v)


def finish(store: StateStore, op: Op, status: str, error: str | None = None) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE bundle_ops SET status=?, error=COALESCE(?, error), updated_ts=? WHERE id=?",
                     (status, error[:2000] if error else None, time.time(), op.id))
        if status == DONE:
            conn.execute("UPDATE bundle_ops SET step='done' WHERE id=?", (op.id,))
    op.status = status
    verb = {DONE: "completed", ROLLED_BACK: "rolled back", FAILED: "failed"}.get(status, status)
    store.add_event("bundle", f"{op.kind} {op.from_version or '-'} -> {op.to_version or '-'} {verb}"
                    + (f": {error}" if error else ""), data={"op": op.id})


def running(store: StateStore, instance: str) -> Op | None:
    row = store.one("SELECT * FROM bundle_ops WHERE instance=? AND status=? ORDER BY id DESC LIMIT 1",
                             (instance, RUNNING))
    return _op(row) if row else None


def last(store: StateStore, instance: str) -> Op | None:
    row = store.one("SELECT * FROM bundle_ops WHERE instance=? ORDER BY id DESC LIMIT 1",
                             (instance,))
    return _op(row) if row else None


# ---- the installed version ---------------------------------------------------------------------
@dataclass
class Installed:
    version: str
    manifest_sha256: str | None
    release_dir: str | None
    updated_ts: float


def installed(store: StateStore, instance: str) -> Installed | None:
    """The bundle version this box runs (None: nothing was installed from a bundle)."""
    row = store.one("SELECT * FROM bundle_installed WHERE instance=?", (instance,))
    if row is None:
        return None
    return Installed(version=row["version"], manifest_sha256=row["manifest_sha256"],
                     release_dir=row["release_dir"], updated_ts=row["updated_ts"])


def set_installed(store: StateStore, instance: str, version: str, *, manifest_sha256: str | None,
                  release_dir: str | None) -> None:
    """Record the installed version (joins the caller's transaction: the commit of an upgrade)."""
    with store.transaction() as conn:
        conn.execute("INSERT INTO bundle_installed(instance, version, manifest_sha256, release_dir, updated_ts) "
                     "VALUES(?,?,?,?,?) ON CONFLICT(instance) DO UPDATE SET version=excluded.version, "
                     "manifest_sha256=excluded.manifest_sha256, release_dir=excluded.release_dir, "
                     "updated_ts=excluded.updated_ts",
                     (instance, version, manifest_sha256, release_dir, time.time()))


# ---- installed bundle versions -----------------------------------------------------------------
def record_version(store: StateStore, instance: str, version: str, manifest_sha256: str, manifest_json: str,
                   release_dir: str) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO bundle_versions(instance, version, manifest_sha256, manifest_json, release_dir, staged_ts)"
            " VALUES(?,?,?,?,?,?) ON CONFLICT(instance, version) DO UPDATE SET"
            " manifest_sha256=excluded.manifest_sha256, manifest_json=excluded.manifest_json,"
            " release_dir=excluded.release_dir, staged_ts=excluded.staged_ts",
            (instance, version, manifest_sha256, manifest_json, release_dir, time.time()))


def version_manifest(store: StateStore, instance: str, version: str | None) -> dict | None:
    if version is None:
        return None
    row = store.one("SELECT manifest_json FROM bundle_versions WHERE instance=? AND version=?",
                             (instance, version))
    return json.loads(row["manifest_json"]) if row else None


def versions(store: StateStore, instance: str) -> list[dict]:
    return [dict(r) for r in store.query(
        "SELECT version, manifest_sha256, release_dir, staged_ts FROM bundle_versions WHERE instance=?",
        (instance,))]


def forget_version(store: StateStore, instance: str, version: str) -> None:
    with store.transaction() as conn:
        conn.execute("DELETE FROM bundle_versions WHERE instance=? AND version=?", (instance, version))


# ---- the operation lock ------------------------------------------------------------------------
def op_lock(instance: str, *, wait: bool = False):
    """Exclusive per-instance lock; yields False when another operation holds it and wait=False."""
    from appliance.state.locks import instance_lock

    return instance_lock("bundle", instance, wait=wait)


def require_lock_free(held: bool, instance: str) -> None:
    if not held:
        raise BundleError("another upgrade or rollback is running on this node", where=f"instance {instance}",
                          fix="wait for it to finish (appliance status shows its progress)")
