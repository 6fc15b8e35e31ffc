"""The one deploy pipeline: detect -> preflight -> plan -> weights -> provision -> compose -> convert -> converge
-> record (convert: weights an engine serves only converted, appliance.deploy.convert).

``init``, ``serve``, ``upgrade`` and ``rollback`` all run these steps (:mod:`appliance.deploy.upgrade`
wraps them in the bundle journal); what differs is the :class:`~appliance.deploy.models.DeployRequest`
and where the release's catalog, playbooks and packages come from (:class:`Source`):

* the shipped catalog, or the installed bundle's release directory (an ``init`` after an
  upgrade plans with the upgraded catalog, never silently with the older shipped one);
* for an upgrade, the bundle's own catalog (planned before anything is staged) and, once
  staged, its playbooks and packages.

What stops a deploy: a failing preflight rule (unless ``force``; exit 3), weights a planned
model needs that are not on the node (exit 3), a service that never becomes healthy (exit 1,
the previous release keeps running). Nothing is changed by ``dry_run``; ``create_only`` creates
containers without starting them and records nothing. Each step is timed
(:attr:`DeployResult.phases`, read by the init benchmark).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from appliance.deploy import site as site_mod
from appliance.deploy.models import DeployRequest, DeployResult, StepTiming
from appliance.errors import PreflightFailed, UsageError
from appliance.runtime import labels as L
from appliance.runtime.models import Change
from appliance.state.store import StateStore

Say = Callable[[str], None]


@dataclass
class Source:
    """Where a release's catalog, playbooks and offline packages come from, and its version."""

    version: str
    catalog_dir: Path | None = None      # None: the shipped catalog
    playbooks_dir: Path | None = None    # None: the shipped playbooks
    packages_dir: Path | None = None     # None: <data_dir>/packages when it exists
    origin: str = "shipped"


def installed_source(store: StateStore, inst: str) -> Source:
    """The installed bundle's release directory, else the shipped catalog and playbooks."""
    from appliance import __version__
    from appliance.bundle import journal as J

    mine = J.installed(J.open_store(store), inst)
    if mine is None:
        return Source(version=__version__)
    rdir = Path(mine.release_dir) if mine.release_dir else None
    if rdir is None or not rdir.is_dir():
        return Source(version=mine.version, origin=f"bundle {mine.version} (release directory gone: shipped files)")
    return release_source(mine.version, rdir)


def release_source(version: str, rdir: Path) -> Source:
    return Source(version=version,
                  catalog_dir=rdir / "catalog" if (rdir / "catalog").is_dir() else None,
                  playbooks_dir=rdir / "playbooks" if (rdir / "playbooks" / "site.yml").is_file() else None,
                  packages_dir=rdir / "packages" if (rdir / "packages").is_dir() else None,
                  origin=f"bundle {version}")


@dataclass
class Run:
    """The state of one deploy as its steps fill it in."""

    req: DeployRequest
    say: Say
    store: StateStore | None
    source: Source
    docker: object | None = None
    inst: str = field(default_factory=L.instance)
    catalog: object | None = None
    inventory: object | None = None
    plan: object | None = None
    stack: object | None = None
    result: DeployResult | None = None
    timings: dict = field(default_factory=dict)
    on_switch: Say | None = None    # progress hook during the switch (crash tests' fault points)

    def __post_init__(self) -> None:
        self.result = DeployResult(kind=self.req.kind, dry_run=self.req.dry_run, instance=self.inst,
                                   site_changes=list(self.req.site_changes))

    def timed(self, name: str, start: float, detail: str = "", waiting_s: float = 0.0) -> None:
        self.result.phases.append(StepTiming(name=name, seconds=round(time.monotonic() - start, 4),
                                             waiting_s=round(waiting_s, 4), detail=detail))

    def warn(self, message: str) -> None:
        self.result.warnings.append(message)


# ---- the steps -----------------------------------------------------------------------------------
def connect_docker(run: Run) -> None:
    """A Docker connection; a dry run goes on without one (it then assumes an empty engine)."""
    from appliance.errors import DockerUnavailable
    from appliance.runtime.docker_adapter import Docker

    if run.docker is not None:
        return
    try:
        run.docker = Docker()
    except DockerUnavailable:
        if not run.req.dry_run:
            raise
        run.warn("Docker is unreachable: the changes below assume an empty engine")


def load_catalog(run: Run) -> None:
    from appliance.catalog import load_catalog as load

    run.catalog = load(run.source.catalog_dir, overlay=True) if run.source.catalog_dir else load()


