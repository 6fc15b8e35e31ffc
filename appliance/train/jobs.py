"""Library API of fine-tuning jobs: submit, list, status, logs, cancel.

``submit_job`` checks everything that can be checked before anything changes -- the
dataset (every record), the model and recipe, the memory need, the devices -- so a refused
job leaves no container, file or record behind. Then, under the job lock: the job's files
and record, the preempted services stopped (held: the agent leaves them down), the image
ensured, the container created and started. If starting fails, what was done is undone
(services restored) and the job is recorded as failed.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Callable

from appliance.errors import ApplianceError, DockerUnavailable, UsageError
from appliance.runtime import labels as L
from appliance.state.store import StateStore
from appliance.train import store as S
from appliance.train.dataset import validate_dataset
from appliance.train.models import Hyper, Job, SubmitResult
from appliance.train.schedule import schedule_job

Progress = Callable[[str], None]
_ID = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")


def _serving_plan(inventory, catalog, *, snapshot: str | None, inference_models: list[str] | None,
                  store: StateStore, instance: str):
    """(the plan whose services hold devices, where it came from)."""
    from appliance.errors import NoFitError
    from appliance.planner import plan as make_plan
    from appliance.runtime import releases

    if snapshot:
        try:
            serving = make_plan(inventory, catalog, models=inference_models)
        except NoFitError as exc:
            serving = getattr(exc, "plan", None)
        what = f"models {', '.join(inference_models)}" if inference_models else "the default model set"
        return serving, f"plan for snapshot {snapshot} ({what})"
    if inference_models:
        raise UsageError("--inference-models only applies to --snapshot", where="--inference-models",
                         fix="without --snapshot the installed release's plan is used")
    release = releases.current(releases.open_store(store), instance)
    if release is None:
        return None, "no release installed (nothing is served)"
    return release.plan, f"release {release.id}"


def submit_job(model: str, dataset: str | Path, method: str = "lora", *, devices: int | None = None,
               preempt: bool = False, snapshot: str | None = None, inference_models: list[str] | None = None,
               dry_run: bool = False, hyper: Hyper | None = None, output_model: str | None = None,
               docker=None, store: StateStore | None = None, progress: Progress | None = None,
               catalog=None) -> SubmitResult:
    """Validate, schedule and (unless ``dry_run``/``snapshot``) start a fine-tuning job.

    ``catalog``: the catalog this box plans with (the CLI passes the installed bundle's, so a base
    model only a bundle brought can be fine-tuned); default: the shipped one with the overlay."""
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.train.container import DEFAULT_LR, job_root

    say = progress or (lambda msg: None)
    if method not in ("lora", "full"):
        raise UsageError(f"unknown recipe {method!r}", where="--recipe", fix="use lora or full")
    if devices is not None and devices < 1:
        raise UsageError("--devices must be at least 1", where="--devices", fix="e.g. --devices 2")
    summary = validate_dataset(dataset)
    say(f"dataset: {summary.records} {summary.format} record(s), all valid")
    cat = catalog or load_catalog()
    base = cat.model(model)
    if base.role not in ("chat", "completion"):
        raise UsageError(f"{model} is a {base.role} model; fine-tuning is for chat models", where="--model",
                         fix="choose a chat model (appliance catalog list models)")
    if output_model is not None and (not _ID.match(output_model) or output_model in cat.models):
        raise UsageError(f"invalid or taken model id {output_model!r}", where="--output-model",
                         fix="lower-case kebab form, not already in the catalog")
    inst = L.instance()
    plan_only = bool(snapshot) or dry_run
    store = S.open_store(store)
    if not plan_only:
        from appliance.train.supervise import reconcile_jobs

        docker = _docker(docker)
        reconcile_jobs(docker=docker, store=store, instance=inst, by="cli", wait=True)
    inventory = detect(snapshot=snapshot, usage=False)
    hyper = hyper or Hyper()
    with S.job_lock(inst):
        serving, label = _serving_plan(inventory, cat, snapshot=snapshot, inference_models=inference_models,
                                       store=store, instance=inst)
        active = [] if snapshot else S.list_jobs(store, inst, active_only=True)
        sched = schedule_job(inventory, model, method, serving=serving, serving_label=label, active_jobs=active,
                             hyper=hyper, devices=devices, preempt=preempt, catalog=cat)
        if plan_only:
            why = (f"planned for snapshot {snapshot}: nothing was started" if snapshot
                   else "dry run: nothing was started")
            return SubmitResult(started=False, reason=why, dataset=summary, schedule=sched)
        recipe = cat.training[sched.recipe]
        if recipe.build is None:  # real trainers read the base model's weights from the host
            from appliance.train.container import weights_dir

            weights = weights_dir(model, cat)
            if not weights.is_dir():
                raise UsageError(f"the bf16 weights of {model} are not on this node", where=str(weights),
                                 fix="put the model's weights there (Hugging Face layout), e.g. from an offline bundle")
        if hyper.learning_rate is None:
            hyper = hyper.model_copy(update={"learning_rate": DEFAULT_LR.get((recipe.framework, method), 1e-4)})
        image_ref = _ensure_image(docker, sched.image, sched.build, say)
        job_id = f"job-{secrets.token_hex(4)}"
        root = job_root(job_id)
        job = Job(id=job_id, instance=inst, model=model, method=method, recipe=sched.recipe, backend=sched.backend,
                  image=image_ref, build=sched.build, demo=sched.demo, dataset=summary, hyper=hyper,
                  devices=sched.devices, memory_mib_per_device=sched.memory.total_mib_per_device,
                  preempted=sched.preempt, job_dir=str(root / "job"), output_dir=str(root / "output"),
                  output_model=output_model or f"{model}-{method}-{job_id[4:]}",
                  artifact="adapter" if method == "lora" else "weights", created_ts=time.time())
        from appliance.train.container import write_job_files

        write_job_files(job, cat)
        S.save(store, job)
        store.add_event("train", f"job {job_id} submitted: {method} of {model} on "
                        f"{', '.join(job.device_keys()) or 'the CPU'}", data={"job": job_id, "recipe": job.recipe})
        try:
            if job.preempted:
                from appliance.runtime.stack import stop_services

                names = [p.name for p in job.preempted]
                say(f"preempting {', '.join(names)} for the job")
                stop_services(names, reason=f"preempted by training job {job_id}", docker=docker, store=store,
                              instance=inst)
            _start(job, cat, inventory, docker, store, say)
        except ApplianceError as exc:
            from appliance.train.supervise import finish, restore_services

            finish(job, docker, store, None, "failed", by="cli", error=f"could not start: {exc.one_line()}")
            if job.preempted:
                restore_services(job, store, docker)
            raise
    return SubmitResult(started=True, reason="started", dataset=summary, schedule=sched, job=job)


def _docker(docker=None):
    from appliance.runtime.docker_adapter import Docker

    return docker or Docker()


def _ensure_image(docker, image: str, build: str | None, say: Progress) -> str:
    """Make the job's image present; returns the reference its container runs (a local
    build's content tag)."""
    from appliance.runtime.images import ImageEnsurer, normalize_build

    return ImageEnsurer(docker, progress=say).ensure(image, normalize_build(build)).ref


