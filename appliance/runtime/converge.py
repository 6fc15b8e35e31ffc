"""Convergence: make the containers of one instance match a StackSpec, health-gated.

Each service's container is named and labelled with the hash of its full definition
(:meth:`ServiceSpec.spec_hash`). Applying a stack therefore:

* keeps every container whose hash matches (re-running ``init`` touches nothing);
* for a changed service, starts the new container beside the old one (same network alias),
  waits until Docker reports it healthy, and only then removes the old one (blue/green).
  A service that publishes a host port cannot run twice, so its old container is stopped
  first and started again if the new one fails;
* if any new container does not become healthy within its timeout, every change of this
  apply is undone (new containers removed, old ones restarted) and the error shows the
  failing service's last log lines -- the previous release keeps running.

The networks are part of a service's definition (:attr:`ServiceSpec.networks`): a stack
recorded before the engine network converges to the new shape by replacing every container
whose network set changed, and the networks are made present first (and removed again on undo
when this apply created them).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance.atomic import write_if_changed
from appliance.errors import RuntimeFailure
from appliance.runtime import labels as L
from appliance.runtime.docker_adapter import ContainerCreate, ContainerInfo, Docker, NetworkAttach
from appliance.runtime.models import ApplyResult, Change, ServiceSpec, StackSpec
from appliance.runtime.probe import ProbeResult, health_state, http_probe
from appliance.runtime.views import STACK_KINDS  # one definition, shared with the readers

LOG_LINES_ON_FAILURE = 20
PROBE_EVERY_S = 1.0   # http probes while waiting: at most one a second per service (a refused connect costs ~0)


class ServiceUnhealthy(RuntimeFailure):
    """A new container did not become healthy; carries its last log lines for the CLI."""

    def __init__(self, message: str, *, service: str, log_lines: list[str], **kw):
        super().__init__(message, **kw)
        self.service = service
        self.log_lines = log_lines


def container_spec(svc: ServiceSpec, stack: StackSpec, release: int | None) -> ContainerCreate:
    """The Docker settings of ``svc``'s container (labels carry what status needs)."""
    h = stack.hash_of(svc.name) or svc.spec_hash()
    labels = {**L.base_labels(stack.instance), L.SERVICE: svc.name, L.KIND: svc.kind,
              L.RELEASE: str(release or 0), L.PLAN_HASH: stack.plan_hash or "", L.SPEC_HASH: h,
              L.MODELS: ",".join(svc.served_models), L.PROBE: svc.health.probe}
    if svc.demo:
        labels[L.DEMO] = "true"
    if svc.device_refs:
        labels[L.DEVICES] = ",".join(f"{d.vendor}:{d.index}" for d in svc.device_refs)
    if svc.host_port is not None:
        labels[L.HOST_PORT] = str(svc.host_port)
        labels["appliance.endpoint"] = svc.endpoint() or ""
    binds = {}
    for b in svc.binds:
        binds[b.source] = {"bind": b.target, "mode": "ro" if b.read_only else "rw"}
    from appliance.runtime.compose import healthcheck

    internal = stack.stack_networks()
    networks = [NetworkAttach(name=n, aliases=list(svc.aliases), internal=internal.get(n, False),
                              labels=L.network_labels(stack.instance, internal.get(n, False)))
                for n in stack.networks_of(svc)]
    # an engine never publishes a port, whatever its definition says (it is reached through the gateway),
    # except on a cluster worker, whose engines the head's gateway reaches on the node's address
    publish = svc.host_port is not None and (svc.kind != "inference" or stack.settings.cluster_role == "worker")
    return ContainerCreate(
        name=L.container_name(stack.instance, svc.name, h), image=svc.run_image(), labels=labels,
        command=svc.command or None, entrypoint=svc.entrypoint or None, env=dict(svc.env),
        network=None if networks else "none", networks=networks,
        ports={f"{svc.port}/tcp": (svc.host_ip or "127.0.0.1", svc.host_port)} if publish else {},
        binds=binds, tmpfs=dict(svc.tmpfs), devices=list(svc.devices),
        device_requests=list(svc.device_requests), group_add=list(svc.group_add), runtime=svc.runtime,
        cap_add=list(svc.cap_add), cap_drop=["ALL"] if svc.hardened else [],
        security_opt=["no-new-privileges:true"], ipc_mode=svc.ipc_mode, read_only=svc.hardened, user=svc.user,
        healthcheck=healthcheck(svc.health),
        memory_limit_mib=svc.memory_limit_mib, cpus=svc.cpus, cpuset=svc.cpuset, shm_size_mib=svc.shm_size_mib,
        pids_limit=svc.pids_limit or (512 if svc.hardened else None))


