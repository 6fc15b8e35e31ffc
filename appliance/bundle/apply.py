"""Apply a bundle: verify -> preflight -> stage -> load -> provision -> switch -> commit; rollback; recovery.

Nothing on the node changes until the whole bundle is verified (signature, structure, every
hash, version policy, delta blobs present, disk space). From then on each step is journaled
(:mod:`appliance.bundle.journal`) before it runs:

* stage, load and provision only *add* things (blobs, a release directory, images); the
  running stack is untouched, so undoing them is just not using them;
* switch is the runtime's blue/green apply: new containers start beside the old ones, and
  the old ones go only once every new one is healthy; the runtime records the new release
  ``pending`` and makes it ``active`` in one transaction when all are healthy;
* on any failure -- or, after a crash, in :func:`recover` -- an operation whose new release
  never became active is rolled back: the containers are converged to the release that was
  active before (or removed, on a first install) and the pending release is marked failed.
  One whose release did become active is completed. There is never a mix.

``APPLIANCE_BUNDLE_FAULT=<point>`` SIGKILLs the process at a named point (load, switch,
switch-remove, commit, done); the crash tests use it. It is read only at those points.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field

from appliance.bundle import journal as J
from appliance.bundle import releasectl as R
from appliance.bundle.contentstore import ContentStore
from appliance.bundle.manifest import Manifest, compare_versions
from appliance.bundle.progress import NullProgress, Progress
from appliance.bundle.reader import OpenedBundle, hash_blobs, open_bundle
from appliance.errors import ApplianceError, BundleError, PreflightFailed, RuntimeFailure
from appliance.state.store import StateStore

FAULT_ENV = "APPLIANCE_BUNDLE_FAULT"
Say = Callable[[str], None]


def _fault(point: str) -> None:
    """Crash-test hook: die like a power cut at ``point`` when asked to."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class StepTiming(BaseModel):
    name: str
    seconds: float
    detail: str = ""


class RecoveryResult(BaseModel):
    op: int
    kind: str
    from_version: str | None
    to_version: str | None
    interrupted_at: str
    action: str = Field(description="completed | rolled_back | in_progress")
    release: int | None = None
    message: str


class DiskCheck(BaseModel):
    unpack_bytes: int
    required_bytes: int
    free_bytes: int
    path: str
    ok: bool


class ChangeRow(BaseModel):
    action: str
    target: str
    detail: str = ""


class UpgradeResult(BaseModel):
    ok: bool
    kind: str
    instance: str
    from_version: str | None
    to_version: str | None
    release: int | None = None
    previous_release: int | None = None
    steps: list[StepTiming] = Field(default_factory=list)
    staged_bytes: int = 0
    reused_bytes: int = 0
    loaded_images: list[str] = Field(default_factory=list)
    changes: list[ChangeRow] = Field(default_factory=list)
    disk: DiskCheck | None = None
    warnings: list[str] = Field(default_factory=list)
    recovered: RecoveryResult | None = None
    cleanup: list[str] = Field(default_factory=list)
    message: str = ""


def release_dir(version: str) -> Path:
    from appliance.paths import data_dir

    return data_dir() / "releases" / version


# ---- checks before anything changes ------------------------------------------------------------
def check_applicable(manifest: Manifest, installed: str | None, *, allow_downgrade: bool, where: str) -> None:
    """Version policy: newer than installed (rollback protection) and made for the installed version."""
    if installed is None:
        return
    order = compare_versions(manifest.version, installed)
    if order == 0 and not allow_downgrade:
        raise BundleError(f"version {manifest.version} is already installed", where=where,
                          fix="nothing to do (use --allow-downgrade to re-apply the same version)")
    if order < 0 and not allow_downgrade:
        raise BundleError(f"bundle version {manifest.version} is older than the installed {installed} "
                          "(refused: rollback protection)", where=where,
                          fix="use `appliance rollback` to return to the previous release, or --allow-downgrade")
    if order > 0 and installed not in manifest.upgrades_from:
        listed = ", ".join(manifest.upgrades_from) or "nothing (first installs only)"
        raise BundleError(f"bundle {manifest.version} upgrades from {listed}, but this node runs {installed}",
                          where=where, fix="apply the intermediate release's bundle first, or get a bundle "
                                           f"made for {installed}")