def _start(job: Job, catalog, inventory, docker, store: StateStore, say: Progress) -> None:
    from appliance.train.container import job_container

    spec = job_container(job, catalog, inventory)
    say(f"starting {spec.name} ({job.image})")
    cid = docker.replace_container(spec, start=False)  # recorded before it starts: a crash leaves it known
    job.container_id, job.container_name = cid, spec.name
    S.save(store, job)
    docker.start(cid)
    job.status, job.started_ts = "running", time.time()
    S.save(store, job)
    store.add_event("train", f"job {job.id} started", data={"job": job.id, "container": cid})


# ---- list / status / logs / cancel --------------------------------------------------------
def _refresh(only: str | None = None, docker=None, store: StateStore | None = None) -> StateStore:
    from appliance.train.supervise import reconcile_jobs

    store = S.open_store(store)
    try:
        reconcile_jobs(docker=docker, store=store, instance=L.instance(), by="cli", wait=True, only=only)
    except DockerUnavailable:
        pass  # the records alone are still worth showing
    return store


def list_jobs(*, docker=None, store: StateStore | None = None) -> list[Job]:
    store = _refresh(None, docker, store)
    return S.list_jobs(store, L.instance())


def job_status(job_id: str, *, docker=None, store: StateStore | None = None) -> Job:
    store = S.open_store(store)
    S.require(store, job_id, L.instance())
    store = _refresh(job_id, docker, store)
    return S.require(store, job_id, L.instance())


def job_logs(job_id: str, *, tail: int | str = "all", follow: bool = False, docker=None,
             store: StateStore | None = None):
    """The job's log: bytes, or an iterator of chunks when following a running job."""
    from appliance.train.container import JOB_LABEL

    store = S.open_store(store)
    job = S.require(store, job_id, L.instance())
    if job.active:
        docker = _docker(docker)
        rows = docker.list_containers(L.instance_filter(job.instance) + [f"{JOB_LABEL}={job.id}"])
        if rows:
            return docker.logs(rows[-1].id, tail=tail, follow=follow)
    saved = Path(job.job_dir).parent / "job.log"
    if not saved.is_file():
        return b""
    data = saved.read_bytes()
    if tail != "all":
        data = b"\n".join(data.splitlines()[-int(tail):]) + b"\n"
    return data


def cancel_job(job_id: str, *, docker=None, store: StateStore | None = None) -> Job:
    """Stop the job's container and record it ``cancelled``; restore what it preempted."""
    from appliance.train.container import JOB_LABEL
    from appliance.train.supervise import finish, restore_services

    store = S.open_store(store)
    inst = L.instance()
    docker = _docker(docker)
    with S.job_lock(inst):
        job = S.require(store, job_id, inst)
        if not job.active:
            raise UsageError(f"job {job_id} is already {job.status}", where=f"job {job_id}",
                             fix="only pending or running jobs can be cancelled")
        rows = docker.list_containers(L.instance_filter(inst) + [f"{JOB_LABEL}={job.id}"])
        for c in rows:
            docker.stop(c.id, timeout_s=10)
        last = rows[-1] if rows else None
        exit_code = docker.health(last.id)[2] if last is not None else None
        job = finish(job, docker, store, last, "cancelled", by="cli", exit_code=exit_code, error="cancelled by request")
        for c in rows[:-1]:
            docker.remove(c.id, force=True)
    if job.restore == "pending":
        job = restore_services(job, store, docker)
    return job
