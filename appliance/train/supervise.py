"""Job supervision: derive each job's status from its container and its record, act on endings.

Called by the agent every pass (``reconcile_jobs``, the hook in appliance.agent.loop) and
by ``train status``/``list``/``cancel`` (so the answer is current even when no agent runs).
Nothing is kept in memory between calls: a job's truth is its record in the state plus its
container (label ``appliance.job=<id>``), so killing and restarting the agent -- or
running the CLI meanwhile -- loses nothing. All of it runs under the per-instance job lock,
so an ending is handled exactly once:

- running container: progress (step, total, loss, ETA) parsed from its recent log lines;
- exited 0: the log is saved to ``job.log``, the output checked and registered as a model
  (catalog overlay), the job ``completed``; exited otherwise: ``failed`` with the last log
  lines; container gone: ``failed`` (removed outside appliance). Then the container is
  removed and the preempted inference services are restored (health-gated, outside the
  job lock, retried on the next pass if it fails).
"""

from __future__ import annotations

import logging
import time

from appliance.errors import ApplianceError
from appliance.runtime import labels as L
from appliance.state.store import StateStore
from appliance.train import progress as P
from appliance.train import store as S
from appliance.train.container import JOB_LABEL
from appliance.train.models import Job

log = logging.getLogger("appliance.train")
PROGRESS_TAIL_LINES = 200
PENDING_TIMEOUT_S = 300.0
ERROR_LOG_LINES = 8


def job_containers(docker, instance: str) -> dict[str, list]:
    """job id -> its containers (one Docker list call)."""
    out: dict[str, list] = {}
    for c in docker.list_containers(L.instance_filter(instance) + [JOB_LABEL]):
        out.setdefault(c.labels.get(JOB_LABEL, ""), []).append(c)
    return out


def reconcile_jobs(*, docker=None, store: StateStore | None = None, instance: str | None = None,
                   by: str = "agent", wait: bool = False, only: str | None = None) -> list[Job]:
    """One supervision pass over the instance's active jobs; returns the jobs it looked at.

    ``wait=False`` (the agent): skip the pass when another process holds the job lock.
    """
    from appliance.runtime.docker_adapter import Docker

    inst = instance or L.instance()
    store = S.open_store(store)
    own = docker is None
    docker = docker or Docker(timeout_s=10)
    seen: list[Job] = []
    try:
        with S.job_lock(inst, wait=wait) as locked:
            if not locked:
                return []
            active = S.list_jobs(store, inst, active_only=True)
            if not active and by == "agent":  # the agent's idle pass costs no Docker call
                containers = {}
            else:
                containers = job_containers(docker, inst)
            for job in active:
                if only is None or job.id == only:
                    seen.append(refresh(job, docker, store, containers.get(job.id, []), by=by))
            # containers of jobs that already ended (a crash between saving and removing)
            for job_id, cs in containers.items():
                job = S.get(store, job_id, inst)
                if job is not None and not job.active:
                    for c in cs:
                        docker.remove(c.id, force=True)
        for job in S.pending_restores(store, inst):
            if only is None or job.id == only:
                restore_services(job, store, docker)
    finally:
        if own:
            docker.close()
    return seen


def refresh(job: Job, docker, store: StateStore, containers: list, *, by: str) -> Job:
    """Bring one active job's record up to date with its container (caller holds the job lock)."""
    c = next((c for c in containers if c.state in ("running", "restarting", "paused")), None) or \
        (containers[-1] if containers else None)
    if c is None:
        if job.status == "pending" and time.time() - job.created_ts < PENDING_TIMEOUT_S:
            return job  # being submitted right now
        what = ("its container disappeared (removed outside appliance)" if job.status == "running"
                else "the submission did not finish (no container was started)")
        return finish(job, docker, store, None, "failed", by=by, error=what)
    if c.state == "created" and time.time() - job.created_ts > PENDING_TIMEOUT_S:
        return finish(job, docker, store, c, "failed", by=by, error="its container was created but never started")
    if c.state in ("running", "restarting", "paused", "created"):
        lines = docker.log_tail(c.id, PROGRESS_TAIL_LINES)
        job.progress = P.parse(lines, job.progress)
        if job.status == "pending" and c.state != "created":
            job.status = "running"
            job.started_ts = job.started_ts or time.time()
        job.container_id, job.container_name = c.id, c.name
        S.save(store, job)
        return job
    state, _, exit_code = docker.health(c.id)
    if exit_code == 0 and state in ("exited", "dead"):
        return finish(job, docker, store, c, "completed", by=by, exit_code=0)
    return finish(job, docker, store, c, "failed", by=by, exit_code=exit_code,
                  error=f"the trainer exited with code {exit_code}")


def save_log(job: Job, docker, container_id: str) -> list[str]:
    from pathlib import Path

    try:
        data = docker.logs(container_id, tail="all")
    except Exception:  # noqa: BLE001 - an unreadable log must not block the ending
        return []
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else ""
    path = Path(job.job_dir).parent / "job.log"
    path.write_text(text, encoding="utf-8")
    return text.splitlines()


def finish(job: Job, docker, store: StateStore, container, status: str, *, by: str, exit_code: int | None = None,
           error: str | None = None) -> Job:
    """End a job: save its log, register its output (completed), record, remove its container."""
    from appliance.train.register import check_output, output_files, register

    lines: list[str] = []
    if container is not None:
        lines = save_log(job, docker, container.id)
        job.progress = P.parse(lines[-PROGRESS_TAIL_LINES:], job.progress)
    job.exit_code = exit_code
    job.finished_ts = time.time()
    job.finalized_by = by
    job.output_files = output_files(job)
    if status == "completed":
        problem = check_output(job)
        if problem is None:
            try:
                register(job)
                job.registered = True
            except ApplianceError as exc:
                problem = exc.one_line()
        if problem is not None:
            status, error = "failed", f"the trainer finished but {problem}"
    if status == "failed" and lines:
        tail = [ln for ln in lines if ln.strip()][-ERROR_LOG_LINES:]
        error = f"{error}; last log lines: " + " | ".join(tail) if error else " | ".join(tail)
    job.status = status  # type: ignore[assignment]
    job.error = error[:2000] if error else None
    if job.preempted:
        job.restore = "pending"
    S.save(store, job)
    store.add_event("train", f"job {job.id} {status}" + (f": {error}" if error and status == "failed" else "")
                    + (f"; registered model {job.output_model}" if job.registered else ""),
                    data={"job": job.id, "status": status, "by": by, "model": job.output_model if job.registered
                          else None, "exit_code": exit_code})
    if container is not None:
        docker.remove(container.id, force=True)
    log.info("training job %s %s", job.id, status)
    return job


def restore_services(job: Job, store: StateStore, docker) -> Job:
    """Start the services the job preempted again (unless another active job still holds them)."""
    from appliance.runtime.stack import start_services

    before = job.restore_note
    others = {s.name for j in S.list_jobs(store, job.instance, active_only=True) for s in j.preempted}
    names = [s.name for s in job.preempted if s.name not in others]
    try:
        if names:
            start_services(names, docker=docker, store=store, instance=job.instance)
        job.restore, job.restore_note = "done", (f"restored {', '.join(names)}" if names else
                                                 "left to the job(s) still holding them")
    except ApplianceError as exc:
        job.restore, job.restore_note = "pending", f"restore failed (retried next pass): {exc.one_line()}"[:500]
    S.save(store, job)
    if job.restore_note != before:  # a restore retried every pass is one event, not one per pass
        store.add_event("train", f"job {job.id}: {job.restore_note}", data={"job": job.id, "restore": job.restore})
    return job
