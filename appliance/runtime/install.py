"""``appliance init``: detect -> preflight -> plan -> provision -> images -> start -> health -> release.

Each phase is one call into the package that owns it; this module only orders them, times
them (the init benchmark reads :attr:`InitResult.phases`) and decides what stops init:

* preflight: a ``fail`` stops init unless ``force``; a ``warn`` is printed and init goes on;
* provision: skipped for ``--demo`` (the demo stack needs no driver, toolkit or host
  change -- only Docker, which preflight checks); otherwise the provisioning adapter runs;
* nothing is changed by ``dry_run``: it prints the plan and every change it would make.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from typing import Any, Callable

from appliance.errors import PreflightFailed, RuntimeFailure
from appliance.runtime import labels as L
from appliance.runtime.models import InitResult, PhaseTiming, Settings

Progress = Callable[[str], None]


def _optional(module: str, attr: str):
    """``module.attr`` when that package is installed (other helpers' phases), else None."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ModuleNotFoundError:
        return None
    return getattr(importlib.import_module(module), attr, None)


def _preflight(inventory, plan, *, demo: bool, force: bool, warnings: list[str]) -> list[dict]:
    run_preflight = _optional("appliance.provision.preflight", "run_preflight")
    if run_preflight is None:
        warnings.append("preflight checks are not installed; skipped")
        return []
    try:
        report = run_preflight(inventory=inventory, plan=plan, demo=demo)
    except TypeError:
        report = run_preflight(inventory)
    checks = [c.model_dump(mode="json") if hasattr(c, "model_dump") else dict(c)
              for c in getattr(report, "checks", report if isinstance(report, list) else [])]
    failed = [c for c in checks if c.get("status") in ("fail", "failed", "error")]
    for c in checks:
        if c.get("status") in ("warn", "warning"):
            warnings.append(f"preflight {c.get('name', '?')}: {c.get('message', '')}")
    if failed and not force:
        first = failed[0]
        raise PreflightFailed(f"{len(failed)} preflight check(s) failed; first: {first.get('name')}: "
                              f"{first.get('message', '')}", where="preflight",
                              fix=first.get("fix") or "fix the host, or re-run with --force to go on anyway")
    for c in failed:
        warnings.append(f"preflight {c.get('name', '?')} failed (ignored: --force): {c.get('message', '')}")
    return checks


def _provision(inventory, plan, *, demo: bool, dry_run: bool, warnings: list[str]) -> str:
    if demo:
        return "skipped: the demo stack needs no host changes"
    provision = _optional("appliance.provision.runner", "provision_for_plan")
    if provision is None:
        warnings.append("provisioning is not installed; skipped (run `appliance provision` yourself)")
        return "not installed"
    result = provision(inventory=inventory, plan=plan, check=dry_run)
    return str(getattr(result, "summary", "") or "done")


def init(*, models: list[str] | None = None, demo: bool = False, dry_run: bool = False, force: bool = False,
         profile: str = "default", snapshot: str | None = None, bundle: str | None = None,
         settings: Settings | None = None, progress: Progress | None = None, docker=None) -> InitResult:
    """Install (or converge) the whole stack. Raises an ApplianceError on failure."""
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from appliance.runtime import stack as S
    from appliance.runtime.compose import compose

    say = progress or (lambda msg: None)
    phases: list[PhaseTiming] = []
    warnings: list[str] = []
    inst = L.instance()
    settings = settings or Settings()

    def phase(name: str, start: float, waiting_s: float = 0.0, detail: str = "") -> None:
        phases.append(PhaseTiming(name=name, seconds=round(time.monotonic() - start, 4),
                                  waiting_s=round(waiting_s, 4), detail=detail))

    t = time.monotonic()
    say("detecting the node")
    inventory = detect(snapshot=snapshot, usage=False)
    phase("detect", t, detail=f"{len(inventory.accelerators)} accelerator(s)")

    t = time.monotonic()
    say("running preflight checks")
    checks = _preflight(inventory, None, demo=demo, force=force, warnings=warnings)
    phase("preflight", t, detail=f"{len(checks)} check(s)")

    t = time.monotonic()
    say("planning")
    catalog = load_catalog()
    plan = make_plan(inventory, catalog, models=models, profile=profile, demo=demo)
    phase("plan", t, detail=f"{len(plan.services)} inference service(s)")

    t = time.monotonic()
    detail = _provision(inventory, plan, demo=demo, dry_run=dry_run, warnings=warnings)
    phase("provision", t, detail=detail)

    if bundle:
        load = _optional("appliance.bundle.apply", "load_bundle_images")
        if load is None:
            raise RuntimeFailure("offline bundles are not supported by this installation", where="--bundle",
                                 fix="install a build of appliance with bundle support")
        t = time.monotonic()
        say(f"loading images from {bundle}")
        if not dry_run:
            load(bundle)
        phase("bundle", t)

    if docker is None:
        from appliance.errors import DockerUnavailable
        from appliance.runtime.docker_adapter import Docker
        try:
            docker = Docker()
        except DockerUnavailable:
            if not dry_run:
                raise
            warnings.append("Docker is unreachable: the changes below assume an empty engine")
    store = None if dry_run else S.releases.open_store()
    previous = S.current_release(store, inst) if store is not None else None
    timings: dict[str, float] = {}
    stack = compose(plan, catalog=catalog, inventory=inventory, settings=settings, warnings=warnings)
    try:
        release_id, result = S.apply_stack(stack, plan, docker=docker, store=store, source="init",
                                           dry_run=dry_run, progress=say, timings=timings)
    finally:
        for name in ("images", "start", "health"):
            if name in timings:
                phases.append(PhaseTiming(name=name, seconds=round(timings[name], 4),
                                          waiting_s=round(timings[name], 4) if name == "health" else 0.0,
                                          detail=(f"{timings.get('images_build_s', 0):.1f}s building"
                                                  if name == "images" else "")))
    endpoints = {s.name: s.endpoint() for s in stack.services if s.endpoint()}
    if "gateway" in endpoints:
        endpoints["gateway"] = endpoints["gateway"] + "/v1"
    return InitResult(ok=True, dry_run=dry_run, instance=inst, release=release_id,
                      previous_release=previous.id if previous else None, plan=plan, stack=stack,
                      changes=result.changes, phases=phases, endpoints=endpoints, preflight=checks,
                      warnings=warnings, next_steps=next_steps(stack, endpoints))


def next_steps(stack, endpoints: dict[str, str]) -> list[str]:
    gw = endpoints.get("gateway")
    chat = next((m for s in stack.services if s.kind == "inference" and s.env.get("MODEL_ROLE") == "chat"
                 for m in s.served_models), None)
    steps = []
    if gw:
        steps.append("create an API key:  appliance keys create --name me")
        if chat:
            steps.append(f"call the API:  curl -s {gw}/chat/completions -H \"Authorization: Bearer $KEY\" "
                         f"-H 'Content-Type: application/json' "
                         f"-d '{{\"model\": \"{chat}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'")
    for app in stack.apps:
        if app in endpoints:
            steps.append(f"open the {app} app:  {endpoints[app]}/")
    steps.append("check health:  appliance status")
    return steps


def describe(result: InitResult) -> Any:  # pragma: no cover - rendering lives in the CLI
    return result