def detect(run: Run) -> None:
    from appliance.inventory.detect import detect as detect_node

    t = time.monotonic()
    run.say("detecting the node")
    run.inventory = detect_node(snapshot=run.req.snapshot, usage=False)
    run.timed("detect", t, f"{len(run.inventory.accelerators)} accelerator(s)")


def host_ports(catalog, settings) -> dict[str, int]:
    """The host ports the stack will publish: the gateway and every catalog app (as compose
    assigns them); UsageError when two are the same."""
    ports = {"gateway": settings.gateway_port}
    for i, name in enumerate(sorted(catalog.apps)):
        port = catalog.apps[name].port if settings.app_port_base is None else settings.app_port_base + i
        if port > 65535:
            raise UsageError(f"app {name} would get port {port}", where="app_port_base",
                             fix=f"choose an app_port_base of at most {65535 - len(catalog.apps) + 1}")
        ports[f"app {name}"] = port
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise UsageError(f"{name} and {seen[port]} would both use port {port}", where="ports",
                             fix="choose distinct ports (--gateway-port / --app-port-base, or `appliance config set`)")
        seen[port] = name
    return ports


def preflight(run: Run, *, images_mib: int = 0) -> None:
    """The provisioning preflight rules; a failure stops the deploy unless ``force`` (a dry run
    reports it). The port rule checks the ports this stack publishes and treats those the box's
    own containers already hold as free."""
    from appliance.provision.preflight import run_preflight
    from appliance.runtime.stack import own_host_ports

    t = time.monotonic()
    run.say("running preflight checks")
    ports = host_ports(run.catalog, run.req.site)
    report = run_preflight(inventory=run.inventory, snapshot=run.req.snapshot, ports=ports,
                           allowed_busy_ports=own_host_ports(run.docker, run.inst) if run.docker else set(),
                           images_mib=images_mib, packages_dir=run.source.packages_dir)
    rules = [r.model_dump(mode="json") for r in report.rules]
    run.result.preflight = rules
    for r in report.rules:
        if r.status == "warn":
            run.warn(f"preflight {r.id}: {r.message}")
    failed = [r for r in report.rules if r.status == "fail"]
    if failed and not run.req.force and not run.req.dry_run:
        report.raise_for_failure()
    for r in failed:
        why = "a real run stops here" if run.req.dry_run and not run.req.force else "going on: --force"
        run.warn(f"preflight {r.id} failed ({why}): {r.message}")
    run.timed("preflight", t, f"{len(rules)} check(s)")


def plan(run: Run) -> None:
    """Plan the site's models (chosen or default, then the served fine-tuned ones, then the
    request's extra ones: appended last so the services already running keep their ports)."""
    from appliance.models.store import stored_models
    from appliance.planner import plan as make_plan

    t = time.monotonic()
    run.say("planning")
    site = run.req.site
    available = None if run.req.snapshot else stored_models()
    served = [m for m in site.served if m in run.catalog.models]
    for gone in sorted(set(site.served) - set(served)):
        run.warn(f"served model {gone} is no longer in the catalog (its overlay file was removed): not served")
    extra = [m for m in [*served, *run.req.extra_models]]
    models = site.models
    if models is None and extra:
        base = make_plan(run.inventory, run.catalog, models=None, profile=site.profile, demo=site.demo,
                         available=available)
        models = [s.model for s in base.services]
    if models is not None:
        models = list(dict.fromkeys([*models, *extra]))
    run.plan = make_plan(run.inventory, run.catalog, models=models, profile=site.profile, demo=site.demo,
                         available=available)
    run.result.plan = run.plan
    run.timed("plan", t, f"{len(run.plan.services)} inference service(s)")


def weights(run: Run, *, shipped: set[str] | None = None) -> None:
    """Every planned model's weights are in the model store, undamaged, at the path the plan
    mounts, before any container is created (:mod:`appliance.deploy.weights`). Missing or damaged
    weights stop a real deploy (exit 3) naming the model, the file and the import command --
    ``--force`` does not change that: nothing starts on missing or damaged weights; a dry run or
    create-only reports them."""
    from appliance.deploy.weights import check_plan, import_packaged

    t = time.monotonic()
    if run.req.mutating:
        for line in import_packaged(run.plan, run.catalog):
            run.say(f"model store: imported {line}")
    found = check_plan(run.plan, run.catalog, shipped=shipped)
    for note in found.notes:
        run.warn(note)
    if found.damaged and run.req.mutating:
        service, message = found.damaged[0]
        raise PreflightFailed(message.split("; fix: ")[0], where=f"service {service}", fix=message.split("; fix: ")[1])
    if found.missing and run.req.mutating:
        service, message = found.missing[0]
        more = f" (and {len(found.missing) - 1} more)" if len(found.missing) > 1 else ""
        raise PreflightFailed(message.split("; fix: ")[0] + more, where=f"service {service}",
                              fix=message.split("; fix: ")[1])
    for _service, message in found.missing + found.damaged:
        run.warn(message)
    total = len([ps for ps in run.plan.services if ps.model_path and not ps.demo])
    run.timed("weights", t, f"{found.present}/{total} present")