# What a one-off container of the service's own image runs (as root, with only CAP_CHOWN and
# CAP_DAC_READ_SEARCH, no network) to give a data volume to the service's account: a fresh volume
# is root's, and one from before the accounts holds root's files. Python: our images have no shell.
_HAND_OVER = ("import os,sys\n"
              "u=int(sys.argv[1])\n"
              "for d,ds,fs in os.walk('/v'):\n"
              " for p in [d]+[os.path.join(d,n) for n in ds+fs]:\n"
              "  s=os.lstat(p)\n"
              "  if (s.st_uid,s.st_gid)!=(u,u):os.chown(p,u,u,follow_symlinks=False)\n")
HAND_OVER_KIND = "hand-over"


def hand_over_spec(svc: ServiceSpec, stack: StackSpec, volume: str, uid: int) -> ContainerCreate:
    """The one-off container that hands ``volume`` to ``uid`` (see :data:`_HAND_OVER`)."""
    h = hashlib.sha256(f"{volume} {uid}".encode()).hexdigest()
    return ContainerCreate(
        name=L.container_name(stack.instance, f"{svc.name}-own", h), image=svc.run_image(),
        labels={**L.base_labels(stack.instance), L.SERVICE: svc.name, L.KIND: HAND_OVER_KIND},
        entrypoint=["python3", "-I", "-S", "-c", _HAND_OVER, str(uid)], network="none",
        binds={volume: {"bind": "/v", "mode": "rw"}}, user="0:0", cap_drop=["ALL"],
        cap_add=["CHOWN", "DAC_READ_SEARCH"], security_opt=["no-new-privileges:true"], read_only=True,
        restart="no", memory_limit_mib=64, pids_limit=16)


def stack_containers(docker: Docker, instance: str) -> dict[str, list[ContainerInfo]]:
    """service -> its containers (one list call), stack kinds only (not training jobs)."""
    out: dict[str, list[ContainerInfo]] = {}
    for c in docker.list_containers(L.instance_filter(instance)):
        if c.labels.get(L.KIND) in STACK_KINDS and c.service:
            out.setdefault(c.service, []).append(c)
    return out


def routes_text(stack: StackSpec) -> str:
    return json.dumps(stack.routes, indent=1, sort_keys=True) + "\n"


def _secret_newer(svc: ServiceSpec, container: ContainerInfo) -> bool:
    """True when the secret ``svc``'s engine reads was written after ``container`` was created
    (it was made again: appliance.runtime.engine_keys). The engine API gives creation times in
    whole seconds and a secret is always written before its container is created, so one second
    of slack never mistakes a first secret for a new one."""
    from appliance.runtime.compose import ENGINE_KEY_FILENAME, ENGINE_SECRETS_TARGET

    mount = next((b for b in svc.binds if b.target == ENGINE_SECRETS_TARGET), None)
    if mount is None or not container.created_ts:
        return False
    try:
        written = (Path(mount.source) / ENGINE_KEY_FILENAME).stat().st_mtime
    except OSError:
        return False
    return written >= container.created_ts + 1.0


