"""Build the :class:`DeployRequest` of each command from the recorded site configuration.

Every request starts from the configuration the state holds (``appliance config show``); the
command's flags change only what they name, and the request lists those changes (``init``
prints them). So ``appliance init --yes`` a year later keeps the ports, bind address, models
and served fine-tuned models the installer chose.
"""

from __future__ import annotations

from typing import Any

from appliance.deploy import site as site_mod
from appliance.deploy.models import DeployRequest, DeployResult
from appliance.deploy.site import SiteConfig
from appliance.runtime import labels as L
from appliance.state.store import StateStore


def recorded_site(store: StateStore | None = None) -> tuple[SiteConfig, bool]:
    """(the recorded configuration or the defaults, whether one was recorded). Never creates
    the state file."""
    from appliance.paths import state_path

    if store is None:
        if not state_path().exists():
            return SiteConfig(), False
        store = StateStore(state_path())
    inst = L.instance()
    found = site_mod.load(store, inst)
    if found is not None:
        return found, True
    derived = _from_release(store, inst)
    return (derived, True) if derived is not None else (SiteConfig(), False)


def _from_release(store: StateStore, inst: str) -> SiteConfig | None:
    """A box installed before site configurations existed: its running release says it all."""
    from appliance.runtime import releases

    release = releases.current(releases.open_store(store), inst)
    if release is None or release.plan is None or release.stack is None:
        return None
    from appliance.catalog import load_catalog

    plan = release.plan
    catalog = load_catalog()
    fine_tuned = [s.model for s in plan.services
                  if s.model in catalog.models and catalog.models[s.model].fine_tune is not None]
    return SiteConfig(**release.stack.settings.model_dump(),
                      models=[s.model for s in plan.services if s.model not in fine_tuned] or None,
                      served=fine_tuned, profile=plan.profile, demo=any(s.demo for s in plan.services))


RESET = object()  # a flag given as "back to the default" (e.g. ``--models default``)


def with_changes(changes: dict[str, Any], store: StateStore | None = None,
                 where: str = "options") -> tuple[SiteConfig, list[str]]:
    """The recorded configuration with ``changes`` applied: None = not given, :data:`RESET` =
    back to the default."""
    base, _ = recorded_site(store)
    given = {k: (None if v is RESET else v) for k, v in changes.items() if v is not None}
    site = site_mod.merge(base, given, where=where)
    return site, site_mod.differences(base, site)


def init_request(*, models: list[str] | None = None, demo: bool | None = None, profile: str | None = None,
                 bind_ip: str | None = None, gateway_port: int | None = None, app_port_base: int | None = None,
                 health_timeout_s: float | None = None, bundle: str | None = None, dry_run: bool = False,
                 force: bool = False, create_only: bool = False, snapshot: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None, insecure_http: bool | None = None,
                 cluster: dict[str, Any] | None = None, store: StateStore | None = None) -> DeployRequest:
    """``appliance init``: flags left out (None) keep the recorded value; ``models=["default"]``
    goes back to the catalog's default set, ``["none"]`` serves no model (a cluster head whose
    models run on the workers). TLS: :func:`tls_changes`. ``cluster``: a node's part of
    ``init --inventory`` (``cluster_role``, ``node_address``, ``engine_port_base``,
    ``remote_engines``: :class:`appliance.runtime.models.Settings`)."""
    if models == ["default"]:
        models = RESET
    elif models == ["none"]:
        models = []
    changes = {"models": models, "demo": demo, "profile": profile, "bind_ip": bind_ip,
               "gateway_port": gateway_port, "app_port_base": app_port_base, "health_timeout_s": health_timeout_s,
               **(cluster or {})}
    site, changed = with_changes(changes, store)
    tls = tls_changes(site, tls_cert=tls_cert, tls_key=tls_key, insecure_http=insecure_http)
    if tls:
        site, changed = with_changes({**changes, **tls}, store)
    return DeployRequest(kind="init", site=site, site_changes=changed, bundle=bundle, dry_run=dry_run, force=force,
                         create_only=create_only, snapshot=snapshot)