def provision(run: Run) -> None:
    """The site playbook for this node (check mode with --dry-run). Skipped for the demo stack
    (it needs no driver, toolkit or host change -- only Docker, which preflight checks), for a
    snapshot and for create-only."""
    t = time.monotonic()
    if run.req.site.demo:
        detail = "skipped: the demo stack needs no host changes"
    elif run.req.snapshot or run.req.create_only:
        detail = "skipped: planning for a snapshot / creating only"
    else:
        from appliance.provision.site import provision as run_provision

        kwargs = {"inventory": run.inventory, "plan": run.plan, "check": run.req.dry_run}
        if run.source.playbooks_dir is not None:
            kwargs["playbooks_dir"] = run.source.playbooks_dir
        if run.source.packages_dir is not None:
            kwargs["packages_dir"] = run.source.packages_dir
        run.say("provisioning the host" + (" (check mode)" if run.req.dry_run else ""))
        report = run_provision(**kwargs)
        report.raise_for_failure()
        detail = "check mode" if run.req.dry_run else f"done: {report.changed} change(s)"
    run.timed("provision", t, detail)


def compose(run: Run) -> None:
    from appliance.runtime.compose import compose as compose_stack

    run.stack = compose_stack(run.plan, catalog=run.catalog, inventory=run.inventory,
                              settings=run.req.site.stack_settings(), warnings=run.result.warnings)
    run.result.stack = run.stack


def convert(run: Run) -> None:
    """Weights an engine serves only converted (vllm_musa) are converted with its own tool, in its
    image, before any service starts (:mod:`appliance.deploy.convert`); a dry run says what it would do."""
    from appliance.deploy.convert import convert_all, pending

    if not pending(run.plan) or run.docker is None or run.req.snapshot:
        return
    t = time.monotonic()
    lines = convert_all(run.plan, run.inventory, run.docker, instance=run.inst, dry_run=not run.req.mutating,
                        say=run.say)
    for line in lines:
        run.say(line)
    run.timed("convert", t, f"{len(lines)} service(s)")


def converge(run: Run, *, source: str, reuse_same: bool, plan=None) -> None:
    """Images, the apps' keys, then the runtime's blue/green apply (health-gated; it records the
    release pending -> active). Then the local builds the apply replaced are pruned."""
    from appliance.runtime import stack as S

    if run.req.create_only:
        t = time.monotonic()
        ids = S.create_stack(run.stack, docker=run.docker, progress=run.say)
        run.timed("create", t, "created, not started")
        run.result.changes = [Change(action="create", target=n, detail=f"container {cid[:12]} (not started)")
                              for n, cid in ids.items()]
        run.result.next_steps = ["inspect them: docker inspect <container>",
                                 "remove them: appliance down --purge --yes"]
        return

    def keys(stack) -> list[Change]:
        from appliance.gateway.users import export_users_files
        from appliance.gateway.wiring import ensure_app_keys
        from appliance.runtime.engine_keys import ensure_stack_secrets

        export_users_files(store=run.store)  # users.json, links.json, session.key beside keys.json (sign-in)
        from appliance.deploy import tls as T

        cert = T.ensure(stack.settings)  # the box's certificate (the admin's installed, or self-signed), if TLS
        if cert is not None:
            run.result.tls = {"fingerprint_sha256": cert.fingerprint_sha256, "self_signed": cert.self_signed,
                              "created": cert.created, "cert_path": cert.cert_path, "not_after": cert.not_after}
        made = [Change(action="write-config", target=k.key_file, detail=f"API key {k.key_name} for app {k.app}")
                for k in ensure_app_keys(stack, run.catalog, run.store)]
        # last: every engine's secret, the gateway's copy of them, its config directory handed to it
        return made + ensure_stack_secrets(stack)

    store = None if run.req.dry_run else run.store
    progress = run.on_switch or run.say
    try:
        release_id, applied = S.apply_stack(run.stack, plan or run.plan, docker=run.docker, store=store,
                                            source=source, version=run.source.version, dry_run=run.req.dry_run,
                                            progress=progress, timings=run.timings, reuse_same=reuse_same,
                                            before_converge=keys)
    finally:
        for name in ("images", "start", "health"):
            if name in run.timings:
                run.result.phases.append(StepTiming(
                    name=name, seconds=round(run.timings[name], 4),
                    waiting_s=round(run.timings[name], 4) if name == "health" else 0.0,
                    detail=f"{run.timings.get('images_build_s', 0):.1f}s building" if name == "images" else ""))
    run.result.release = release_id
    run.result.changes = applied.changes
    if release_id is not None and run.docker is not None:
        run.result.pruned_images = prune(run, applied.removed_images)


