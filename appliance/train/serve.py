"""``appliance serve ID``: add a (fine-tuned) model to the running stack, behind the gateway.

Re-plans the node with the active release's models plus the new one (appended last, so the
existing services keep their ports and definitions), then applies it like ``init`` does:
only the new service is created and health-gated, the gateway's routes gain the model, and
the result is recorded as a new release (source ``serve``) -- ``appliance rollback``
returns to the previous one.
"""

from __future__ import annotations

from appliance.errors import UsageError
from appliance.runtime import labels as L
from appliance.state.store import StateStore
from appliance.train.models import ServeResult


def resolve_model(ref: str, store: StateStore, instance: str, catalog) -> str:
    """A job id (its registered output) or a catalog model id."""
    from appliance.train import store as S

    if ref in catalog.models:
        return ref
    job = S.get(S.open_store(store), ref, instance)
    if job is not None:
        if not job.registered:
            raise UsageError(f"job {ref} is {job.status} and has no registered output", where=f"job {ref}",
                             fix="wait until it completes (appliance train status " + ref + ")")
        if job.output_model not in catalog.models:
            raise UsageError(f"the output model {job.output_model} of job {ref} is no longer in the catalog",
                             where=f"job {ref}", fix="re-run the job")
        return job.output_model
    from appliance.catalog.loader import unknown_name_error

    raise unknown_name_error("model or job", ref, list(catalog.models), where="serve")


def serve_model(ref: str, *, docker=None, store: StateStore | None = None, progress=None) -> ServeResult:
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from appliance.runtime import releases
    from appliance.runtime.stack import apply_plan

    inst = L.instance()
    store = releases.open_store(store)
    cat = load_catalog()
    model_id = resolve_model(ref, store, inst, cat)
    release = releases.current(store, inst)
    if release is None or release.plan is None:
        raise UsageError("no stack is installed for this instance", where=f"instance {inst}",
                         fix=f"run `appliance init --yes` first (or `appliance init --models {model_id} --yes`)")
    current = [s.model for s in release.plan.services]
    gateway = release.stack.service("gateway").endpoint() if release.stack and release.stack.service("gateway") else None
    if model_id in current:
        svc = next(s for s in release.plan.services if s.model == model_id)
        return ServeResult(model=model_id, service=svc.name, served_model_name=svc.served_model_name,
                           release=release.id, already_served=True, gateway=f"{gateway}/v1" if gateway else None)
    inventory = detect(usage=False)
    demo = any(s.demo for s in release.plan.services)
    new_plan = make_plan(inventory, cat, models=current + [model_id], profile=release.plan.profile, demo=demo)
    release_id, result, stack = apply_plan(new_plan, catalog=cat, inventory=inventory,
                                           settings=release.stack.settings if release.stack else None,
                                           source="serve", docker=docker, store=store, progress=progress)
    svc = next(s for s in new_plan.services if s.model == model_id)
    gw = stack.service("gateway")
    return ServeResult(model=model_id, service=svc.name, served_model_name=svc.served_model_name, release=release_id,
                       gateway=f"{gw.endpoint()}/v1" if gw is not None and gw.endpoint() else None,
                       changes=[c.model_dump() for c in result.changes if c.action != "keep"])
