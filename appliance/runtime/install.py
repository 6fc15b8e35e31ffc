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

from appliance.errors import RuntimeFailure
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


def host_ports(catalog, settings: Settings) -> dict[str, int]:
    """The host ports the stack will publish: the gateway and every catalog app."""
    ports = {"gateway": settings.gateway_port}
    for i, name in enumerate(sorted(catalog.apps)):
        ports[f"app {name}"] = (catalog.apps[name].port if settings.app_port_base is None
                                else settings.app_port_base + i)
    return ports


def _own_ports(docker) -> set[int]:
    """Host ports this instance's containers already publish (a re-run may reuse them)."""
    if docker is None:
        return set()
    own = set()
    for c in docker.list_containers(L.instance_filter(L.instance())):
        own.update(int(p["PublicPort"]) for p in c.ports if p.get("PublicPort"))
    return own


def _preflight(inventory, *, ports: dict[str, int], own_ports: set[int], snapshot: str | None, force: bool,
               dry_run: bool, warnings: list[str]) -> list[dict]:
    """The provisioning package's preflight rules: fail stops init (unless force), warn is shown.

    The port rule checks the host ports this stack publishes, allowing those our own
    containers already hold; the agent's metrics port is not init's to check.
    """
    run_preflight = _optional("appliance.provision.preflight", "run_preflight")
    if run_preflight is None:
        warnings.append("preflight checks are not installed; skipped")
        return []
    report = run_preflight(inventory=inventory, snapshot=snapshot, ports=ports, allowed_busy_ports=own_ports)
    rules = [r.model_dump(mode="json") for r in getattr(report, "rules", [])]
    for r in rules:
        if r.get("status") == "warn":
            warnings.append(f"preflight {r.get('id')}: {r.get('message', '')}")
    failed = [r for r in rules if r.get("status") == "fail"]
    if failed and not force and not dry_run:
        report.raise_for_failure()
    for r in failed:
        why = "a real run stops here" if dry_run and not force else "going on: --force"
        warnings.append(f"preflight {r.get('id')} failed ({why}): {r.get('message', '')}")
    return rules


def _provision(inventory, plan, *, demo: bool, dry_run: bool, warnings: list[str], progress) -> str:
    """Run the site playbook for this node (check mode with --dry-run); skipped for --demo."""
    if demo:
        return "skipped: the demo stack needs no host changes"
    provision = _optional("appliance.provision.site", "provision")
    if provision is None:
        warnings.append("provisioning is not installed; skipped (run `appliance provision` yourself)")
        return "not installed"
    report = provision(inventory=inventory, plan=plan, check=dry_run)
    if hasattr(report, "raise_for_failure"):
        report.raise_for_failure()
    return "check mode" if dry_run else "done"


def init(*, models: list[str] | None = None, demo: bool = False, dry_run: bool = False, force: bool = False,
         profile: str = "default", snapshot: str | None = None, bundle: str | None = None,
         settings: Settings | None = None, progress: Progress | None = None, docker=None,
         create_only: bool = False) -> InitResult:
    """Install (or converge) the whole stack. Raises an ApplianceError on failure."""
    from appliance.catalog import load_catalog
    from appliance.errors import UsageError
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from appliance.runtime import stack as S
    from appliance.runtime.compose import compose

    say = progress or (lambda msg: None)
    if bundle:
        # a first install from a bundle takes the same verified, journaled path as an upgrade
        from_bundle = _optional("appliance.bundle.apply", "init_from_bundle")
        if from_bundle is None:
            raise RuntimeFailure("offline bundles are not supported by this installation", where="--bundle",
                                 fix="install a build of appliance with bundle support")
        if dry_run or create_only:
            raise UsageError("--bundle cannot be combined with --dry-run or --create-only", where="--bundle",
                             fix="check a bundle with `appliance bundle verify FILE` / `bundle inspect FILE`")
        return from_bundle(bundle, models=models, demo=demo, profile=profile, snapshot=snapshot,
                           settings=settings, progress=progress)
    if snapshot and not (dry_run or create_only):
        raise UsageError("--snapshot plans for another node, whose devices this machine does not have",
                         where="--snapshot", fix="add --dry-run (print the changes) or --create-only")
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

    if docker is None:
        from appliance.errors import DockerUnavailable
        from appliance.runtime.docker_adapter import Docker
        try:
            docker = Docker()
        except DockerUnavailable:
            if not (dry_run and not create_only):
                raise
            warnings.append("Docker is unreachable: the changes below assume an empty engine")

    t = time.monotonic()
    say("running preflight checks")
    catalog = load_catalog()
    checks = _preflight(inventory, ports=host_ports(catalog, settings), own_ports=_own_ports(docker),
                        snapshot=snapshot, force=force, dry_run=dry_run, warnings=warnings)
    phase("preflight", t, detail=f"{len(checks)} check(s)")

    t = time.monotonic()
    say("planning")
    plan = make_plan(inventory, catalog, models=models, profile=profile, demo=demo)
    phase("plan", t, detail=f"{len(plan.services)} inference service(s)")

    t = time.monotonic()
    if snapshot or create_only:
        detail = "skipped: planning for a snapshot / creating only"
    else:
        detail = _provision(inventory, plan, demo=demo, dry_run=dry_run, warnings=warnings, progress=say)
    phase("provision", t, detail=detail)

    store = None if dry_run else S.releases.open_store()
    previous = S.current_release(store, inst) if store is not None else None
    timings: dict[str, float] = {}
    stack = compose(plan, catalog=catalog, inventory=inventory, settings=settings, warnings=warnings)
    if create_only:
        from appliance.runtime.models import Change

        t = time.monotonic()
        ids = S.create_stack(stack, docker=docker, progress=say)
        phase("create", t, detail="created, not started")
        return InitResult(ok=True, dry_run=False, instance=inst, plan=plan, stack=stack, phases=phases,
                          changes=[Change(action="create", target=n, detail=f"container {cid[:12]} (not started)")
                                   for n, cid in ids.items()],
                          preflight=checks, warnings=warnings,
                          next_steps=["inspect them: docker inspect <container>",
                                      "remove them: appliance down --purge --yes"])
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
