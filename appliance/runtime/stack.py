"""The runtime's library API: apply a plan, list services, start/stop, up/down, logs.

Other packages (status, gateway keys, bundles, training) use these functions rather than
Docker or the release tables directly:

* :func:`current_release` -- the active release (plan + stack) of an instance;
* :func:`list_services` -- every service with its container state (one Docker list call);
* :func:`apply_stack` -- ensure images, converge blue/green behind health gates, record the
  release (``pending`` -> ``active``, or ``failed`` with nothing changed); the deploy pipeline
  (:mod:`appliance.deploy`) is its caller for init, upgrade, rollback and serve;
* :func:`own_host_ports` -- host ports this instance's containers publish (preflight treats
  them as the box's own, not as a conflict);
* :func:`prune_images` -- remove the local builds a run replaced;
* :func:`stop_services` / :func:`start_services` -- hold services down (the agent leaves them
  alone) and bring them back;
* :func:`up`, :func:`down`, :func:`service_logs`.

Every mutating call holds the instance lock (``<data_dir>/runtime-<instance>.lock``) so an
``init`` and the agent never converge at the same time.
"""

from __future__ import annotations

import time
from typing import Callable

from appliance.errors import RuntimeFailure, UsageError
from appliance.planner.models import Plan
from appliance.runtime import labels as L
from appliance.runtime import releases
from appliance.runtime.models import (
    ApplyResult,
    Change,
    Release,
    ServiceState,
    StackSpec,
)
from appliance.state import locks
from appliance.state.store import StateStore

Progress = Callable[[str], None]


def instance_lock(instance: str, *, wait: bool = True):
    """The runtime's lock of ``instance`` (``runtime-<instance>.lock``, see
    :mod:`appliance.state.locks`): yields False without waiting when busy and wait=False."""
    return locks.instance_lock("runtime", instance, wait=wait)


def _docker(docker=None):
    from appliance.runtime.docker_adapter import Docker

    return docker or Docker()


def current_release(store: StateStore | None = None, instance: str | None = None) -> Release | None:
    """The active release of ``instance`` (None before the first successful init)."""
    store = releases.open_store(store)
    return releases.current(store, instance or L.instance())


def list_services(docker=None, store: StateStore | None = None, instance: str | None = None,
                  release: Release | None = None) -> list[ServiceState]:
    """Every service of the current release plus any other stack container, with its state.

    One Docker list call (labels carry service, kind, release, hash, models, endpoint);
    services the release wants but Docker does not have are reported as ``missing``. The rule
    of which container a service means is :func:`appliance.runtime.views.service_states` (the
    one ``appliance status`` reads through); this returns its rows as models.
    """
    from appliance.runtime import views

    inst = instance or L.instance()
    store = releases.open_store(store)
    release = release or releases.current(store, inst)
    notes = releases.service_notes(store, inst)
    return [ServiceState(**v.model_dump()) for v in views.service_states(_docker(docker), inst, release, notes)]


