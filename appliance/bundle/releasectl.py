"""How a bundle version becomes running services, through the packages that own each part.

This module is the seam between bundles and the rest of appliance: the planner and catalog
(what a release runs), provisioning (its playbooks and driver packages), and the runtime
(releases, blue/green convergence, the Docker adapter). Bundles never talk to Docker or
write the runtime's tables themselves.

A new release keeps the *request* of the running one (the same models, profile and demo
flag; the same site settings) and is planned again with the bundle's catalog -- so an
upgrade that ships a newer engine image for a model replaces exactly that model's service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from appliance.bundle.contentstore import ContentStore
from appliance.bundle.dockersave import load_stream
from appliance.bundle.manifest import Blob, Image
from appliance.bundle.reader import BundleIndex
from appliance.errors import BundleError

Say = Callable[[str], None]


def instance() -> str:
    from appliance.runtime import labels as L

    return L.instance()


def current_release(store):
    from appliance.runtime import stack as S

    return S.current_release(store, instance())


def release_by_id(store, release_id: int):
    from appliance.runtime import releases

    return releases.get(releases.open_store(store), release_id)


def releases_after(store, release_id: int | None) -> list:
    """Runtime releases created after ``release_id`` (newest first)."""
    from appliance.runtime import releases

    return [r for r in releases.history(releases.open_store(store), instance(), limit=50)
            if release_id is None or r.id > release_id]


def mark_failed(store, release_id: int, note: str) -> None:
    from appliance.runtime import releases

    releases.fail(releases.open_store(store), release_id, note)


def installed_version(store) -> str | None:
    rel = current_release(store)
    return rel.version if rel is not None else None


# ---- what the release runs ---------------------------------------------------------------------
def request_of(release) -> dict:
    """The models/profile/demo the running release was planned for (kept across upgrades)."""
    if release is None or release.plan is None:
        return {"models": None, "profile": "default", "demo": False}
    services = release.plan.services
    return {"models": sorted({s.model for s in services}) or None, "profile": release.plan.profile,
            "demo": any(s.demo for s in services)}


def plan_and_stack(release_dir: Path, request: dict, settings=None, snapshot: str | None = None):
    """(inventory, catalog, plan, stack) for a release directory (catalog from the bundle if it has one)."""
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from appliance.runtime.compose import compose

    catalog_dir = release_dir / "catalog"
    catalog = load_catalog(catalog_dir if catalog_dir.is_dir() else None, use_cache=False)
    inventory = detect(snapshot=snapshot, usage=False)
    plan = make_plan(inventory, catalog, models=request.get("models"), profile=request.get("profile", "default"),
                     demo=bool(request.get("demo")))
    stack = compose(plan, catalog=catalog, inventory=inventory, settings=settings)
    return inventory, catalog, plan, stack


def provision_release(release_dir: Path, inventory, plan, *, demo: bool, say: Say) -> str:
    """Run provisioning with the release's playbooks and packages (skipped for the demo stack,
    as ``init --demo`` does)."""
    if demo:
        return "skipped: the demo stack needs no host changes"
    from appliance.provision import site

    kwargs = {"inventory": inventory, "plan": plan}
    if (release_dir / "packages").is_dir():
        kwargs["packages_dir"] = release_dir / "packages"
    if (release_dir / "playbooks" / "site.yml").is_file():
        kwargs["playbooks_dir"] = release_dir / "playbooks"
    say("provisioning the host for the new release")
    report = site.provision(**kwargs)
    report.raise_for_failure()  # ProvisionError naming host and task; the upgrade rolls back
    return f"done: {report.changed} change(s), artifacts in {report.artifacts_dir}"


# ---- images ------------------------------------------------------------------------------------
def docker_client(timeout_s: float = 600.0):
    from appliance.runtime.docker_adapter import Docker

    return Docker(timeout_s=timeout_s)


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
    import threading

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

        def stage() -> None:
            try:
                content.ingest(index, blobs, workers=1, hashed=False)
            except BaseException as exc:  # noqa: BLE001 - reported after the load
                staging_error.append(exc)

        staging = threading.Thread(target=stage, name="bundle-stage", daemon=True)
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


def remove_images(docker, image_ids: list[str]) -> list[str]:
    """Remove images by id (only when no container uses them; the engine refuses otherwise)."""
    removed = []
    for image_id in image_ids:
        try:
            docker.remove_image(image_id)
            removed.append(image_id)
        except Exception:  # noqa: BLE001 - in use or already gone: keeping an image is always safe
            pass
    return removed


# ---- switching -----------------------------------------------------------------------------------
def apply_stack(stack, plan, *, docker, store, version: str, source: str, say: Say):
    """The runtime's blue/green apply; records a release (pending -> active) and returns its id."""
    from appliance.runtime import stack as S

    release_id, result = S.apply_stack(stack, plan, docker=docker, store=store, source=source, version=version,
                                       progress=say)
    return release_id, result


def converge_to(release, *, docker, say: Say) -> None:
    """Make the containers match ``release``'s recorded stack again (health-gated), under the
    runtime's instance lock; the release row is not changed."""
    from appliance.runtime import stack as S
    from appliance.runtime.compose import gateway_dir
    from appliance.runtime.converge import Converger

    with S.instance_lock(release.stack.instance):
        Converger(docker, release.stack, release=release.id, progress=say, gateway_dir=gateway_dir()).apply()


def remove_stack(*, docker, say: Say) -> None:
    """First install failed: remove every container of the instance (nothing was running before)."""
    from appliance.runtime import labels as L
    from appliance.runtime import stack as S

    inst = instance()
    with S.instance_lock(inst):
        for c in docker.list_containers(L.instance_filter(inst)):
            say(f"removing {c.name}")
            docker.remove(c.id, force=True)
