"""``collect_status()``: everything an admin needs at a glance, cheaply, as a StatusReport.

Sources, each read once:

* the state database: the active release (plan + stack, as plain JSON through the read-only
  views of :mod:`appliance.runtime.views`), the agent's notes and heartbeat, the desired state,
  the bundle journal (an interrupted upgrade is reported as ``upgrade_interrupted`` with the
  fix -- status never finishes or undoes it: it changes nothing), the agent's last event.
  Before anything is installed there is no state file and nothing is created; no table is
  created or migrated either;
* Docker: one list call (:func:`appliance.runtime.views.service_states`, the rule of
  ``stack.list_services``) through the light read-only client
  (:class:`appliance.runtime.docker_adapter.EngineReader`: no SDK import) plus at most
  ``max_inspects`` inspects of containers that look wrong (:mod:`appliance.status.services`);
* the hardware: :func:`appliance.inventory.detect.detect` with usage (NVML for NVIDIA, no
  subprocess per device), in a thread while Docker answers; node health from psutil;
* licenses, only when license files are installed.

Start-up cost is part of the design: neither the Docker SDK nor pydantic is imported on this
path for a CPU node (``tests/status/test_status_imports.py``); the catalog (driver/runtime
compatibility), the licensing code and the agent's device rule are imported only when the node
has accelerators, license files, or a planned device to look for.

Nothing here raises for an unhealthy box: problems go into the report. Only bad input (a
broken ``--snapshot`` directory) raises, as an ApplianceError.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.status import node as N
from appliance.status import problems as P
from appliance.status.models import (
    EXIT_CODES,
    AcceleratorStatus,
    AgentStatus,
    CollectInfo,
    DockerStatus,
    Endpoints,
    LastUpgrade,
    ModelServed,
    NodeStatus,
    Problem,
    ReleaseInfo,
    ServiceStatus,
    StatusReport,
)
from appliance.status.services import MAX_INSPECTS, choose_inspects, inspect_facts, offline_status, service_status

DOCKER_TIMEOUT_S = 10.0


def iso(ts: float | None) -> str | None:
    """``datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")`` without importing
    datetime: the whole second, after rounding to the microsecond as datetime does."""
    if ts is None:
        return None
    whole = math.floor(ts)
    if round((ts - whole) * 1e6) >= 1_000_000:
        whole += 1
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(whole))


class _Hardware(threading.Thread):
    """detect() with usage, off the main thread (NVML start-up overlaps the Docker calls)."""

    def __init__(self, snapshot: str | None, node_facts: bool):
        super().__init__(daemon=True, name="status-detect")
        self.snapshot, self.node_facts = snapshot, node_facts
        self.inventory = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from appliance.inventory.detect import detect

        try:
            self.inventory = detect(snapshot=self.snapshot, usage=True, node_facts=self.node_facts)
        except BaseException as exc:  # noqa: BLE001 - re-raised (ApplianceError) or reported by the caller
            self.error = exc


def _license_files() -> bool:
    """Are license files installed? ``licensing.core.licenses_dir()`` without importing the
    licensing code (pydantic): the same path, checked by tests/status/test_status_views.py."""
    from appliance.paths import data_dir

    d = data_dir() / "licenses"
    return d.is_dir() and any(d.glob("*.json"))


def collect_status(*, snapshot: str | Path | None = None, instance: str | None = None, store=None, docker=None,
                   max_inspects: int = MAX_INSPECTS) -> StatusReport:
    """The status of ``instance`` (default ``APPLIANCE_INSTANCE``) on this node. Only reads:
    nothing on the box changes, so ``status --watch`` is safe in a loop.

    ``snapshot``: take accelerators and node facts from a node snapshot directory instead of
    this machine (the stack part still comes from the state and Docker).
    """
    from appliance import __version__
    from appliance.paths import state_path
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import docker_host

    t0 = time.monotonic()
    now = time.time()
    inst = instance or L.instance()
    has_licenses = _license_files()
    hw = _Hardware(str(snapshot) if snapshot else None, node_facts=bool(snapshot) or has_licenses)
    hw.start()

    problems: list[Problem] = []
    report = _Partial()
    if store is None and state_path().exists():
        from appliance.state.store import StateStore

        store = StateStore(state_path())
    if store is not None:
        _read_state(report, store, inst, problems=problems)

    docker_status = DockerStatus(reachable=None, host=docker_host())
    own_docker = docker is None
    if report.release is not None:
        docker = _query_docker(report, docker, store, inst, max_inspects, docker_status, problems, now)
    hw.join()
    if hw.error is not None:
        if isinstance(hw.error, ApplianceError):
            raise hw.error
        problems.append(Problem(severity="warning", code="detect_failed", subject="hardware",
                                message=f"hardware detection failed: {type(hw.error).__name__}: {hw.error}",
                                fix="run `appliance detect --debug`"))
    inventory = hw.inventory
    accs = list(inventory.accelerators) if inventory is not None else []

    release = report.release
    stack = release.stack if release is not None else None
    plan = release.plan if release is not None else None
    used_vendors = {d.vendor for s in (stack.services if stack else []) for d in s.device_refs}
    compat_for = None
    if any(a.backend != "cpu" for a in accs):
        from appliance.catalog import compat_for
    problems.extend(P.accelerator_problems(accs, plan=plan, used_vendors=used_vendors, compat_for=compat_for))
    if stack is not None and inventory is not None and used_vendors:
        problems.extend(_device_problems(stack, inventory))

    services = report.services
    served = {m for s in services for m in s.models}
    if has_licenses:
        problems.extend(_license_problems(inventory, served))

    node = _node(inventory, snapshot, docker_status, report.agent)
    if not snapshot:
        problems.extend(N.disk_problems(node.disks))
    models = _models(plan, stack, services)
    problems.extend(_weights_problems(models))

    status, summary = _overall(release, docker_status, problems, services, inst)
    if release is None:
        problems.insert(0, Problem(severity="error", code="not_installed", subject=f"instance {inst}",
                                   message="nothing is installed", fix=_INIT_FIX))
    calls = getattr(docker, "api_calls", 0) if docker is not None else 0
    if docker is not None and own_docker:
        docker.close()
    return StatusReport(
        status=status, healthy=status == "healthy", exit_code=EXIT_CODES[status], summary=summary, instance=inst,
        appliance_version=__version__, checked_at=iso(now), release=report.release_info, node=node,
        accelerators=[_accelerator(a, stack) for a in accs], services=services,
        models=models, problems=_sorted(problems), last_upgrade=report.last_upgrade,
        endpoints=_endpoints(stack),
        collect=CollectInfo(hardware=inventory.source if inventory is not None
                            else ("snapshot" if snapshot else "live"),
                            docker_api_calls=calls, docker_inspects=report.inspects,
                            seconds=round(time.monotonic() - t0, 4)))


_INIT_FIX = ("run `appliance init --demo --yes` (small built-in models, any machine) or `appliance init --yes` "
             "(with APPLIANCE_INSTANCE/APPLIANCE_DATA_DIR as for this command)")


class _Partial:
    """What the state and Docker said, gathered before the report is assembled."""

    def __init__(self):
        self.release = None
        self.release_info: ReleaseInfo | None = None
        self.desired = "up"
        self.notes: dict[str, dict] = {}
        self.services: list[ServiceStatus] = []
        self.last_upgrade: LastUpgrade | None = None
        self.agent = AgentStatus()
        self.inspects = 0


def _read_state(report: _Partial, store, inst: str, *, problems: list[Problem]) -> None:
    """Only SELECTs: the journal's and the runtime's tables are read as they are (a table that
    does not exist yet means nothing of that kind was recorded), never created or migrated."""
    from appliance.bundle import journal as J
    from appliance.runtime import views

    journal = "bundle_ops" in views.tables(store)
    interrupted = J.running(store, inst) if journal else None
    if interrupted is not None:
        problems.append(_interrupted_problem(interrupted, inst))
    release = views.current(store, inst)
    report.release = release
    report.desired = views.desired(store, inst)
    report.notes = views.service_notes(store, inst)
    recent = views.recent(store, inst, limit=3)
    if release is not None:
        previous_id = views.previous_id(store, inst, release.id)
        # when it became active: the runtime's "release N is active" event, else when it was begun
        since = next((e["ts"] for e in store.events(kind="release", limit=50)
                      if e["message"] == f"release {release.id} is active"), release.created_ts)
        report.release_info = ReleaseInfo(
            id=release.id, version=release.version, status=release.status, source=release.source, since=iso(since),
            since_ts=since, plan_hash=release.plan_hash, stack_hash=release.stack_hash,
            demo=any(s.demo for s in (release.stack.services if release.stack else [])),
            previous_id=previous_id,
            evaluation=any(s.evaluation for s in (release.plan.services if release.plan else [])))
    pending = [r for r in recent if r.status == "pending" and (release is None or r.id > release.id)]
    if pending:
        problems.append(_pending_problem(pending[0], release, inst))
    op = J.last(store, inst) if journal else None
    if op is not None:
        report.last_upgrade = LastUpgrade(kind=op.kind, from_version=op.from_version, to_version=op.to_version,
                                          status=op.status, step=op.step, release=op.to_release,
                                          started_at=iso(op.started_ts), updated_at=iso(op.updated_ts),
                                          error=(op.error or None) and op.error.splitlines()[0][:300])
        if op.status == J.FAILED:
            problems.append(Problem(severity="warning", code="upgrade_failed", subject=f"{op.kind} {op.to_version}",
                                    message=f"the last {op.kind} failed: {report.last_upgrade.error or 'see events'}",
                                    fix="fix the cause and re-run `appliance upgrade FILE`"))
    events = store.events(kind="agent", limit=1)
    if events:
        report.agent = AgentStatus(last_event=events[0]["message"], last_event_at=iso(events[0]["ts"]))
    problems.extend(_agent_heartbeat(report, store, inst))


def _agent_heartbeat(report, store, inst: str) -> list[Problem]:
    """Is the node agent alive? It records a heartbeat each pass; stale after 3 intervals."""
    import json

    from appliance.runtime.views import heartbeat_key

    raw = store.get_meta(heartbeat_key(inst))
    beat = json.loads(raw) if raw else None
    if beat:
        interval_s = float(beat.get("interval_s") or 15.0)
        report.agent.interval_s = interval_s
        report.agent.last_pass_at = iso(beat["ts"])
        report.agent.running = bool(beat.get("running")) and time.time() - float(beat["ts"]) <= 3 * interval_s + 10
    if report.release is None or report.agent.running:
        return []
    when = f"last pass {report.agent.last_pass_at}" if beat else "it has never run"
    return [Problem(severity="warning", code="agent_not_running", subject="node agent",
                    message=f"the node agent is not running ({when}): stopped or crashed services are not repaired",
                    fix="start it: `systemctl start appliance-agent` (installed by `appliance provision`) "
                        "or run `appliance agent`")]


def _interrupted_problem(op, inst: str) -> Problem:
    """An upgrade/rollback the journal shows as running: in progress (its lock is held) or
    interrupted by a crash. Status only reports it; the agent (at start), ``upgrade`` and
    ``rollback`` finish or undo it."""
    from appliance.bundle import journal as J

    with J.op_lock(inst) as free:
        pass
    if not free:
        return Problem(severity="warning", code="upgrade_in_progress", subject=f"{op.kind} {op.to_version}",
                       message=f"{op.kind} to {op.to_version} is in progress (step {op.step})",
                       fix="wait for it to finish, then run `appliance status` again")
    return Problem(severity="error", code="upgrade_interrupted", subject=f"{op.kind} {op.to_version}",
                   message=f"the {op.kind} {op.from_version or '-'} -> {op.to_version} was interrupted at step "
                           f"{op.step}; the release it left is shown below until it is finished or rolled back",
                   fix="run `appliance upgrade FILE` or `appliance rollback` (either first finishes or undoes it), "
                       "or start the agent (`appliance agent`), which does so when it starts")


def _pending_problem(row, release, inst: str) -> Problem:
    from appliance.runtime.stack import instance_lock

    with instance_lock(inst, wait=False) as free:
        pass
    if not free:
        return Problem(severity="info", code="install_in_progress", subject=f"release {row.id}",
                       message=f"release {row.id} is being installed ({row.source})",
                       fix="wait for it to finish, then run `appliance status` again")
    running = f"release {release.id} keeps running" if release else "nothing else is installed"
    return Problem(severity="warning", code="release_inconsistent", subject=f"release {row.id}",
                   message=f"release {row.id} ({row.source}) was left pending by an interrupted install; {running}",
                   fix="re-run the command that made it (e.g. `appliance init --yes`)")


def _query_docker(report: _Partial, docker, store, inst: str, max_inspects: int, docker_status: DockerStatus,
                  problems: list[Problem], now: float):
    """One list call (+ bounded inspects); on any engine failure the services are 'unknown'.

    ``docker``: any client with ``list_containers``/``inspect_container`` (default: the light
    read-only one, :func:`appliance.runtime.docker_adapter.read_client`)."""
    from appliance.errors import DockerUnavailable
    from appliance.runtime.views import service_states

    release = report.release
    stack = release.stack
    try:
        if docker is None:
            from appliance.runtime.docker_adapter import read_client

            docker = read_client(timeout_s=DOCKER_TIMEOUT_S)
        states = service_states(docker, inst, release, report.notes)
        chosen = choose_inspects(states, max_inspects)
        facts = {s.name: inspect_facts(docker.inspect_container(s.container_id)) for s in chosen}
        for s in states:  # probed from outside (no Docker health check): the agent's last check says why
            detail = ((report.notes.get(s.name) or {}).get("probe") or {}).get("detail")
            if s.probe == "http" and s.health == "unhealthy" and detail:
                facts.setdefault(s.name, {})["health_output"] = f"the agent's probe: {detail}"
    except Exception as exc:  # noqa: BLE001 - DockerUnavailable, or the engine failing mid-way
        text = exc.message if isinstance(exc, DockerUnavailable) else f"the Docker engine failed: {_short(exc)}"
        docker_status.reachable = False
        docker_status.error = text
        problems.append(Problem(severity="error", code="docker_unreachable", subject="docker", message=text,
                                fix=getattr(exc, "fix", None)
                                or "start it (systemctl start docker) or set DOCKER_HOST"))
        report.services = [offline_status(s, report.notes.get(s.name)) for s in stack.services]
        return docker
    report.inspects = len(chosen)
    docker_status.reachable = True
    server = getattr(docker, "server_header", None) or ""
    if server.startswith("Docker/"):
        docker_status.version = server.split("/", 1)[1].split(" ", 1)[0]
    wanted = {s.name for s in stack.services}
    mine = [s for s in states if s.name in wanted]
    others = [s for s in states if s.name not in wanted]
    report.services = [service_status(s, svc=stack.service(s.name), notes=report.notes.get(s.name),
                                      facts=facts.get(s.name), now=now) for s in mine]
    orphans = [service_status(s, notes=report.notes.get(s.name), facts=facts.get(s.name), now=now) for s in others]
    problems.extend(P.service_problems(report.services, facts, desired=report.desired))
    problems.extend(P.orphan_problems(orphans, wanted))
    report.services.extend(orphans)
    return docker


def _short(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0][:200]


def _device_problems(stack, inventory) -> list[Problem]:
    """Services planned on a device the node no longer has (the agent marks them degraded).
    The agent's code is imported only when a device is gone."""
    out = []
    for svc in stack.services:
        if all(inventory.find(ref) is not None for ref in svc.device_refs):
            continue  # every planned device is there (Inventory.find: the one matching rule)
        from appliance.agent.loop import missing_devices

        gone = missing_devices(svc.device_refs, inventory)
        if gone:
            out.append(Problem(severity="error", code="device_missing", subject=svc.name,
                               message=f"planned on device(s) the node no longer has: {', '.join(gone)}",
                               fix="check the hardware with `appliance detect`; re-plan with `appliance init --yes` "
                                   "if the device is gone for good"))
    return out


