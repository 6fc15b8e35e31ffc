"""The bundle side of an install: verify, stage, load images; crash recovery; cleanup.

The deploy pipeline (:mod:`appliance.deploy.upgrade`) orders an upgrade -- verify -> plan ->
stage -> load -> provision -> switch -> commit -- and calls the steps here that touch bundles;
this module never plans, provisions or converges a new stack itself. Nothing on the node
changes until the whole bundle is verified (signature, structure, every hash, version policy,
delta blobs present, disk space). From then on the journal (:mod:`appliance.bundle.journal`)
records each step before it runs:

* stage and load only *add* things (blobs, a release directory, images); the running stack
  is untouched, so undoing them is just not using them;
* switch is the runtime's blue/green apply: new containers start beside the old ones, and
  the old ones go only once every new one is healthy; the runtime records the new release
  ``pending`` and makes it ``active`` in one transaction when all are healthy;
* after a crash, :func:`recover` finishes an operation whose new release became active and
  rolls back one whose release never did: the containers are converged to the release that
  was active before (or removed, on a first install) and the pending release is marked
  failed. There is never a mix. The agent (at start), ``upgrade`` and ``rollback`` call it;
  ``status`` only reports an interrupted operation.

``APPLIANCE_BUNDLE_FAULT=<point>`` SIGKILLs the process at a named point (load, switch,
switch-remove, commit, done); the crash tests use it. It is read only at those points.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field

from appliance.atomic import replace_dir, write_atomic
from appliance.bundle import journal as J
from appliance.bundle.contentstore import ContentStore
from appliance.bundle.dockersave import load_stream
from appliance.bundle.manifest import Blob, Image, Manifest, compare_versions
from appliance.bundle.reader import BundleIndex, OpenedBundle, hash_blobs, open_bundle
from appliance.errors import ApplianceError, BundleError, PreflightFailed
from appliance.progress import NullProgress, Progress
from appliance.state.store import StateStore

FAULT_ENV = "APPLIANCE_BUNDLE_FAULT"
Say = Callable[[str], None]


def fault(point: str) -> None:
    """Crash-test hook: die like a power cut at ``point`` when asked to."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


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


def release_dir(version: str) -> Path:
    from appliance.paths import data_dir

    return data_dir() / "releases" / version


def instance() -> str:
    from appliance.runtime import labels as L

    return L.instance()


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
    """Free space >= 2x what will be unpacked (one copy in the content store, one in Docker).

    When the store and Docker live on different filesystems each needs 1x; the tightest one
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


def open_checked(path: str | Path, installed_version: str | None, *, pubkey: Path | None = None,
                 allow_downgrade: bool = False) -> OpenedBundle:
    """The cheap checks (structure, signature, version policy): for confirmation prompts."""
    opened = open_bundle(Path(path), pubkey=pubkey)
    check_applicable(opened.manifest, installed_version, allow_downgrade=allow_downgrade, where=str(path))
    return opened


def verify(path: str | Path, installed_version: str | None, *, docker, pubkey: Path | None = None,
           allow_downgrade: bool = False, progress: Progress | None = None) -> tuple[OpenedBundle, DiskCheck]:
    """Everything before the journal starts: signature, structure, version policy, the blobs a
    delta leaves out present in the content store, disk space, and every blob's sha256."""
    progress = progress or NullProgress()
    where = str(path)
    opened = open_checked(path, installed_version, pubkey=pubkey, allow_downgrade=allow_downgrade)
    manifest = opened.manifest
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
    hash_blobs(opened, progress)
    return opened, disk


def unpack_bytes(opened: OpenedBundle) -> int:
    content = ContentStore()
    return sum(b.size for b in opened.manifest.blobs if not content.has(b))