def prune(run: Run, candidates: list[str]) -> list[str]:
    """Remove replaced local builds no release of this instance still needs (current, previous)."""
    from appliance.runtime import releases
    from appliance.runtime.stack import prune_images

    if not candidates:
        return []
    rstore = releases.open_store(run.store)
    keep = {s.run_image() for r in (releases.current(rstore, run.inst), releases.previous(rstore, run.inst))
            if r is not None and r.stack is not None for s in r.stack.services}
    return prune_images(run.docker, set(candidates), keep)


def record(run: Run) -> None:
    """Remember the site configuration this deploy ran with (and with which release)."""
    if not run.req.mutating or run.result.release is None:
        return
    site = run.req.site.model_copy(update={"served": [m for m in run.req.site.served if m in run.catalog.models]})
    site_mod.save(run.store, run.inst, site)
    site_mod.save_for_release(run.store, run.inst, run.result.release, site)
    if run.req.site_changes:
        run.store.add_event("deploy", f"site configuration changed by {run.req.kind}: "
                                      + "; ".join(run.req.site_changes)[:400],
                            data={"instance": run.inst, "changes": run.req.site_changes})


def finish(run: Run) -> DeployResult:
    """Endpoints and next steps for the person at the terminal."""
    from appliance.runtime import stack as S

    res = run.result
    if run.stack is not None:
        ep = run.stack.endpoints()
        res.endpoints = ({"gateway": ep["gateway"]} if ep["gateway"] else {}) | {
            name: url.rstrip("/") for name, url in ep["apps"].items()}
    if res.release is not None and res.previous_release is None:
        prev = S.releases.previous(S.releases.open_store(run.store), run.inst) if run.store else None
        res.previous_release = prev.id if prev else None
    if not res.next_steps and run.stack is not None:
        res.next_steps = next_steps(run.stack, res.endpoints)
        if res.tls and res.tls.get("self_signed"):
            res.next_steps.insert(0, f"HTTPS with a self-signed certificate: when a browser or client asks, its "
                                     f"SHA-256 fingerprint must be {res.tls['fingerprint_sha256']} "
                                     f"(clients can trust {res.tls['cert_path']})")
    return res


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
                         f"-d '{{\"model\": \"{chat}\", "
                         f"\"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'")
    for app in stack.apps:
        if app in endpoints:
            steps.append(f"open the {app} app:  {endpoints[app]}/")
    steps.append("check health:  appliance status")
    steps.append("the admin console:  appliance console   (provision runs it as appliance-console.service)")
    return steps


# ---- init and serve: the steps in order ----------------------------------------------------------
def deploy(req: DeployRequest, *, say: Say | None = None, store: StateStore | None = None,
           docker=None) -> DeployResult:
    """Install or converge the stack from the installed release (``init`` without a bundle, ``serve``).

    Bundles (``upgrade``, ``init --bundle``) and ``rollback`` go through
    :mod:`appliance.deploy.upgrade`, which runs these same steps inside the journal.
    """
    if req.snapshot and req.mutating:
        raise UsageError("--snapshot plans for another node, whose devices this machine does not have",
                         where="--snapshot", fix="add --dry-run (print the changes) or --create-only")
    say = say or (lambda msg: None)
    store = site_mod.open_store(store) if not req.dry_run else _read_store(store)
    run = Run(req=req, say=say, store=store, source=installed_source(store, L.instance()) if store
              else Source(version=_shipped()), docker=docker)
    from appliance.runtime import stack as S

    detect(run)
    load_catalog(run)
    host_ports(run.catalog, run.req.site)  # bad ports are a usage error before Docker is even asked
    connect_docker(run)
    preflight(run)
    plan(run)
    weights(run)
    provision(run)
    compose(run)
    convert(run)
    current = S.current_release(store, run.inst) if store is not None else None
    run.result.previous_release = current.id if current else None
    run.result.from_version = run.result.to_version = run.source.version
    converge(run, source=req.kind, reuse_same=True)
    record(run)
    return finish(run)


def _shipped() -> str:
    from appliance import __version__

    return __version__


def _read_store(store: StateStore | None) -> StateStore | None:
    """For a dry run: the state if it exists (never created by a dry run)."""
    if store is not None:
        return store
    from appliance.paths import state_path

    return site_mod.open_store(StateStore(state_path())) if state_path().exists() else None