def disk_check(unpack_bytes: int, paths: list[str]) -> DiskCheck:
    """Free space ≥ 2× what will be unpacked (one copy in the content store, one in Docker).

    When the store and Docker live on different filesystems each needs 1×; the tightest one
    is reported.
    """
    devices: dict[int, list[str]] = {}
    for p in paths:
        probe = Path(p)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            devices.setdefault(os.stat(probe).st_dev, []).append(str(probe))
        except OSError:
            continue
    worst: DiskCheck | None = None
    for dev_paths in devices.values():
        copies = 2 if len(dev_paths) > 1 or len(devices) == 1 else 1
        st = os.statvfs(dev_paths[0])
        free = st.f_bavail * st.f_frsize
        check = DiskCheck(unpack_bytes=unpack_bytes, required_bytes=copies * unpack_bytes, free_bytes=free,
                          path=dev_paths[0], ok=free >= copies * unpack_bytes)
        if worst is None or (check.free_bytes - check.required_bytes) < (worst.free_bytes - worst.required_bytes):
            worst = check
    return worst or DiskCheck(unpack_bytes=unpack_bytes, required_bytes=2 * unpack_bytes, free_bytes=0,
                              path="?", ok=False)


def _verify(path: Path, store: StateStore, *, pubkey: Path | None, allow_downgrade: bool, docker,
            progress: Progress, snapshot: str | None = None) -> tuple[OpenedBundle, object, DiskCheck, list[str]]:
    where = str(path)
    opened = open_bundle(path, pubkey=pubkey)
    manifest = opened.manifest
    current = R.current_release(store)
    check_applicable(manifest, current.version if current else None, allow_downgrade=allow_downgrade,
                     where=where)
    content = ContentStore()
    absent = content.missing(manifest, bundled=set(opened.index.blob_members))
    if absent:
        base = manifest.base.version if manifest.base else "?"
        raise BundleError(f"delta bundle against {base}: {len(absent)} blob(s) it leaves out are not on this "
                          f"node (e.g. {absent[0].digest})", where=where,
                          fix=f"apply the full bundle of {manifest.version}, or install {base} from a bundle first")
    unpack = sum(b.size for b in manifest.blobs if not content.has(b))
    from appliance.paths import data_dir
    from appliance.runtime import docker_adapter as da

    disk = disk_check(unpack, [str(data_dir()), da.docker_root_dir(docker)])
    if not disk.ok:
        raise PreflightFailed(f"not enough disk space: {disk.free_bytes / 1e9:.2f} GB free at {disk.path}, "
                              f"{disk.required_bytes / 1e9:.2f} GB needed (2x the {unpack / 1e9:.2f} GB to unpack)",
                              where="preflight disk", fix="free disk space (docker image prune, old files) and re-run")
    warnings = _host_preflight(unpack, snapshot)
    hash_blobs(opened, progress)
    return opened, current, disk, warnings