def _license_problems(inventory, served: set[str]) -> list[Problem]:
    from appliance.licensing.core import installed
    from appliance.licensing.fingerprint import node_fingerprint

    try:
        fingerprint = node_fingerprint(inventory) if inventory is not None else None
        return P.license_problems(installed(fingerprint=fingerprint).licenses, served)
    except ApplianceError as exc:
        return [Problem(severity="warning", code="license_invalid", subject="licenses", message=exc.message,
                        fix=exc.fix or "`appliance license list`")]


def _node(inventory, snapshot, docker_status: DockerStatus, agent: AgentStatus) -> NodeStatus:
    if snapshot:
        n = inventory.node if inventory is not None else None
        disks = []
        return NodeStatus(hostname=n.hostname if n else None, source=inventory.source if inventory else "snapshot",
                          cpu_count=n.cpu_count if n else None, memory_total_mib=n.memory_mib if n else None,
                          disks=disks, docker=docker_status, agent=agent)
    from appliance.paths import data_dir

    facts = N.live_facts()
    return NodeStatus(source="live", disks=N.disks(data_dir()), docker=docker_status, agent=agent, **facts)


def _accelerator(a, stack) -> AcceleratorStatus:
    key = f"{a.vendor}:{a.index}"
    users = [s.name for s in (stack.services if stack else [])
             if any(f"{d.vendor}:{d.index}" == key for d in s.device_refs)]
    u = a.usage
    return AcceleratorStatus(
        vendor=a.vendor, index=a.index, model=a.model, backend=a.backend, pci_bdf=a.pci_bdf, uuid=a.uuid,
        memory_total_mib=a.memory_mib, memory_used_mib=u.memory_used_mib if u else None,
        utilization_pct=u.utilization_pct if u else None, temperature_c=u.temperature_c if u else None,
        power_w=u.power_w if u else None, power_limit_w=u.power_limit_w if u else None,
        driver_version=a.driver_version,
        runtime=" ".join(x for x in (_runtime_name(a), a.runtime.version if a.runtime else None) if x) or None,
        health=a.health, usage_source=u.source if u else None, services=users, hints=list(a.hints))