@dataclass
class _Pending:
    svc: ServiceSpec
    container_id: str
    started_ts: float
    old: list[ContainerInfo] = field(default_factory=list)
    stopped_old: list[str] = field(default_factory=list)
    new: bool = True
    probed_ts: float = 0.0                  # http probe: when it last ran (monotonic)
    last_probe: ProbeResult | None = None   # http probe: its last result


class Converger:
    """Applies a StackSpec to the Docker engine (or, with ``dry_run``, only lists the changes)."""

    def __init__(self, docker: Docker | None, stack: StackSpec, *, release: int | None = None,
                 dry_run: bool = False, progress=None, gateway_dir: Path | None = None):
        self.docker = docker
        self.stack = stack
        self.release = release
        self.dry_run = dry_run
        self.progress = progress or (lambda msg: None)
        self.gateway_dir = gateway_dir
        self.result = ApplyResult()
        self.remove_orphans = True
        self._created_networks: list[str] = []
        self._created_volumes: list[str] = []

    def _change(self, action: str, target: str, detail: str = "") -> None:
        self.result.changes.append(Change(action=action, target=target, detail=detail))

    # ---- infrastructure ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Networks, volumes and the gateway's routes file."""
        inst = self.stack.instance
        for net, internal in self.stack.stack_networks().items():
            if self.docker is None or not self.docker.network_exists(net):
                self._change("create-network", net, "internal network of the engines and the gateway" if internal
                             else "bridge network for the stack" if self.stack.engine_network is None
                             else "bridge network of the gateway and the apps")
                if not self.dry_run and self.docker.ensure_network(net, L.network_labels(inst, internal),
                                                                   internal=internal):
                    self._created_networks.append(net)
        volumes = sorted({b.source for s in self.stack.services for b in s.binds if b.volume})
        have = set()
        if self.docker is not None and volumes:
            have = {v["name"] for v in self.docker.list_volumes(L.instance_filter(inst))}
        for vol in volumes:
            if vol not in have:
                self._change("create-volume", vol)
                if not self.dry_run and self.docker.ensure_volume(vol, {**L.base_labels(inst), L.SERVICE: "volume"}):
                    self._created_volumes.append(vol)
        if self.gateway_dir is not None and self.stack.service("gateway"):
            path = self.gateway_dir / "routes.json"
            text = routes_text(self.stack)
            try:
                same = path.read_text() == text
            except OSError:
                same = False
            if not same:
                self._change("write-config", str(path),
                             f"gateway routes: {', '.join(self.stack.routes.get('models', {})) or 'none'}")
                if not self.dry_run:
                    write_if_changed(path, text)

    # ---- services ---------------------------------------------------------------------------
    def apply(self) -> ApplyResult:
        self.prepare()
        existing = stack_containers(self.docker, self.stack.instance) if self.docker else {}
        pending: list[_Pending] = []
        try:
            for level in self.stack.start_order():
                pending += self._apply_level(level, existing)
            if pending and not self.dry_run:
                self._wait_healthy(pending)
        except BaseException:
            if not self.dry_run:
                self._undo(pending)
            raise
        # only once everything new is healthy: services the plan dropped go, then replaced containers
        if self.remove_orphans:
            self._remove_orphans(existing)
        for p in pending:
            for old in p.old:
                self.progress(f"removing the old {p.svc.name} container {old.name}")
                self.docker.remove(old.id, force=True)
                self.result.removed_images.append(old.image)
                self._change("remove", old.name, f"replaced by {self.stack.hash_of(p.svc.name)[:8]}")
        return self.result

    def _apply_level(self, level: list[str], existing: dict[str, list[ContainerInfo]]) -> list[_Pending]:
        """Apply one dependency level; its services start in parallel (each start is ~0.5 s of
        engine work, most of it waiting on the storage driver)."""
        if self.dry_run or len(level) == 1:
            out = [self._apply_service(self.stack.service(n), existing.get(n, [])) for n in level]
            return [p for p in out if p is not None]
        from concurrent.futures import ThreadPoolExecutor

        done: list[_Pending] = []
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=min(4, len(level))) as pool:
            futures = [pool.submit(self._apply_service, self.stack.service(n), existing.get(n, [])) for n in level]
            for fut in futures:
                try:
                    p = fut.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below after collecting the others
                    errors.append(exc)
                    continue
                if p is not None:
                    done.append(p)
        if errors:
            self._undo(done)
            raise errors[0]
        return done

    def _apply_service(self, svc: ServiceSpec, containers: list[ContainerInfo]) -> _Pending | None:
        want = self.stack.hash_of(svc.name)
        current = [c for c in containers if c.labels.get(L.SPEC_HASH) == want]
        old = [c for c in containers if c.labels.get(L.SPEC_HASH) != want]
        if current and _secret_newer(svc, current[-1]):
            # its secret was made again (the file was lost): the engine must start with the new one
            # the gateway now sends; the container keeps its name, so it is replaced in place
            old, current = containers, []
        if current:
            keep = current[-1]
            for extra in current[:-1]:
                self._change("remove", extra.name, "duplicate")
                if not self.dry_run:
                    self.docker.remove(extra.id)
            if keep.state == "running":
                self._change("keep", svc.name, f"{keep.name} unchanged")
                self.result.kept.append(svc.name)
            else:
                self._change("start", svc.name, f"{keep.name} was {keep.state}")
                if not self.dry_run:
                    self.docker.start(keep.id)
                    return _Pending(svc=svc, container_id=keep.id, started_ts=time.monotonic(), old=old,
                                    new=False)
            for o in old:  # stale leftovers beside an up-to-date container
                self._change("remove", o.name, "stale")
                if not self.dry_run:
                    self.docker.remove(o.id)
            return None
        action = "replace" if old else "create"
        detail = f"image {svc.run_image()}"
        if old:
            detail += f"; replaces {', '.join(o.name for o in old)}"
            if svc.host_port is not None:
                detail += " (stops the old one first: host port)"
        self._change(action, svc.name, detail)
        (self.result.replaced if old else self.result.created).append(svc.name)
        if self.dry_run:
            return None
        self._hand_over_volumes(svc)  # nothing of this service changed yet if it fails
        stopped: list[str] = []
        if old and svc.host_port is not None:
            for o in old:
                if o.state == "running":
                    self.docker.stop(o.id)
                    stopped.append(o.id)
        spec = container_spec(svc, self.stack, self.release)
        self.progress(f"starting {svc.name} ({svc.run_image()})")
        try:
            # a leftover holding the name (e.g. half-created, not ours per labels) is replaced
            cid = self.docker.replace_container(spec, start=True)
        except BaseException:
            self._undo([_Pending(svc=svc, container_id="", started_ts=0.0, old=old, stopped_old=stopped, new=False)])
            raise
        return _Pending(svc=svc, container_id=cid, started_ts=time.monotonic(), old=old, stopped_old=stopped)

    def _hand_over_volumes(self, svc: ServiceSpec) -> None:
        """Before a container of ``svc`` is created: each data volume it writes belongs to the
        account it runs as (a one-off root container of its own image, :func:`hand_over_spec`)."""
        from appliance.runtime.ownership import user_uid

        uid = user_uid(svc.user)
        if not uid:
            return
        for b in svc.binds:
            if b.volume and not b.read_only:
                code, lines = self.docker.run_once(hand_over_spec(svc, self.stack, b.source, uid), timeout_s=120)
                if code != 0:
                    raise RuntimeFailure(f"cannot hand volume {b.source} to uid {uid} (exit code {code}): "
                                         + " | ".join(lines[-3:]), where=f"service {svc.name}",
                                         fix="check the volume (docker volume inspect) and re-run")

    def _remove_orphans(self, existing: dict[str, list[ContainerInfo]]) -> None:
        for name, containers in sorted(existing.items()):
            if self.stack.service(name) is not None:
                continue
            for c in containers:
                self._change("remove", c.name, f"service {name} is no longer in the plan")
                self.result.removed.append(name)
                if not self.dry_run:
                    self.docker.remove(c.id)
                    self.result.removed_images.append(c.image)

    # ---- health -----------------------------------------------------------------------------
    def _wait_healthy(self, pending: list[_Pending]) -> None:
        start = time.monotonic()
        waiting = {p.svc.name: p for p in pending}
        timeout_override = self.stack.settings.health_timeout_s
        self.progress(f"waiting for {', '.join(sorted(waiting))} to become healthy")
        while waiting:
            for name, p in sorted(waiting.items()):
                outside = p.svc.health.probe == "http"
                if outside:
                    state, health, exit_code = self._probe(p)
                else:
                    state, health, exit_code = self.docker.health(p.container_id)
                if state == "running" and health in ("healthy", None):
                    waiting.pop(name)
                    continue
                limit = timeout_override or p.svc.health.wait_timeout_s
                failed = None
                if state in ("exited", "dead", "missing", "restarting"):
                    failed = (f"its container {'keeps exiting' if state == 'restarting' else state}"
                              + (f" (exit code {exit_code})" if exit_code is not None else ""))
                elif time.monotonic() - p.started_ts > limit:
                    if outside:
                        check = (f"from this host: {p.last_probe.text()}" if p.last_probe
                                 else f"it has no address on {self.stack.network_of(p.svc)}")
                    else:
                        check = self.docker.last_health_check(p.container_id)
                    failed = (f"it did not become healthy within {limit:g}s (health: {health or 'none'}"
                              + (f", last check {check}" if check else ", no check has run yet") + ")")
                if failed:
                    self.result.waiting_s += time.monotonic() - start
                    lines = self.docker.log_tail(p.container_id, LOG_LINES_ON_FAILURE)
                    fix = "fix the cause (appliance init --dry-run shows the settings) and re-run"
                    if outside and (p.last_probe is None or (p.last_probe.status is None and p.last_probe.detail
                                                             not in ("connection refused", "connection reset"))):
                        fix += ("; its health is probed from this host at the container's address on the stack "
                                "network, which a remote or rootless Docker engine does not route: there, give "
                                "the image `probe: curl` (or python3) in the catalog")
                    raise ServiceUnhealthy(
                        f"{failed}; its last {len(lines)} log line(s) are shown above; "
                        f"every change of this run was undone",
                        service=name, log_lines=lines, where=f"service {name}", fix=fix)
            if waiting:
                time.sleep(0.25)
        self.result.waiting_s += time.monotonic() - start

    def _probe(self, p: _Pending) -> tuple[str, str, int | None]:
        """(state, health, exit code) of an ``http``-probe service: Docker has no health for it,
        so health is the outside probe's (at most one probe per :data:`PROBE_EVERY_S`; the last
        result counts in between). A failure within the start period is ``starting``."""
        addr = self.docker.container_address(p.container_id, self.stack.network_of(p.svc) or "none")
        hc = p.svc.health
        now = time.monotonic()
        if addr.state == "running" and addr.ip and now - p.probed_ts >= min(PROBE_EVERY_S, hc.interval_s):
            p.last_probe = http_probe(addr.ip, hc.port, hc.path, hc.timeout_s)
            p.probed_ts = now
        ok = p.last_probe is not None and p.last_probe.ok
        return addr.state, health_state(ok, now - p.started_ts, hc.start_period_s), addr.exit_code

    def _undo(self, pending: list[_Pending]) -> None:
        """Remove what this apply created and restart the old containers it stopped."""
        for p in pending:
            if p.new:
                self.docker.remove(p.container_id, force=True)
            for cid in p.stopped_old:
                try:
                    self.docker.start(cid)
                except RuntimeFailure:
                    pass
        for vol in self._created_volumes:
            self.docker.remove_volume(vol)
        for net in self._created_networks:
            self.docker.remove_network(net)