def ensure_images(stack: StackSpec, docker, *, dry_run: bool = False, progress: Progress | None = None,
                  ensurer=None) -> tuple[StackSpec, list[Change], float]:
    """Build/check every image; returns the stack with content hashes filled in."""
    from appliance.runtime.images import ImageEnsurer

    ens = ensurer or ImageEnsurer(docker, dry_run=dry_run, progress=progress)
    if docker is None:  # dry run without Docker: nothing to check against
        return stack, ens.changes, 0.0
    if any(s.build for s in stack.services):
        ens.base_tag()
    # each distinct image once; local builds run side by side (the engine does the work)
    from concurrent.futures import ThreadPoolExecutor

    recipes = {s.image: s.recipe for s in stack.services if s.recipe is not None}
    distinct = sorted({(s.image, s.build) for s in stack.services}, key=lambda t: (t[0], t[1] or ""))
    workers = 1 if dry_run else min(3, max(1, len(distinct)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ensured = dict(zip(distinct, pool.map(lambda t: ens.ensure(t[0], t[1], recipes.get(t[0])), distinct)))
    services = [svc.model_copy(update={"content_hash": ensured[(svc.image, svc.build)].content_hash,
                                       "image_ref": ensured[(svc.image, svc.build)].ref})
                for svc in stack.services]
    ens.changes.sort(key=lambda c: (c.target != ens.base_tag(), c.target))
    return stack.model_copy(update={"services": services}), ens.changes, ens.build_s


def apply_stack(stack: StackSpec, plan: Plan, *, docker=None, store: StateStore | None = None,
                source: str = "init", version: str | None = None, dry_run: bool = False,
                progress: Progress | None = None, timings: dict | None = None, reuse_same: bool = True,
                before_converge=None) -> tuple[int | None, ApplyResult]:
    """Converge the instance to ``stack`` and record it as a new release (returns its id).

    ``reuse_same``: when the active release already has exactly this stack, converge under it
    and record no new release (a re-run of ``init``). ``before_converge(stack)`` runs under the
    instance lock once images are resolved (the deploy pipeline writes the apps' keys there).
    On failure the release is marked ``failed``, the changes are undone (the previous release
    keeps running) and :class:`RuntimeFailure` is raised.
    """
    from appliance.runtime.compose import gateway_dir
    from appliance.runtime.converge import Converger

    timings = timings if timings is not None else {}
    inst = stack.instance
    if not dry_run:
        docker = _docker(docker)
    t0 = time.monotonic()
    stack, image_changes, build_s = ensure_images(stack, docker, dry_run=dry_run, progress=progress)
    stack = stack.with_hashes()
    timings["images"] = time.monotonic() - t0
    timings["images_build_s"] = build_s
    if dry_run:
        conv = Converger(docker, stack, dry_run=True, gateway_dir=gateway_dir())
        result = conv.apply()
        result.changes = image_changes + secret_changes(stack) + result.changes
        return None, result
    store = releases.open_store(store)
    with instance_lock(inst):
        key_changes = list(before_converge(stack) or []) if before_converge else []
        cur = releases.current(store, inst)
        same = reuse_same and cur is not None and cur.stack_hash == stack.stack_hash()
        # the same stack again: converge under the current release, record no new one
        release_id = cur.id if same else releases.begin(store, inst, plan, stack, source=source, version=version)
        conv = Converger(docker, stack, release=release_id, progress=progress, gateway_dir=gateway_dir())
        t1 = time.monotonic()
        try:
            result = conv.apply()
        except BaseException as exc:
            if not same:
                releases.fail(store, release_id, getattr(exc, "message", str(exc)))
            store.add_event("release", f"release {release_id} failed: {getattr(exc, 'message', exc)}"[:500],
                            data={"instance": inst, "release": release_id})
            timings["start"] = time.monotonic() - t1 - conv.result.waiting_s
            timings["health"] = conv.result.waiting_s
            raise
        timings["health"] = result.waiting_s
        timings["start"] = time.monotonic() - t1 - result.waiting_s
        if not same:
            releases.commit(store, inst, release_id)
        releases.set_desired(store, inst, "up")
        for name in result.created + result.replaced:
            store.add_event("service", f"{name} {'replaced' if name in result.replaced else 'created'} "
                            f"in release {release_id}", service=name, data={"release": release_id})
    result.changes = image_changes + key_changes + result.changes
    return release_id, result


def secret_changes(stack: StackSpec) -> list[Change]:
    """The secret files a deploy of ``stack`` would write now (what ``--dry-run`` lists): each app's
    key that does not exist yet, each engine's secret and the gateway's copy of them
    (:func:`appliance.runtime.engine_keys.pending_changes`)."""
    from appliance.runtime import engine_keys
    from appliance.runtime.compose import APP_KEY_FILENAME, app_secrets_dir

    out = [Change(action="write-config", target=str(app_secrets_dir(a) / APP_KEY_FILENAME),
                  detail=f"API key for app {a}")
           for a in stack.apps if not (app_secrets_dir(a) / APP_KEY_FILENAME).exists()]
    return out + engine_keys.pending_changes(stack)


def stop_services(names: list[str], *, reason: str = "stopped by request", docker=None,
                  store: StateStore | None = None, instance: str | None = None) -> list[str]:
    """Stop the named services and hold them down: the agent will not restart them."""
    inst = instance or L.instance()
    store = releases.open_store(store)
    docker = _docker(docker)
    release = releases.current(store, inst)
    known = {s.name for s in release.stack.services} if release and release.stack else set()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"no service named {', '.join(unknown)}", where="services",
                         fix=f"choose from: {', '.join(sorted(known)) or '(no release installed)'}")
    from appliance.runtime.converge import stack_containers

    with instance_lock(inst):
        containers = stack_containers(docker, inst)
        for name in names:
            releases.note_service(store, inst, name, held=reason)
            for c in containers.get(name, []):
                if c.state in ("running", "restarting"):
                    docker.stop(c.id)
            store.add_event("service", f"{name} stopped and held: {reason}", service=name)
    return names


def start_services(names: list[str], *, docker=None, store: StateStore | None = None,
                   instance: str | None = None, progress: Progress | None = None) -> ApplyResult:
    """Release the hold on the named services and converge them (health-gated)."""
    inst = instance or L.instance()
    store = releases.open_store(store)
    release = releases.current(store, inst)
    if release is None or release.stack is None:
        raise UsageError("no release is installed", where="services", fix="run `appliance init` first")
    sub = release.stack.model_copy(update={"services": [s for s in release.stack.services if s.name in names]})
    with instance_lock(inst):
        for name in names:
            releases.note_service(store, inst, name, held=None)
        result = _converge_subset(_docker(docker), sub, release, progress)
        for name in names:
            store.add_event("service", f"{name} started again", service=name)
    return result


def _converge_subset(docker, sub: StackSpec, release: Release, progress) -> ApplyResult:
    from appliance.runtime.converge import Converger

    conv = Converger(docker, sub, release=release.id, progress=progress, gateway_dir=None)
    conv.remove_orphans = False
    return conv.apply()


def up(*, docker=None, store: StateStore | None = None, instance: str | None = None,
       progress: Progress | None = None) -> ApplyResult:
    """Start the recorded release again (recreating missing containers), health-gated."""
    inst = instance or L.instance()
    store = releases.open_store(store)
    release = releases.current(store, inst)
    if release is None or release.stack is None:
        raise UsageError("nothing is installed for this instance", where=f"instance {inst}",
                         fix="run `appliance init --demo --yes` (or `appliance init --yes`)")
    docker = _docker(docker)
    with instance_lock(inst):
        releases.set_desired(store, inst, "up")
        for name in [s.name for s in release.stack.services]:
            releases.note_service(store, inst, name, held=None)
        from appliance.runtime.compose import gateway_dir
        from appliance.runtime.converge import Converger

        result = Converger(docker, release.stack, release=release.id, progress=progress,
                           gateway_dir=gateway_dir()).apply()
        store.add_event("stack", f"stack up (release {release.id})", data={"instance": inst})
    return result


def down(*, purge: bool = False, docker=None, store: StateStore | None = None,
         instance: str | None = None) -> dict:
    """Stop every service (``purge``: remove every container, network and volume of the instance)."""
    inst = instance or L.instance()
    store = releases.open_store(store)
    docker = _docker(docker)
    summary: dict[str, list[str]] = {"stopped": [], "removed_containers": [], "removed_networks": [],
                                     "removed_volumes": []}
    with instance_lock(inst):
        releases.set_desired(store, inst, "down")
        containers = docker.list_containers(L.instance_filter(inst))
        for c in containers:
            if purge:
                docker.remove(c.id, force=True)
                summary["removed_containers"].append(c.name)
            elif c.state in ("running", "restarting", "paused"):
                docker.stop(c.id)
                summary["stopped"].append(c.name)
        if purge:
            for net in docker.list_networks(L.instance_filter(inst)):
                docker.remove_network(net["id"])
                summary["removed_networks"].append(net["name"])
            for vol in docker.list_volumes(L.instance_filter(inst)):
                docker.remove_volume(vol["name"])
                summary["removed_volumes"].append(vol["name"])
            releases.clear_instance(store, inst)
        store.add_event("stack", f"stack down{' --purge' if purge else ''}",
                        data={"instance": inst, **{k: len(v) for k, v in summary.items()}})
    return summary


def find_container(service: str, *, docker=None, instance: str | None = None) -> str:
    """The id of ``service``'s container (the running one if several)."""
    inst = instance or L.instance()
    docker = _docker(docker)
    rows = [c for c in docker.list_containers(L.instance_filter(inst) + [f"{L.SERVICE}={service}"])]
    if not rows:
        names = sorted({c.service for c in docker.list_containers(L.instance_filter(inst)) if c.service})
        raise UsageError(f"no service named {service!r} in instance {inst}", where="logs",
                         fix=f"choose from: {', '.join(names)}" if names else "run `appliance init` first")
    running = [c for c in rows if c.state == "running"]
    return (running or rows)[-1].id


def service_logs(service: str, *, tail: int | str = 100, follow: bool = False, docker=None,
                 instance: str | None = None):
    """The service's log output: bytes, or an iterator of chunks when following."""
    docker = _docker(docker)
    cid = find_container(service, docker=docker, instance=instance)
    return docker.logs(cid, tail=tail, follow=follow)


def require_running_release(store: StateStore | None = None, instance: str | None = None) -> Release:
    release = current_release(store, instance)
    if release is None:
        raise RuntimeFailure("no release is installed", where=f"instance {instance or L.instance()}",
                             fix="run `appliance init`")
    return release


def create_stack(stack: StackSpec, *, docker=None, progress: Progress | None = None) -> dict[str, str]:
    """Create (never start) every container of ``stack``; returns service -> container id.

    For checking device wiring where the devices do not exist (a plan from a node snapshot):
    Docker validates device nodes and driver mounts only at start, so the created
    containers' inspect data show exactly what a real node would run. Local images are
    built; external (engine) images must already be present. No release is recorded.
    """
    from appliance.runtime.converge import container_spec

    docker = _docker(docker)
    stack, _, _ = ensure_images(stack, docker, progress=progress)
    stack = stack.with_hashes()
    inst = stack.instance
    for net, internal in stack.stack_networks().items():
        docker.ensure_network(net, L.network_labels(inst, internal), internal=internal)
    for vol in sorted({b.source for s in stack.services for b in s.binds if b.volume}):
        docker.ensure_volume(vol, {**L.base_labels(inst), L.SERVICE: "volume"})
    out = {}
    for level in stack.start_order():
        for name in level:
            out[name] = docker.replace_container(container_spec(stack.service(name), stack, None), start=False)
    return out


def own_host_ports(docker, instance: str | None = None) -> set[int]:
    """Host ports this instance's containers publish now (a re-run may reuse them)."""
    if docker is None:
        return set()
    own: set[int] = set()
    for c in docker.list_containers(L.instance_filter(instance or L.instance())):
        own.update(int(p["PublicPort"]) for p in c.ports if p.get("PublicPort"))
    return own


def prune_images(docker, candidates: set[str], keep: set[str]) -> list[str]:
    """Remove the local builds in ``candidates`` that no recorded stack in ``keep`` runs.

    Only images this runtime built (label ``appliance.managed``) are touched, never forced: the
    engine refuses an image a container of any instance still uses, and then it stays. Returns
    the references removed.
    """
    removed = []
    for ref in sorted(candidates - keep):
        labels = docker.image_labels(ref)
        if labels is None or labels.get(L.MANAGED) != "true" or not labels.get(L.CONTENT_HASH):
            continue
        if docker.remove_image(ref):
            removed.append(ref)
    return removed


def converge_to(release: Release, *, docker, progress: Progress | None = None) -> ApplyResult:
    """Make the containers match ``release``'s recorded stack again (health-gated), under the
    instance lock; the release rows are not changed (crash recovery, failed upgrades)."""
    from appliance.runtime.compose import gateway_dir
    from appliance.runtime.converge import Converger

    with instance_lock(release.stack.instance):
        return Converger(docker, release.stack, release=release.id, progress=progress,
                         gateway_dir=gateway_dir()).apply()


def remove_instance_containers(*, docker, instance: str | None = None, progress: Progress | None = None) -> list[str]:
    """Remove every container of the instance (a first install that failed: nothing ran before)."""
    inst = instance or L.instance()
    say = progress or (lambda msg: None)
    removed = []
    with instance_lock(inst):
        for c in docker.list_containers(L.instance_filter(inst)):
            say(f"removing {c.name}")
            docker.remove(c.id, force=True)
            removed.append(c.name)
    return removed