def tls_changes(site: SiteConfig, *, tls_cert: str | None, tls_key: str | None,
                insecure_http: bool | None) -> dict[str, Any]:
    """What the TLS flags change, checked before anything changes (one line, exit 2).

    An admin's certificate (``--tls-cert`` and ``--tls-key`` together) is read and checked now.
    A bind address beyond loopback needs TLS: without a certificate of the admin's, the box's
    self-signed one (made by the deploy, its fingerprint printed) -- unless ``--insecure-http``
    says, explicitly, to serve plain HTTP there."""
    from appliance.deploy import tls as T
    from appliance.errors import UsageError

    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key go together", where="--tls-cert" if tls_key else "--tls-key",
                         fix="give both: the PEM certificate and its private key")
    if tls_cert and insecure_http:
        raise UsageError("--insecure-http cannot be combined with a certificate", where="--insecure-http",
                         fix="give either --tls-cert/--tls-key or --insecure-http")
    if tls_cert:
        from pathlib import Path

        T.load_certificate(tls_cert, tls_key)
        return {"tls": True, "tls_cert_source": str(Path(tls_cert).resolve()),
                "tls_key_source": str(Path(tls_key).resolve()), "insecure_http": False}
    if insecure_http:
        return {"tls": False, "tls_cert_source": RESET, "tls_key_source": RESET, "insecure_http": True}
    if insecure_http is False and site.insecure_http:
        site = site.model_copy(update={"insecure_http": False})
        out: dict[str, Any] = {"insecure_http": False}
    else:
        out = {}
    if T.needs_tls(site.bind_ip) and not site.tls and not site.insecure_http:
        out.update({"tls": True, "tls_cert_source": RESET, "tls_key_source": RESET})
    return out


def run(req: DeployRequest, *, say=None, progress=None, store: StateStore | None = None) -> DeployResult:
    """Run a request through the pipeline (bundles and rollbacks inside the journal)."""
    from appliance.deploy import pipeline, upgrade
    from appliance.errors import UsageError

    if req.kind == "rollback":
        return upgrade.rollback(req, say=say, store=store)
    if req.bundle:
        if req.dry_run or req.create_only:
            raise UsageError("--bundle cannot be combined with --dry-run or --create-only", where="--bundle",
                             fix="check a bundle with `appliance bundle verify FILE` / `bundle inspect FILE`")
        return upgrade.install_bundle(req, say=say, progress=progress, store=store)
    return pipeline.deploy(req, say=say, store=store)


def upgrade_request(bundle: str, *, allow_downgrade: bool = False, pubkey: str | None = None,
                    store: StateStore | None = None) -> DeployRequest:
    site, _ = recorded_site(store)
    return DeployRequest(kind="upgrade", site=site, bundle=str(bundle), allow_downgrade=allow_downgrade,
                         pubkey=str(pubkey) if pubkey else None)


def rollback_request(store: StateStore | None = None) -> DeployRequest:
    site, _ = recorded_site(store)
    return DeployRequest(kind="rollback", site=site)


def serve(ref: str, *, say=None, store: StateStore | None = None) -> DeployResult:
    """``appliance serve JOB|MODEL``: add a (fine-tuned) model to the running stack.

    The model joins the site configuration's served models (so later ``init`` and upgrades keep
    it) and the stack is deployed again: only the new service is created and health-gated, the
    gateway's routes gain the model, and a new release records it (``rollback`` returns to the
    previous one).
    """
    from appliance.catalog import load_catalog
    from appliance.deploy import pipeline
    from appliance.errors import UsageError
    from appliance.runtime import releases
    from appliance.train.serve import resolve_model

    inst = L.instance()
    store = site_mod.open_store(releases.open_store(store))
    release = releases.current(store, inst)
    source = pipeline.installed_source(store, inst)
    catalog = load_catalog(source.catalog_dir, overlay=True) if source.catalog_dir else load_catalog()
    model_id = resolve_model(ref, store, inst, catalog)
    if release is None or release.plan is None:
        raise UsageError("no stack is installed for this instance", where=f"instance {inst}",
                         fix=f"run `appliance init --yes` first (or `appliance init --models {model_id} --yes`)")
    svc = next((s for s in release.plan.services if s.model == model_id), None)
    if svc is not None:
        gw = release.stack.endpoints()["gateway"] if release.stack else None
        return DeployResult(kind="serve", instance=inst, release=release.id, model=model_id, service=svc.name,
                            served_model_name=svc.served_model_name, already_served=True,
                            endpoints={"gateway": gw} if gw else {}, stack=release.stack, plan=release.plan)
    site, _ = recorded_site(store)
    new_site = site.model_copy(update={"served": list(dict.fromkeys([*site.served, model_id]))})
    req = DeployRequest(kind="serve", site=new_site, site_changes=site_mod.differences(site, new_site))
    res = pipeline.deploy(req, say=say, store=store)
    planned = next(s for s in res.plan.services if s.model == model_id)
    res.model, res.service, res.served_model_name = model_id, planned.name, planned.served_model_name
    res.changes = [c for c in res.changes if c.action != "keep"]
    return res