def extract_files(opened: OpenedBundle, kind: str, dest: Path) -> Path | None:
    """Write the bundle's files of ``kind`` (e.g. ``catalog``) under ``dest`` (same relative
    paths) from the verified bundle or the content store; None when it has none. Read-only for
    the node: the deploy pipeline plans with the bundle's catalog before anything is staged."""
    items = [f for f in opened.manifest.files if f.kind == kind]
    if not items:
        return None
    locate = ContentStore().locator(opened.index)
    for item in items:
        src, offset, size = locate(item.digest)
        with open(src, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        target = dest / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest / items[0].path.split("/", 1)[0]


# ---- stage and load -----------------------------------------------------------------------------
def stage(opened: OpenedBundle, store: StateStore, inst: str, progress: Progress) -> tuple[Path, int, int]:
    """Put the bundle's files in the content store and its release directory in place; record
    the version's manifest. Returns (release dir, bytes staged, bytes already on the node)."""
    manifest = opened.manifest
    content = ContentStore()
    reused = sum(b.size for b in manifest.blobs if content.has(b))
    file_digests = {f.digest for f in manifest.files}
    staged = content.ingest(opened.index, [b for b in manifest.blobs if b.in_bundle and b.digest in file_digests],
                            progress)
    rdir = _materialize(manifest, opened, content)
    J.record_version(store, inst, manifest.version, opened.manifest_sha256, opened.index.manifest_bytes.decode(),
                     str(rdir))
    return rdir, staged, reused


def load(docker, opened: OpenedBundle, progress: Progress) -> tuple[list[str], int]:
    """Load the bundle's images (layers staged into the content store in the same pass: read
    once from the bundle, hashed, written to the store and sent to Docker). Returns (images
    loaded or re-tagged, bytes newly staged)."""
    manifest = opened.manifest
    content = ContentStore()
    lacking_before = sum(b.size for b in manifest.blobs if not content.has(b))
    task = progress.task("load images", image_bytes(manifest))
    loaded = load_images(docker, manifest.images, content, index=opened.index, advance=task.advance,
                         after_first_blob=lambda: fault("load"))
    task.done()
    content.ingest(opened.index, [b for b in manifest.blobs if b.in_bundle], progress)  # images Docker had
    return loaded, lacking_before - sum(b.size for b in manifest.blobs if not content.has(b))


def image_bytes(manifest: Manifest) -> int:
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
    write_atomic(tmp / "manifest.json", opened.index.manifest_bytes)
    write_atomic(tmp / "manifest.sig", opened.index.sig_bytes)
    replace_dir(tmp, final)
    return final


def missing_images(docker, images: list[Image]) -> tuple[list[Image], list[Image]]:
    """(images to load, images present under another tag only -- to re-tag)."""
    to_load, to_tag = [], []
    for image in images:
        have = docker.image_id(image.ref)
        if have == image.id:
            continue
        if docker.image_id(image.id) == image.id:
            to_tag.append(image)
        else:
            to_load.append(image)
    return to_load, to_tag


def load_images(docker, images: list[Image], content: ContentStore, *, index: BundleIndex | None = None,
                advance=None, after_first_blob: Callable[[], None] | None = None) -> list[str]:
    """Make ``images`` present in the engine: re-tag those it has, stream the rest in one ``docker load``.

    Blobs come from the bundle (``index``) when it holds them, else from the content store.
    While Docker receives the stream, the same bundle blobs are copied into the content store
    by a kernel copy in a second thread (the disk work overlaps Docker's; every blob is
    hashed on its way to Docker, and a mismatch drops the stored copy too). Returns the refs
    loaded or re-tagged.
    """
    from appliance.runtime import docker_adapter as da

    to_load, to_tag = missing_images(docker, images)
    for image in to_tag:
        da.tag_image(docker, image.id, image.ref)
    bundle_path = str(index.path) if index is not None else None
    bad_digests: list[str] = []

    def on_mismatch(digest: str, path: str) -> None:
        bad_digests.append(digest)
        if path != bundle_path:
            content.drop(digest)  # a damaged stored copy: drop it so the next bundle re-stages it

    staging: threading.Thread | None = None
    staging_error: list[BaseException] = []
    if to_load and index is not None:
        wanted = {d for i in to_load for d in (i.id, *i.layers) if d in index.blob_members}
        blobs = [Blob(digest=d, size=index.blob_members[d].size) for d in sorted(wanted)]

        def stage_blobs() -> None:
            try:
                content.ingest(index, blobs, workers=1, hashed=False)
            except BaseException as exc:  # noqa: BLE001 - reported after the load
                staging_error.append(exc)

        staging = threading.Thread(target=stage_blobs, name="bundle-stage", daemon=True)
        staging.start()
    try:
        if to_load:
            da.load_image_stream(docker, load_stream(to_load, content.locator(index), progress_advance=advance,
                                                     after_first_blob=after_first_blob, on_mismatch=on_mismatch))
    finally:
        if staging is not None:
            staging.join()
        for digest in bad_digests:
            content.drop(digest)
    if staging_error:
        raise staging_error[0]
    bad = [i.ref for i in images if docker.image_id(i.ref) != i.id]
    if bad:
        raise BundleError(f"after loading, {bad[0]} does not have the image id the manifest lists",
                          where="docker load", fix="check the engine's log; then re-run the upgrade")
    return [i.ref for i in to_load] + [i.ref for i in to_tag]


def ensure_version_images(store: StateStore, inst: str, version: str | None, docker) -> list[str]:
    """Make the images of a bundle version present again (re-tag, or reload from the content store)."""
    data = J.version_manifest(store, inst, version)
    if data is None:
        return []  # not installed from a bundle: its images were never ours to restore
    manifest = Manifest.model_validate(data)
    content = ContentStore()
    to_load, _ = missing_images(docker, manifest.images)
    lacking = [d for i in to_load for d in [i.id, *i.layers] if not content.path(d).exists()]
    if lacking:
        raise BundleError(f"the images of {version} are gone from Docker and {lacking[0]} is not in the content "
                          "store", where=f"release {version}", fix=f"re-apply the bundle of {version}")
    return load_images(docker, manifest.images, content)


# ---- rollback of an interrupted or failed operation ---------------------------------------------
def roll_back(store: StateStore, op: J.Op, docker, say: Say) -> int | None:
    """Undo ``op``: fail its pending release(s), converge to the release active before it."""
    from appliance.runtime import releases
    from appliance.runtime import stack as S

    rstore = releases.open_store(store)
    for rel in releases.history(rstore, op.instance, limit=50):
        if rel.status == "pending" and (op.from_release is None or rel.id > op.from_release):
            releases.fail(rstore, rel.id, f"interrupted {op.kind} {op.to_version} rolled back")
    if not op.reached("switch"):
        return op.from_release  # the running stack was never touched
    if op.from_release is None:
        say("removing the partly installed stack")
        S.remove_instance_containers(docker=docker, instance=op.instance, progress=say)
        return None
    previous = releases.get(rstore, op.from_release)
    ensure_version_images(store, op.instance, previous.version, docker)
    say(f"returning the services to release {previous.id} ({previous.version})")
    S.converge_to(previous, docker=docker, progress=say)
    return previous.id


def _completed_release(store: StateStore, op: J.Op):
    """The release ``op`` made active, if it got that far."""
    from appliance.runtime import releases

    for rel in releases.history(releases.open_store(store), op.instance, limit=50):
        if op.from_release is not None and rel.id <= op.from_release:
            continue
        if rel.status == "active" and rel.version == op.to_version and (op.to_release in (None, rel.id)):
            return rel
    return None


def recover_locked(store: StateStore, say: Say) -> RecoveryResult | None:
    """:func:`recover` for a caller that already holds the operation lock."""
    op = J.running(store, instance())
    if op is None:
        return None
    done = _completed_release(store, op)
    if done is not None:
        with store.transaction():
            J.set_step(store, op, "commit", to_release=done.id)
            if op.kind in ("upgrade", "install", "rollback"):
                J.set_installed(store, op.instance, op.to_version, **_version_record(store, op))
            J.finish(store, op, J.DONE)
        msg = f"completed the interrupted {op.kind} to {op.to_version}: release {done.id} is active"
        say(msg)
        return RecoveryResult(op=op.id, kind=op.kind, from_version=op.from_version, to_version=op.to_version,
                              interrupted_at=op.step, action="completed", release=done.id, message=msg)
    interrupted = op.step
    say(f"rolling back the {op.kind} to {op.to_version} interrupted at step {interrupted}")
    docker = docker_client() if op.reached("switch") else None
    try:
        back = roll_back(store, op, docker, say)
    finally:
        if docker is not None:
            docker.close()
    J.finish(store, op, J.ROLLED_BACK, f"interrupted at step {interrupted}; rolled back")
    msg = (f"rolled back the {op.kind} to {op.to_version} interrupted at step {interrupted}; "
           + (f"release {back} ({op.from_version}) is active" if back else "nothing is installed"))
    return RecoveryResult(op=op.id, kind=op.kind, from_version=op.from_version, to_version=op.to_version,
                          interrupted_at=interrupted, action="rolled_back", release=back, message=msg)


def _version_record(store: StateStore, op: J.Op) -> dict:
    row = next((v for v in J.versions(store, op.instance) if v["version"] == op.to_version), None)
    return {"manifest_sha256": row["manifest_sha256"] if row else op.manifest_sha256,
            "release_dir": row["release_dir"] if row else None}


def recover(*, say: Say | None = None, store: StateStore | None = None) -> RecoveryResult | None:
    """Finish or undo an operation a crash interrupted; cheap (one query) when there is none.

    The agent (when it starts), ``appliance upgrade`` and ``appliance rollback`` call this
    first. If another process is in the middle of an operation, nothing is done and the result
    says so.
    """
    store = J.open_store(store)
    inst = instance()
    op = J.running(store, inst)
    if op is None:
        return None
    with J.op_lock(inst) as held:
        if not held:
            return RecoveryResult(op=op.id, kind=op.kind, from_version=op.from_version, to_version=op.to_version,
                                  interrupted_at=op.step, action="in_progress",
                                  message=f"{op.kind} to {op.to_version} is in progress (step {op.step})")
        return recover_locked(store, say or (lambda m: None))


def docker_client(timeout_s: float = 600.0):
    from appliance.runtime.docker_adapter import Docker

    return Docker(timeout_s=timeout_s)


# ---- cleanup -----------------------------------------------------------------------------------
def cleanup(store: StateStore, docker) -> list[str]:
    """Keep the blobs, release directories and images of the current and previous release only."""
    from appliance.runtime import releases

    inst = instance()
    rstore = releases.open_store(store)
    keep_versions = {r.version for r in (releases.current(rstore, inst), releases.previous(rstore, inst)) if r}
    mine = J.installed(store, inst)
    if mine is not None:
        keep_versions.add(mine.version)
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
        removed = [i for i in (x["id"] for x in d["manifest"]["images"] if x["id"] not in kept_images)
                   if _remove_image(docker, i)]
        shutil.rmtree(d["dir"], ignore_errors=True)
        J.forget_version(store, inst, d["version"])
        notes.append(f"removed release {d['version']} ({len(removed)} image(s))")
    freed = ContentStore().gc(kept_digests)
    if freed:
        notes.append(f"freed {freed / 1e6:.1f} MB of blobs no longer referenced")
    return notes


def _remove_image(docker, image_id: str) -> bool:
    try:
        return docker.remove_image(image_id)
    except ApplianceError:  # keeping an image is always safe
        return False


def last_operation(store: StateStore | None = None) -> dict | None:
    """The latest bundle operation (for ``appliance status``: "the last upgrade")."""
    store = J.open_store(store)
    op = J.last(store, instance())
    if op is None:
        return None
    return {"kind": op.kind, "from_version": op.from_version, "to_version": op.to_version, "status": op.status,
            "step": op.step, "release": op.to_release, "started_ts": op.started_ts, "updated_ts": op.updated_ts,
            "error": op.error}


def load_bundle_images(path: str | Path, *, pubkey: Path | None = None, progress: Progress | None = None) -> list[str]:
    """Verify a bundle fully and load its images (no release change; the load benchmark)."""
    progress = progress or NullProgress()
    opened = open_bundle(Path(path), pubkey=pubkey)
    content = ContentStore()
    absent = content.missing(opened.manifest, bundled=set(opened.index.blob_members))
    if absent:
        raise BundleError(f"{len(absent)} blob(s) of this delta bundle are not on this node", where=str(path),
                          fix="use the full bundle for a first install")
    hash_blobs(opened, progress)
    docker = docker_client()
    try:
        task = progress.task("load images", image_bytes(opened.manifest))
        refs = load_images(docker, opened.manifest.images, content, index=opened.index, advance=task.advance)
        task.done()
        content.ingest(opened.index, [b for b in opened.manifest.blobs if b.in_bundle], progress)
        return refs
    finally:
        docker.close()