_RUNTIME_NAMES = {"cuda": "CUDA", "cann": "CANN", "rocm": "ROCm", "neuware": "Neuware", "dtk": "DTK",
                  "maca": "MACA", "musa": "MUSA", "corex": "CoreX", "xre": "XRE", "synapseai": "SynapseAI"}


def _runtime_name(a) -> str | None:
    if a.runtime is None:
        return None
    return _RUNTIME_NAMES.get(a.runtime.name.lower(), a.runtime.name)


def _models(plan, stack, services: list[ServiceStatus]) -> list[ModelServed]:
    by_name = {s.name: s for s in services}
    out: list[ModelServed] = []
    seen: set[str] = set()
    from appliance.models.layout import weights_state

    for ps in (plan.services if plan else []):
        svc = by_name.get(ps.name)
        weights, verified = (weights_state(ps.model, ps.precision, ps.model_path) if not ps.demo
                             else ("not_needed", None))
        out.append(ModelServed(name=ps.served_model_name, model=ps.model, role=ps.role, service=ps.name,
                               engine=ps.engine, devices=[f"{d.vendor}:{d.index}" for d in ps.devices],
                               ready=bool(svc and svc.ok), demo=ps.demo, precision=ps.precision, weights=weights,
                               weights_verified_at=verified, evaluation=ps.evaluation))
        seen.add(ps.served_model_name)
    for spec in (stack.services if stack else []):
        if spec.kind != "inference":
            continue
        for m in spec.served_models:
            if m not in seen:
                svc = by_name.get(spec.name)
                out.append(ModelServed(name=m, service=spec.name, ready=bool(svc and svc.ok), demo=spec.demo,
                                       devices=[f"{d.vendor}:{d.index}" for d in spec.device_refs]))
                seen.add(m)
    return out