def _host_preflight(unpack_bytes: int, snapshot: str | None) -> list[str]:
    """The provisioning package's preflight rules (a failing rule stops the upgrade, exit 3;
    warnings are reported). Ports are not checked: the running stack keeps its own."""
    if importlib.util.find_spec("appliance.provision.preflight") is None:
        return ["preflight rules are not installed: only the disk rule ran"]
    from appliance.provision.preflight import run_preflight

    report = run_preflight(snapshot=snapshot, images_mib=unpack_bytes // (1024 * 1024), ports={})
    report.raise_for_failure()
    return [f"preflight {r.id}: {r.message}" for r in report.rules if r.status == "warn"]


def preview(path: str | Path, *, pubkey: Path | None = None, allow_downgrade: bool = False) -> dict:
    """The cheap checks (structure, signature, version policy) for the confirmation prompt."""
    store = J.open_store()
    opened = open_bundle(Path(path), pubkey=pubkey)
    current = R.current_release(store)
    check_applicable(opened.manifest, current.version if current else None, allow_downgrade=allow_downgrade,
                     where=str(path))
    return {"from_version": current.version if current else None, "to_version": opened.manifest.version}


def rollback_target() -> tuple[str, str]:
    """(current version, version a rollback returns to); BundleError when there is none."""
    from appliance.runtime import releases

    store = releases.open_store(J.open_store())
    inst = R.instance()
    current = releases.current(store, inst)
    target = releases.previous(store, inst) if current else None
    if current is None or target is None:
        raise BundleError("there is no previous release to return to", where=f"instance {inst}",
                          fix="`appliance status` shows the installed release")
    return f"{current.version} (release {current.id})", f"{target.version} (release {target.id})"


# ---- the operation ------------------------------------------------------------------------------
def apply_bundle(path: str | Path, *, allow_downgrade: bool = False, pubkey: Path | None = None,
                 progress: Progress | None = None, say: Say | None = None, request: dict | None = None,
                 settings=None, snapshot: str | None = None, store: StateStore | None = None) -> UpgradeResult:
    """Upgrade (or first-install) this node from a bundle; roll back automatically on failure.

    ``request`` (models/profile/demo) and ``settings`` apply to a first install; an upgrade
    keeps the running release's.
    """
    path = Path(path)
    progress = progress or NullProgress()
    say = say or progress.note
    store = J.open_store(store)
    inst = R.instance()
    with J.op_lock(inst) as held:
        J.require_lock_free(held, inst)
        recovered = _recover_locked(store, say)
        docker = R.docker_client()
        steps: list[StepTiming] = []
        t = time.monotonic()
        try:
            opened, current, disk, warnings = _verify(path, store, pubkey=pubkey, allow_downgrade=allow_downgrade,
                                                      docker=docker, progress=progress, snapshot=snapshot)
        except BaseException:
            docker.close()
            raise
        manifest = opened.manifest
        steps.append(StepTiming(name="verify", seconds=round(time.monotonic() - t, 3),
                                detail=f"{opened.index.file_size} bytes, signed by {opened.signer.key_id}"))
        result = UpgradeResult(ok=False, kind="upgrade" if current else "install", instance=inst,
                               from_version=current.version if current else None, to_version=manifest.version,
                               previous_release=current.id if current else None, disk=disk, recovered=recovered,
                               warnings=warnings)
        op = J.begin(store, instance=inst, kind=result.kind, bundle=str(path.resolve()),
                     manifest_sha256=opened.manifest_sha256, from_version=result.from_version,
                     to_version=manifest.version, from_release=current.id if current else None)
        try:
            _run_steps(op, opened, current, result, steps, store=store, docker=docker, progress=progress, say=say,
                       request=request if current is None else R.request_of(current),
                       settings=settings if current is None else (current.stack.settings if current.stack else None),
                       snapshot=snapshot)
        except BaseException as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            say(f"{result.kind} failed at step {op.step}: {message.splitlines()[0]}")
            try:
                _roll_back(store, op, docker, say)
            except ApplianceError as rb_exc:
                J.finish(store, op, J.FAILED, f"{message}; rollback also failed: {rb_exc.message}")
                raise RuntimeFailure(f"{result.kind} to {manifest.version} failed at {op.step} ({message.splitlines()[0]})"
                                     f" and rolling back failed too: {rb_exc.message}", where="upgrade",
                                     fix="run `appliance status`; re-run `appliance upgrade` or `appliance rollback`") \
                    from None
            J.finish(store, op, J.ROLLED_BACK, message)
            if not isinstance(exc, Exception):
                raise
            back = f"rolled back to {result.from_version}" if current else "nothing was left installed"
            raise RuntimeFailure(f"{result.kind} to {manifest.version} failed at step {op.step}: "
                                 f"{message.splitlines()[0]}; {back}", where="upgrade",
                                 fix="fix the cause above and re-run the same command") from None
        result.ok = True
        result.steps = steps
        result.message = f"release {result.release} ({manifest.version}) is active"
        try:
            result.cleanup = cleanup(store, docker)
        except Exception as exc:  # noqa: BLE001 - the upgrade is committed; cleanup is best effort
            result.cleanup = [f"cleanup skipped: {exc}"]
        docker.close()
        return result


def _run_steps(op: J.Op, opened: OpenedBundle, current, result: UpgradeResult, steps: list[StepTiming], *,
               store: StateStore, docker, progress: Progress, say: Say, request: dict | None, settings,
               snapshot: str | None) -> None:
    manifest = opened.manifest
    content = ContentStore()

    def step(name: str):
        J.set_step(store, op, name)
        return time.monotonic()

    t = step("staged")
    result.reused_bytes = sum(b.size for b in manifest.blobs if content.has(b))
    lacking_before = sum(b.size for b in manifest.blobs if not content.has(b))
    file_digests = {f.digest for f in manifest.files}
    result.staged_bytes = content.ingest(opened.index, [b for b in manifest.blobs
                                                        if b.in_bundle and b.digest in file_digests], progress)
    rdir = _materialize(manifest, opened, content)
    J.record_version(store, op.instance, manifest.version, opened.manifest_sha256,
                     opened.index.manifest_bytes.decode(), str(rdir))
    steps.append(StepTiming(name="stage", seconds=round(time.monotonic() - t, 3),
                            detail=f"{len(manifest.files)} file(s) in {rdir}"))

    # Image layers are staged while they are loaded: read once from the bundle, hashed,
    # written to the content store and sent to Docker in the same pass.
    t = step("loaded")
    say(f"loading {len(manifest.images)} image(s)")
    task = progress.task("load images", _image_bytes(manifest))
    result.loaded_images = R.load_images(docker, manifest.images, content, index=opened.index,
                                         advance=task.advance, after_first_blob=lambda: _fault("load"))
    task.done()
    content.ingest(opened.index, [b for b in manifest.blobs if b.in_bundle], progress)  # images Docker had
    result.staged_bytes = lacking_before - sum(b.size for b in manifest.blobs if not content.has(b))
    steps.append(StepTiming(name="load", seconds=round(time.monotonic() - t, 3),
                            detail=f"{len(result.loaded_images)} image(s) loaded or re-tagged, "
                                   f"{result.staged_bytes} bytes staged, {result.reused_bytes} already on the node"))

    t = step("provisioned")
    req = request or {"models": None, "profile": "default", "demo": False}
    inventory, _catalog, plan, stack = R.plan_and_stack(rdir, req, settings=settings, snapshot=snapshot)
    detail = R.provision_release(rdir, inventory, plan, demo=bool(req.get("demo")), say=say)
    steps.append(StepTiming(name="provision", seconds=round(time.monotonic() - t, 3), detail=detail))

    t = step("switch")

    def switch_progress(message: str) -> None:
        say(message)
        if message.startswith("waiting for"):
            _fault("switch")  # new containers started beside the old ones
        elif message.startswith("removing the old"):
            _fault("switch-remove")

    release_id, applied = R.apply_stack(stack, plan, docker=docker, store=store, version=manifest.version,
                                        source=f"bundle {manifest.version}", say=switch_progress)
    result.release = release_id
    result.changes = _changes(applied)
    steps.append(StepTiming(name="switch", seconds=round(time.monotonic() - t, 3),
                            detail=f"{len(applied.replaced)} replaced, {len(applied.created)} created, "
                                   f"{len(applied.kept)} kept"))
    # The runtime has made the release active (one transaction); the journal follows it.
    J.set_step(store, op, "commit", to_release=release_id)
    _fault("commit")
    with store.transaction():
        J.finish(store, op, J.DONE)
        _fault("done")


def _changes(applied) -> list[ChangeRow]:
    return [ChangeRow(action=c.action, target=c.target, detail=c.detail or "") for c in applied.changes
            if c.action != "keep"]


def _image_bytes(manifest: Manifest) -> int:
    digests = {d for i in manifest.images for d in (i.id, *i.layers)}
    return sum(b.size for b in manifest.blobs if b.digest in digests)


def _materialize(manifest: Manifest, opened: OpenedBundle, content: ContentStore) -> Path:
    """Write the release directory (files + the signed manifest) atomically: temp dir, then rename."""
    final = release_dir(manifest.version)
    tmp = final.with_name(f".{final.name}.staging")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in manifest.files:
        content.materialize(item.digest, tmp / item.path, item.mode)
    (tmp / "manifest.json").write_bytes(opened.index.manifest_bytes)
    (tmp / "manifest.sig").write_bytes(opened.index.sig_bytes)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


# ---- rollback and recovery ----------------------------------------------------------------------
def _roll_back(store: StateStore, op: J.Op, docker, say: Say) -> int | None:
    """Undo ``op``: fail its pending release(s), converge to the release active before it."""
    for rel in R.releases_after(store, op.from_release):
        if rel.status == "pending":
            R.mark_failed(store, rel.id, f"interrupted {op.kind} {op.to_version} rolled back")
    if not op.reached("switch"):
        return op.from_release  # the running stack was never touched
    if op.from_release is None:
        say("removing the partly installed stack")
        R.remove_stack(docker=docker, say=say)
        return None
    previous = R.release_by_id(store, op.from_release)
    _ensure_version_images(store, op.instance, previous.version, docker)
    say(f"returning the services to release {previous.id} ({previous.version})")
    R.converge_to(previous, docker=docker, say=say)
    return previous.id


def _completed_release(store: StateStore, op: J.Op):
    """The release ``op`` made active, if it got that far."""
    for rel in R.releases_after(store, op.from_release):
        if rel.status == "active" and rel.version == op.to_version and (op.to_release in (None, rel.id)):
            return rel
    return None


def _recover_locked(store: StateStore, say: Say) -> RecoveryResult | None:
    op = J.running(store, R.instance())
    if op is None:
        return None
    done = _completed_release(store, op)
    if done is not None:
        J.set_step(store, op, "commit", to_release=done.id)
        J.finish(store, op, J.DONE)
        msg = f"completed the interrupted {op.kind} to {op.to_version}: release {done.id} is active"
        say(msg)
        return RecoveryResult(op=op.id, kind=op.kind, from_version=op.from_version, to_version=op.to_version,
                              interrupted_at=op.step, action="completed", release=done.id, message=msg)
    interrupted = op.step
    say(f"rolling back the {op.kind} to {op.to_version} interrupted at step {interrupted}")
    docker = R.docker_client() if op.reached("switch") else None
    try:
        back = _roll_back(store, op, docker, say)
    finally:
        if docker is not None:
            docker.close()
    J.finish(store, op, J.ROLLED_BACK, f"interrupted at step {interrupted}; rolled back")
    msg = (f"rolled back the {op.kind} to {op.to_version} interrupted at step {interrupted}; "
           + (f"release {back} ({op.from_version}) is active" if back else "nothing is installed"))
    return RecoveryResult(op=op.id, kind=op.kind, from_version=op.from_version, to_version=op.to_version,
                          interrupted_at=interrupted, action="rolled_back", release=back, message=msg)


def recover(*, say: Say | None = None, store: StateStore | None = None) -> RecoveryResult | None:
    """Finish or undo an operation a crash interrupted; cheap (one query) when there is none.

    ``appliance status`` and every bundle command call this first. If another process is in
    the middle of an upgrade, nothing is done and the result says so.
    """
    store = J.open_store(store)
    inst = R.instance()
    op = J.running(store, inst)
    if op is None:
        return None
    with J.op_lock(inst) as held:
        if not held:
            return RecoveryResult(op=op.id, kind=op.kind, from_version=op.from_version, to_version=op.to_version,
                                  interrupted_at=op.step, action="in_progress",
                                  message=f"{op.kind} to {op.to_version} is in progress (step {op.step})")
        return _recover_locked(store, say or (lambda m: None))


def rollback(*, progress: Progress | None = None, say: Say | None = None,
             store: StateStore | None = None) -> UpgradeResult:
    """Return to the previous release (blue/green, health-gated); journaled like an upgrade."""
    from appliance.runtime import releases

    progress = progress or NullProgress()
    say = say or progress.note
    store = J.open_store(store)
    inst = R.instance()
    with J.op_lock(inst) as held:
        J.require_lock_free(held, inst)
        recovered = _recover_locked(store, say)
        current = R.current_release(store)
        target = releases.previous(releases.open_store(store), inst) if current else None
        if current is None or target is None or target.stack is None:
            raise BundleError("there is no previous release to return to", where=f"instance {inst}",
                              fix="`appliance status` shows the installed release")
        docker = R.docker_client()
        result = UpgradeResult(ok=False, kind="rollback", instance=inst, from_version=current.version,
                               to_version=target.version, previous_release=current.id, recovered=recovered)
        op = J.begin(store, instance=inst, kind="rollback", bundle=None, manifest_sha256=None,
                     from_version=current.version, to_version=target.version, from_release=current.id,
                     step="staged")
        t = time.monotonic()
        try:
            J.set_step(store, op, "loaded")
            result.loaded_images = _ensure_version_images(store, inst, target.version, docker)
            J.set_step(store, op, "switch")
            release_id, applied = R.apply_stack(target.stack, target.plan, docker=docker, store=store,
                                                version=target.version, source=f"rollback to {target.id}", say=say)
            result.release = release_id
            result.changes = _changes(applied)
            J.set_step(store, op, "commit", to_release=release_id)
            _fault("commit")
            J.finish(store, op, J.DONE)
        except BaseException as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            _roll_back(store, op, docker, say)
            J.finish(store, op, J.ROLLED_BACK, message)
            if not isinstance(exc, Exception):
                raise
            raise RuntimeFailure(f"rollback to {target.version} failed: {message.splitlines()[0]}; release "
                                 f"{current.id} ({current.version}) is still active", where="rollback",
                                 fix="fix the cause above and re-run `appliance rollback`") from None
        result.ok = True
        result.steps = [StepTiming(name="rollback", seconds=round(time.monotonic() - t, 3))]
        result.message = f"release {release_id} ({target.version}, as release {target.id}) is active"
        docker.close()
        return result


def _ensure_version_images(store: StateStore, inst: str, version: str | None, docker) -> list[str]:
    """Make the images of a bundle version present again (re-tag, or reload from the content store)."""
    data = J.version_manifest(store, inst, version)
    if data is None:
        return []  # not installed from a bundle: its images were never ours to restore
    manifest = Manifest.model_validate(data)
    content = ContentStore()
    to_load, _ = R.missing_images(docker, manifest.images)
    lacking = [d for i in to_load for d in [i.id, *i.layers] if not content.path(d).exists()]
    if lacking:
        raise BundleError(f"the images of {version} are gone from Docker and {lacking[0]} is not in the content "
                          "store", where=f"release {version}", fix=f"re-apply the bundle of {version}")
    return R.load_images(docker, manifest.images, content)


# ---- cleanup -----------------------------------------------------------------------------------
def cleanup(store: StateStore, docker) -> list[str]:
    """Keep the blobs, release directories and images of the current and previous release only."""
    from appliance.runtime import releases

    inst = R.instance()
    rstore = releases.open_store(store)
    keep_versions = {r.version for r in (releases.current(rstore, inst), releases.previous(rstore, inst)) if r}
    notes: list[str] = []
    kept_digests: set[str] = set()
    kept_images: set[str] = set()
    dropped: list[dict] = []
    for row in J.versions(store, inst):
        data = J.version_manifest(store, inst, row["version"])
        if row["version"] in keep_versions:
            kept_digests.update(b["digest"] for b in data["blobs"])
            kept_images.update(i["id"] for i in data["images"])
        else:
            dropped.append({"version": row["version"], "dir": row["release_dir"], "manifest": data})
    for d in dropped:
        ids = [i["id"] for i in d["manifest"]["images"] if i["id"] not in kept_images]
        removed = R.remove_images(docker, ids)
        shutil.rmtree(d["dir"], ignore_errors=True)
        J.forget_version(store, inst, d["version"])
        notes.append(f"removed release {d['version']} ({len(removed)} image(s))")
    freed = ContentStore().gc(kept_digests)
    if freed:
        notes.append(f"freed {freed / 1e6:.1f} MB of blobs no longer referenced")
    return notes


def last_operation(store: StateStore | None = None) -> dict | None:
    """The latest bundle operation (for ``appliance status``: "the last upgrade")."""
    store = J.open_store(store)
    op = J.last(store, R.instance())
    if op is None:
        return None
    return {"kind": op.kind, "from_version": op.from_version, "to_version": op.to_version, "status": op.status,
            "step": op.step, "release": op.to_release, "started_ts": op.started_ts, "updated_ts": op.updated_ts,
            "error": op.error}


def load_bundle_images(path: str | Path, *, pubkey: Path | None = None, progress: Progress | None = None) -> list[str]:
    """Verify a bundle fully and load its images (no release change): for ``init --bundle`` flows
    that plan on their own. Prefer :func:`apply_bundle`, which also installs the release."""
    progress = progress or NullProgress()
    opened = open_bundle(Path(path), pubkey=pubkey)
    content = ContentStore()
    absent = content.missing(opened.manifest, bundled=set(opened.index.blob_members))
    if absent:
        raise BundleError(f"{len(absent)} blob(s) of this delta bundle are not on this node", where=str(path),
                          fix="use the full bundle for a first install")
    hash_blobs(opened, progress)
    docker = R.docker_client()
    try:
        task = progress.task("load images", _image_bytes(opened.manifest))
        refs = R.load_images(docker, opened.manifest.images, content, index=opened.index, advance=task.advance)
        task.done()
        content.ingest(opened.index, [b for b in opened.manifest.blobs if b.in_bundle], progress)
        return refs
    finally:
        docker.close()


def init_from_bundle(bundle: str | Path, *, models: list[str] | None = None, demo: bool = False,
                     profile: str = "default", snapshot: str | None = None, settings=None,
                     progress: Say | None = None, pubkey: Path | None = None):
    """``appliance init --bundle FILE``: the same verified, journaled path as an upgrade.

    On a node with nothing installed this is a first install planned with the bundle's
    catalog for the given request; on an installed node it is an upgrade (the running
    release's request and settings are kept). Returns the runtime's InitResult.
    """
    from appliance.runtime import stack as S
    from appliance.runtime.install import next_steps
    from appliance.runtime.models import Change, InitResult, PhaseTiming

    res = apply_bundle(bundle, pubkey=pubkey, say=progress, request={"models": models, "profile": profile,
                                                                    "demo": demo},
                       settings=settings, snapshot=snapshot)
    release = S.current_release()
    stack = release.stack
    endpoints = {s.name: s.endpoint() for s in stack.services if s.endpoint()}
    if "gateway" in endpoints:
        endpoints["gateway"] = endpoints["gateway"] + "/v1"
    warnings = [f"recovered first: {res.recovered.message}"] if res.recovered else []
    return InitResult(ok=True, instance=res.instance, release=res.release, previous_release=res.previous_release,
                      plan=release.plan, stack=stack,
                      changes=[Change(action=c.action, target=c.target, detail=c.detail) for c in res.changes],
                      phases=[PhaseTiming(name=s.name, seconds=s.seconds, detail=s.detail) for s in res.steps],
                      endpoints=endpoints, warnings=warnings + res.warnings + res.cleanup,
                      next_steps=next_steps(stack, endpoints))
