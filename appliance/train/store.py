"""Job records in the state database (``train_jobs``), and the per-instance job lock.

A job's record is the durable half of its truth; the other half is its container (label
``appliance.job=<id>``). Whoever looks -- the agent each pass, or ``train status``/``list``
when no agent runs -- combines the two under the job lock, so a killed agent loses nothing:
the next process to look sees the same record and the same container.
"""

from __future__ import annotations

import time

from appliance.errors import UsageError
from appliance.state import locks
from appliance.state.store import StateStore
from appliance.train.models import ACTIVE, Job

DOMAIN = "train"
VERSION = 1
_DDL = """
CREATE TABLE IF NOT EXISTS train_jobs (
    id TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ts REAL NOT NULL,
    updated_ts REAL NOT NULL,
    job_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS train_jobs_instance ON train_jobs(instance, status)
"""


def open_store(store: StateStore | None = None) -> StateStore:
    store = store or StateStore.open_default()
    store.ensure_schema(DOMAIN, VERSION, _DDL)
    return store


def job_lock(instance: str, *, wait: bool = True):
    """Exclusive per-instance lock for scheduling and finishing jobs (``train-<instance>.lock``,
    see :mod:`appliance.state.locks`; released if the holder dies)."""
    return locks.instance_lock("train", instance, wait=wait)


def save(store: StateStore, job: Job) -> None:
    now = time.time()
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO train_jobs(id, instance, status, created_ts, updated_ts, job_json) VALUES(?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET status=excluded.status, updated_ts=excluded.updated_ts, "
            "job_json=excluded.job_json",
            (job.id, job.instance, job.status, job.created_ts, now, job.model_dump_json()))


def get(store: StateStore, job_id: str, instance: str | None = None) -> Job | None:
    row = store.one("SELECT job_json, instance FROM train_jobs WHERE id=?", (job_id,))
    if row is None or (instance is not None and row["instance"] != instance):
        return None
    return Job.model_validate_json(row["job_json"])


def require(store: StateStore, job_id: str, instance: str) -> Job:
    job = get(store, job_id, instance)
    if job is None:
        known = [j.id for j in list_jobs(store, instance, limit=5)]
        raise UsageError(f"no training job {job_id!r} in instance {instance}", where="job",
                         fix=f"recent jobs: {', '.join(known)}" if known else "submit one: appliance train submit ...")
    return job


def list_jobs(store: StateStore, instance: str, *, active_only: bool = False, limit: int = 200) -> list[Job]:
    sql = "SELECT job_json FROM train_jobs WHERE instance=?"
    params: list = [instance]
    if active_only:
        sql += f" AND status IN ({','.join('?' * len(ACTIVE))})"
        params += list(ACTIVE)
    sql += " ORDER BY created_ts DESC, id DESC LIMIT ?"
    params.append(limit)
    return [Job.model_validate_json(r["job_json"]) for r in store.query(sql, tuple(params))]


def pending_restores(store: StateStore, instance: str) -> list[Job]:
    return [j for j in list_jobs(store, instance) if j.restore == "pending" and not j.active]