def _weights_problems(models: list[ModelServed]) -> list[Problem]:
    """A planned model whose weights are gone from the node cannot be (re)started."""
    return [Problem(severity="error", code="weights_missing", subject=m.model or m.name,
                    message=f"the weights of {m.model} ({m.precision}) are not on this node: its service cannot start "
                            "again", fix=f"appliance models import SOURCE --model {m.model} --precision {m.precision}")
            for m in models if m.weights == "missing"]


def _endpoints(stack) -> Endpoints:
    if stack is None:
        return Endpoints()
    data = stack.endpoints()
    return Endpoints(gateway=data.get("gateway"), apps=dict(data.get("apps") or {}))


def _sorted(problems: list[Problem]) -> list[Problem]:
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(problems, key=lambda p: order[p.severity])


def _overall(release, docker_status: DockerStatus, problems: list[Problem], services: list[ServiceStatus],
             inst: str) -> tuple[str, str]:
    if release is None:
        return "not_installed", (f"nothing is installed for instance {inst}: run `appliance init --demo --yes` "
                                 "(or `appliance init --yes`)")
    if not docker_status.reachable:
        return "unknown", f"cannot tell: {docker_status.error}"
    errors = [p for p in problems if p.severity == "error"]
    up = sum(1 for s in services if s.ok)
    head = f"release {release.id} ({release.version or '?'}), {up}/{len(services)} services up"
    if errors:
        first = "; ".join(f"{p.subject} {p.message}" for p in errors[:2])
        more = f" (+{len(errors) - 2} more)" if len(errors) > 2 else ""
        return "degraded", f"degraded: {head}; {first}{more}"
    warnings = sum(1 for p in problems if p.severity == "warning")
    return "healthy", f"healthy: {head}" + (f", {warnings} warning(s)" if warnings else "")
