"""Bundles and rollback through the one pipeline: the same steps as ``init``, inside the journal.

``appliance upgrade FILE`` and ``appliance init --bundle FILE``:

1. recover an operation a crash interrupted (finish it or roll it back);
2. verify the bundle (signature, structure, version policy against the *installed version*,
   delta blobs, disk, every hash) -- nothing has changed yet;
3. detect, preflight, plan with the bundle's catalog plus the node's fine-tuned models (a
   fine-tuned model whose base the new catalog lacks refuses the upgrade here), weights -- still
   nothing changed;
4. journaled: stage -> load images -> provision with the bundle's playbooks and packages ->
   switch (blue/green, health-gated) -> commit (the journal's ``done``, the installed version
   and the site configuration in one transaction).

Any failure in step 4 rolls back to the release that was running (or removes a partial first
install). ``appliance rollback`` returns to the previous release's recorded stack and site
configuration, journaled the same way.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from appliance.bundle import apply as B
from appliance.bundle import journal as J
from appliance.deploy import pipeline as P
from appliance.deploy import site as site_mod
from appliance.deploy.models import DeployRequest, DeployResult, StepTiming
from appliance.errors import ApplianceError, BundleError, CatalogError, RuntimeFailure
from appliance.progress import NullProgress, Progress
from appliance.runtime import labels as L
from appliance.state.store import StateStore


def installed_version(store: StateStore, inst: str) -> str | None:
    """What rollback protection compares against: the installed bundle version; the shipped
    version when a stack runs that never came from a bundle; None before anything is installed."""
    from appliance.runtime import stack as S

    mine = J.installed(store, inst)
    if mine is not None:
        return mine.version
    return P._shipped() if S.current_release(store, inst) is not None else None


def preview(path: str | Path, *, pubkey: Path | None = None, allow_downgrade: bool = False) -> dict:
    """The cheap checks (structure, signature, version policy) for the confirmation prompt."""
    store = J.open_store()
    inst = L.instance()
    current = installed_version(store, inst)
    opened = B.open_checked(path, current, pubkey=pubkey, allow_downgrade=allow_downgrade)
    return {"from_version": current, "to_version": opened.manifest.version}


def install_bundle(req: DeployRequest, *, say: P.Say | None = None, progress: Progress | None = None,
                   store: StateStore | None = None) -> DeployResult:
    """Upgrade (or first-install) this node from ``req.bundle``; roll back automatically on failure."""
    progress = progress or NullProgress()
    say = say or progress.note
    store = site_mod.open_store(J.open_store(store))
    inst = L.instance()
    path = Path(req.bundle)
    with J.op_lock(inst) as held:
        J.require_lock_free(held, inst)
        recovered = B.recover_locked(store, say)
        docker = B.docker_client()
        try:
            return _install_locked(req, path, store, inst, docker, say, progress, recovered)
        finally:
            docker.close()


def _install_locked(req: DeployRequest, path: Path, store: StateStore, inst: str, docker, say: P.Say,
                    progress: Progress, recovered) -> DeployResult:
    from appliance.runtime import stack as S

    from_version = installed_version(store, inst)
    t = time.monotonic()
    opened, disk = B.verify(path, from_version, docker=docker, pubkey=Path(req.pubkey) if req.pubkey else None,
                            allow_downgrade=req.allow_downgrade, progress=progress)
    manifest = opened.manifest
    current = S.current_release(store, inst)
    kind = "upgrade" if current is not None else "install"
    with tempfile.TemporaryDirectory(prefix="appliance-bundle-catalog-") as tmp:
        catalog_dir = B.extract_files(opened, "catalog", Path(tmp))
        run = P.Run(req=req, say=say, store=store, docker=docker,
                    source=P.Source(version=manifest.version, catalog_dir=catalog_dir,
                                    origin=f"bundle {manifest.version}"))
        run.result.kind = kind
        run.result.recovered = recovered
        run.result.disk = disk
        run.result.from_version, run.result.to_version = from_version, manifest.version
        run.result.previous_release = current.id if current else None
        run.timed("verify", t, f"{opened.index.file_size} bytes, signed by {opened.signer.key_id}")
        P.detect(run)
        try:
            P.load_catalog(run)
        except CatalogError as exc:
            raise BundleError(f"refused: with this bundle's catalog, {exc.message}", where=exc.where or str(path),
                              fix=exc.fix or "get a bundle whose catalog keeps the base models of this node's "
                                             "fine-tuned models, or remove their overlay files") from None
        P.preflight(run, images_mib=B.unpack_bytes(opened) // (1024 * 1024))
        P.plan(run)
        # the release directory replaces the temporary catalog once staged (same files)
    from appliance.deploy.weights import bundle_models

    P.weights(run, shipped=set(bundle_models(manifest)))
    op = J.begin(store, instance=inst, kind=kind, bundle=str(path.resolve()), manifest_sha256=opened.manifest_sha256,
                 from_version=from_version, to_version=manifest.version, from_release=current.id if current else None)
    try:
        _journaled_steps(run, op, opened, progress)
    except BaseException as exc:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        say(f"{kind} failed at step {op.step}: {message.splitlines()[0]}")
        try:
            B.roll_back(store, op, docker, say)
        except ApplianceError as rb_exc:
            J.finish(store, op, J.FAILED, f"{message}; rollback also failed: {rb_exc.message}")
            raise RuntimeFailure(f"{kind} to {manifest.version} failed at {op.step} ({message.splitlines()[0]})"
                                 f" and rolling back failed too: {rb_exc.message}", where="upgrade",
                                 fix="run `appliance status`; re-run `appliance upgrade` or `appliance rollback`") \
                from None
        J.finish(store, op, J.ROLLED_BACK, message)
        if not isinstance(exc, Exception):
            raise
        back = f"rolled back to {from_version}" if current else "nothing was left installed"
        raise RuntimeFailure(f"{kind} to {manifest.version} failed at step {op.step}: "
                             f"{message.splitlines()[0]}; {back}", where="upgrade",
                             fix="fix the cause above and re-run the same command") from None
    res = run.result
    res.message = f"release {res.release} ({manifest.version}) is active"
    try:
        res.cleanup = B.cleanup(store, docker)
    except Exception as exc:  # noqa: BLE001 - the upgrade is committed; cleanup is best effort
        res.cleanup = [f"cleanup skipped: {exc}"]
    return P.finish(run)


def _journaled_steps(run: P.Run, op: J.Op, opened, progress: Progress) -> None:
    store, res, manifest = run.store, run.result, opened.manifest

    def step(name: str) -> float:
        J.set_step(store, op, name)
        return time.monotonic()

    t = step("staged")
    rdir, res.staged_bytes, res.reused_bytes = B.stage(opened, store, op.instance, progress)
    run.source = P.release_source(manifest.version, rdir)
    from appliance.deploy.weights import import_bundle_models
    from appliance.runtime.images import carry_wheels

    imported = import_bundle_models(rdir, manifest, run.catalog, progress)
    wheels = carry_wheels(rdir / "wheels")
    run.timed("stage", t, f"{len(manifest.files)} file(s) in {rdir}"
                          + (f"; model store: {', '.join(imported)}" if imported else "")
                          + (f"; {len(wheels)} wheel(s) for image recipes" if wheels else ""))

    t = step("loaded")
    run.say(f"loading {len(manifest.images)} image(s)")
    res.loaded_images, staged = B.load(run.docker, opened, progress)
    res.staged_bytes += staged
    run.timed("load", t, f"{len(res.loaded_images)} image(s) loaded or re-tagged, {res.staged_bytes} bytes staged, "
                         f"{res.reused_bytes} already on the node")

    step("provisioned")
    P.provision(run)

    step("switch")

    def switch_progress(message: str) -> None:
        run.say(message)
        if message.startswith("waiting for"):
            B.fault("switch")  # new containers started beside the old ones
        elif message.startswith("removing the old"):
            B.fault("switch-remove")

    run.on_switch = switch_progress
    P.compose(run)
    P.convert(run)
    P.converge(run, source=f"bundle {manifest.version}", reuse_same=False)
    J.set_step(store, op, "commit", to_release=res.release)
    B.fault("commit")
    with store.transaction():
        J.set_installed(store, op.instance, manifest.version, manifest_sha256=opened.manifest_sha256,
                        release_dir=str(rdir))
        P.record(run)
        J.finish(store, op, J.DONE)
        B.fault("done")


# ---- rollback ------------------------------------------------------------------------------------
def rollback_target(store: StateStore | None = None) -> tuple[str, str]:
    """(current, the release a rollback returns to) for the confirmation prompt; BundleError
    when there is none."""
    from appliance.runtime import releases

    rstore = releases.open_store(J.open_store(store))
    inst = L.instance()
    current = releases.current(rstore, inst)
    target = releases.previous(rstore, inst) if current else None
    if current is None or target is None:
        raise BundleError("there is no previous release to return to", where=f"instance {inst}",
                          fix="`appliance status` shows the installed release")
    return f"{current.version} (release {current.id})", f"{target.version} (release {target.id})"


def rollback(req: DeployRequest, *, say: P.Say | None = None, store: StateStore | None = None) -> DeployResult:
    """Return to the previous release: its recorded stack (blue/green, health-gated), its site
    configuration and its version; journaled like an upgrade, undone on failure."""
    from appliance.runtime import releases

    say = say or (lambda m: None)
    store = site_mod.open_store(J.open_store(store))
    inst = L.instance()
    with J.op_lock(inst) as held:
        J.require_lock_free(held, inst)
        recovered = B.recover_locked(store, say)
        rstore = releases.open_store(store)
        current = releases.current(rstore, inst)
        target = releases.previous(rstore, inst) if current else None
        if current is None or target is None or target.stack is None:
            raise BundleError("there is no previous release to return to", where=f"instance {inst}",
                              fix="`appliance status` shows the installed release")
        site = site_mod.load_for_release(store, inst, target.id) or site_mod.load(store, inst) or req.site
        docker = B.docker_client()
        try:
            row = next((v for v in J.versions(store, inst) if v["version"] == target.version), None)
            source = (P.release_source(target.version, Path(row["release_dir"]))
                      if row and Path(row["release_dir"]).is_dir()
                      else P.Source(version=target.version or P._shipped()))
            run = P.Run(req=req.model_copy(update={"site": site}), say=say, store=store, docker=docker, source=source)
            res = run.result
            res.recovered, res.previous_release = recovered, current.id
            res.from_version, res.to_version = current.version, target.version
            res.plan, res.stack = target.plan, target.stack
            run.plan, run.stack = target.plan, target.stack
            P.load_catalog(run)
            op = J.begin(store, instance=inst, kind="rollback", bundle=None, manifest_sha256=None,
                         from_version=current.version, to_version=target.version, from_release=current.id,
                         step="staged")
            t = time.monotonic()
            try:
                J.set_step(store, op, "loaded")
                res.loaded_images = B.ensure_version_images(store, inst, target.version, docker)
                J.set_step(store, op, "switch")
                P.converge(run, source=f"rollback to {target.id}", reuse_same=False, plan=target.plan)
                J.set_step(store, op, "commit", to_release=res.release)
                B.fault("commit")
                with store.transaction():
                    J.set_installed(store, inst, target.version or P._shipped(),
                                    manifest_sha256=row["manifest_sha256"] if row else None,
                                    release_dir=row["release_dir"] if row else None)
                    P.record(run)
                    J.finish(store, op, J.DONE)
            except BaseException as exc:
                message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                B.roll_back(store, op, docker, say)
                J.finish(store, op, J.ROLLED_BACK, message)
                if not isinstance(exc, Exception):
                    raise
                raise RuntimeFailure(f"rollback to {target.version} failed: {message.splitlines()[0]}; release "
                                     f"{current.id} ({current.version}) is still active", where="rollback",
                                     fix="fix the cause above and re-run `appliance rollback`") from None
            res.phases.append(StepTiming(name="rollback", seconds=round(time.monotonic() - t, 3)))
            res.message = f"release {res.release} ({target.version}, as release {target.id}) is active"
            return P.finish(run)
        finally:
            docker.close()
