"""Read-only views of the recorded release and of the services' states, for fast readers.

WHY this module: :func:`appliance.runtime.releases.current` validates the recorded plan and
stack through pydantic (``Plan``, ``StackSpec``), and :func:`appliance.runtime.stack.list_services`
returns pydantic ``ServiceState`` models. Building those schemas costs more than everything else
``appliance status`` does, for data the appliance wrote itself. A reader that only *looks* (status)
takes the same rows as plain JSON here, into small views with the few fields it needs:

* :func:`current` -- the active release (:class:`ReleaseView`: its :class:`PlanView` and
  :class:`StackView`), :func:`previous_id`, :func:`recent`, :func:`desired`,
  :func:`service_notes`: the same queries as :mod:`appliance.runtime.releases`;
* :func:`service_states` -- the same rule as ``list_services`` (the container a service means is
  its up-to-date one, else its newest; services the release wants but Docker lacks are
  ``missing``), over one list call of any client with ``list_containers`` (the light
  :class:`~appliance.runtime.docker_adapter.EngineReader` or the SDK's ``Docker``).

Nothing here writes: no schema is created or migrated (a table that does not exist means
nothing was recorded), nothing is converted back. The views mirror the pydantic models' field
names and methods (``endpoint()``, ``run_image()``, ``hash_of()``, ``endpoints()``), and
``tests/status/test_status_views.py`` checks them against those models and ``list_services`` on
real composed stacks, so the two cannot drift apart unnoticed. Writers use the models.
"""

from __future__ import annotations

import json

from appliance.runtime import labels as L
from appliance.runtime.urls import endpoint_url

# the kinds that make up the stack (training *jobs* are not services); converge uses this too
STACK_KINDS = ("inference", "gateway", "app", "training")


def heartbeat_key(instance: str) -> str:
    """The state meta key where the node agent records each pass (``appliance status`` and
    ``appliance preflight`` read it: is the agent alive, which metrics port does it hold). The
    agent writes it through :mod:`appliance.runtime.releases`, which re-exports this."""
    return f"agent.heartbeat.{instance}"


def probes_key(instance: str) -> str:
    """The state meta key where the node agent records its last outside probe of each ``http``-probe
    service (:mod:`appliance.runtime.probe`): ``{"expires_ts": T, "services": {name: {"container":
    id, "health": healthy|unhealthy|starting, "detail": "HTTP 503 from ...", "ts": T}}}``. Written
    by :func:`appliance.runtime.releases.record_probes`; :func:`service_notes` hands each record
    to its service's note as ``probe`` until it expires (3 agent intervals: a stopped agent's last
    word is not shown as the service's health)."""
    return f"agent.probes.{instance}"


def probe_records(store, instance: str, now: float | None = None) -> dict[str, dict]:
    """service -> the agent's last outside probe of it; {} when none is recorded or it expired."""
    import time

    try:
        raw = store.get_meta(probes_key(instance))
        data = json.loads(raw) if raw else {}
    except (ValueError, TypeError):
        return {}
    if not isinstance(data, dict) or float(data.get("expires_ts") or 0) < (now or time.time()):
        return {}
    services = data.get("services")
    return {k: v for k, v in services.items() if isinstance(v, dict)} if isinstance(services, dict) else {}


def with_probes(notes: dict[str, dict], store, instance: str) -> dict[str, dict]:
    """``notes`` with each service's outside probe record (``probe``) added; the one merge, for
    this module's and :mod:`appliance.runtime.releases`' ``service_notes`` alike."""
    for name, record in probe_records(store, instance).items():
        notes.setdefault(name, {})["probe"] = record
    return notes


def probed_health(note: dict | None, container_id: str) -> str | None:
    """The health of an ``http``-probe container: the agent's recorded result for this very
    container, else None (not probed yet, or the agent is not running: shown as running)."""
    record = (note or {}).get("probe") or {}
    return record.get("health") if record.get("container") == container_id else None


# ---- views of the recorded plan and stack -------------------------------------------------------
class DeviceView:
    """A planned device reference (``planner.models.DeviceRef``); what ``Inventory.find`` matches."""

    __slots__ = ("vendor", "index", "pci_bdf", "uuid", "physical_id", "model", "memory_mib")

    def __init__(self, d: dict):
        self.vendor = d["vendor"]
        self.index = d["index"]
        self.pci_bdf = d.get("pci_bdf")
        self.uuid = d.get("uuid")
        self.physical_id = d.get("physical_id")
        self.model = d.get("model")
        self.memory_mib = d.get("memory_mib")


def _devices(items) -> list[DeviceView]:
    return [DeviceView(d) for d in items or []]


class ServiceView:
    """One service of the recorded stack (``runtime.models.ServiceSpec``)."""

    __slots__ = ("name", "kind", "image", "image_ref", "host_port", "host_ip", "tls", "served_models", "demo",
                 "device_refs", "_raw")

    def __init__(self, d: dict):
        self.name = d["name"]
        self.kind = d["kind"]
        self.image = d["image"]
        self.image_ref = d.get("image_ref")
        self.host_port = d.get("host_port")
        self.host_ip = d.get("host_ip")
        self.tls = d.get("tls")
        self.served_models = list(d.get("served_models") or [])
        self.demo = bool(d.get("demo", False))
        self.device_refs = _devices(d.get("device_refs"))
        self._raw = d

    def run_image(self) -> str:
        return self.image_ref or self.image

    def endpoint(self) -> str | None:
        return endpoint_url(self.host_ip, self.host_port, self.tls)

    def spec_hash(self) -> str:
        """Only for a stack recorded without hashes (older releases): through the model itself."""
        from appliance.runtime.models import ServiceSpec

        return ServiceSpec.model_validate(self._raw).spec_hash()


class StackView:
    """The recorded stack (``runtime.models.StackSpec``): its services and their applied hashes."""

    __slots__ = ("instance", "plan_hash", "services", "hashes")

    def __init__(self, d: dict):
        self.instance = d.get("instance")
        self.plan_hash = d.get("plan_hash")
        self.services = [ServiceView(s) for s in d.get("services") or []]
        self.hashes = dict(d.get("hashes") or {})

    def service(self, name: str) -> ServiceView | None:
        return next((s for s in self.services if s.name == name), None)

    def hash_of(self, name: str) -> str | None:
        """The spec hash recorded when the stack was applied (``StackSpec.hash_of``)."""
        if name in self.hashes:
            return self.hashes[name]
        svc = self.service(name)
        return svc.spec_hash() if svc else None

    def endpoints(self) -> dict:
        gateway = next((s.endpoint() for s in self.services if s.kind == "gateway" and s.endpoint()), None)
        apps = {s.name: s.endpoint() + "/" for s in self.services if s.kind == "app" and s.endpoint()}
        return {"gateway": gateway + "/v1" if gateway else None, "apps": dict(sorted(apps.items()))}


class PlannedServiceView:
    """One planned service (``planner.models.PlannedService``): what it serves, on what."""

    __slots__ = ("name", "role", "model", "served_model_name", "engine", "devices", "demo", "precision",
                 "model_path", "evaluation")

    def __init__(self, d: dict):
        self.name = d["name"]
        self.role = d["role"]
        self.model = d["model"]
        self.served_model_name = d["served_model_name"]
        self.engine = d["engine"]
        self.devices = _devices(d.get("devices"))
        self.demo = bool(d.get("demo", False))
        self.precision = d.get("precision")
        self.model_path = d.get("model_path")
        self.evaluation = bool(d.get("evaluation", False))


class PlanView:
    """The recorded plan (``planner.models.Plan``): the node it was made for and its services."""

    __slots__ = ("node", "services", "plan_hash")

    def __init__(self, d: dict):
        self.node = dict(d.get("node") or {})
        self.services = [PlannedServiceView(s) for s in d.get("services") or []]
        self.plan_hash = d.get("plan_hash")


class ReleaseView:
    """One row of ``releases`` (``runtime.models.Release``) with its plan and stack as views."""

    __slots__ = ("id", "created_ts", "status", "source", "version", "plan_hash", "stack_hash", "note", "plan",
                 "stack")

    def __init__(self, row, *, with_specs: bool = True):
        self.id = int(row["id"])
        self.created_ts = float(row["created_ts"])
        self.status = row["status"]
        self.source = row["source"]
        self.version = row["version"]
        self.plan_hash = row["plan_hash"]
        self.stack_hash = row["stack_hash"]
        self.note = row["note"]
        self.plan = PlanView(json.loads(row["plan_json"])) if with_specs else None
        self.stack = StackView(json.loads(row["stack_json"])) if with_specs else None


# ---- the queries (those of appliance.runtime.releases, without creating any table) ---------------
def tables(store) -> set[str]:
    return {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}


def current(store, instance: str) -> ReleaseView | None:
    if "releases" not in tables(store):
        return None
    r = store.one("SELECT * FROM releases WHERE instance=? AND status='active' ORDER BY id DESC LIMIT 1",
                  (instance,))
    return ReleaseView(r) if r else None


def previous_id(store, instance: str, current_id: int | None) -> int | None:
    """The release that was active before ``current_id`` (what rollback returns to)."""
    if "releases" not in tables(store):
        return None
    sql = "SELECT id FROM releases WHERE instance=? AND status='superseded'"
    params: tuple = (instance,)
    if current_id is not None:
        sql += " AND id<?"
        params = (instance, current_id)
    r = store.one(sql + " ORDER BY id DESC LIMIT 1", params)
    return int(r["id"]) if r else None


def recent(store, instance: str, limit: int = 20) -> list[ReleaseView]:
    """The latest releases, newest first, without their plan and stack."""
    if "releases" not in tables(store):
        return []
    rows = store.query("SELECT id, created_ts, status, source, version, plan_hash, stack_hash, note FROM releases "
                       "WHERE instance=? ORDER BY id DESC LIMIT ?", (instance, limit))
    return [ReleaseView(r, with_specs=False) for r in rows]


def desired(store, instance: str) -> str:
    if "runtime_desired" not in tables(store):
        return "up"
    r = store.one("SELECT state FROM runtime_desired WHERE instance=?", (instance,))
    return r["state"] if r else "up"


def service_notes(store, instance: str) -> dict[str, dict]:
    if "runtime_services" not in tables(store):
        return {}
    rows = store.query("SELECT * FROM runtime_services WHERE instance=?", (instance,))
    return with_probes({r["name"]: dict(r) for r in rows}, store, instance)


# ---- the services' states -------------------------------------------------------------------------
class ServiceStateView:
    """A service as it is now (``runtime.models.ServiceState``, the same fields)."""

    __slots__ = ("name", "kind", "state", "health", "container_id", "container_name", "image", "release",
                 "spec_hash", "desired_hash", "up_to_date", "endpoint", "status_text", "created_ts",
                 "served_models", "degraded", "probe")

    def __init__(self, *, name: str, state: str, kind: str | None = None, health: str | None = None,
                 container_id: str | None = None, container_name: str | None = None, image: str | None = None,
                 release: int | None = None, spec_hash: str | None = None, desired_hash: str | None = None,
                 up_to_date: bool = True, endpoint: str | None = None, status_text: str | None = None,
                 created_ts: float | None = None, served_models: list[str] | None = None,
                 degraded: str | None = None, probe: str | None = None):
        self.name, self.kind, self.state, self.health = name, kind, state, health
        self.container_id, self.container_name, self.image, self.release = container_id, container_name, image, release
        self.spec_hash, self.desired_hash, self.up_to_date = spec_hash, desired_hash, up_to_date
        self.endpoint, self.status_text, self.created_ts = endpoint, status_text, created_ts
        self.served_models = list(served_models or [])
        self.degraded = degraded
        self.probe = probe

    def model_dump(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def service_states(docker, instance: str, release: ReleaseView | None,
                   notes: dict[str, dict] | None = None) -> list[ServiceStateView]:
    """Every service of ``release`` plus any other stack container of ``instance``, with its state
    (``stack.list_services``): one Docker list call."""
    notes = notes or {}
    containers: dict[str, list] = {}
    for c in docker.list_containers(L.instance_filter(instance)):
        if c.labels.get(L.KIND) in STACK_KINDS and c.service:
            containers.setdefault(c.service, []).append(c)
    stack = release.stack if release is not None else None
    wanted = {s.name: s for s in (stack.services if stack else [])}
    out: list[ServiceStateView] = []
    for name in list(wanted) + sorted(n for n in containers if n not in wanted):
        svc = wanted.get(name)
        cs = containers.get(name, [])
        want = stack.hash_of(name) if svc else None
        c = next((c for c in reversed(cs) if c.labels.get(L.SPEC_HASH) == want), cs[-1] if cs else None)
        note = notes.get(name, {})
        if c is None:
            out.append(ServiceStateView(name=name, kind=svc.kind if svc else None, state="missing",
                                        desired_hash=want, up_to_date=False, image=svc.run_image() if svc else None,
                                        endpoint=svc.endpoint() if svc else None,
                                        served_models=svc.served_models if svc else [],
                                        degraded=note.get("degraded") or note.get("held")))
            continue
        labels = c.labels
        probe = labels.get(L.PROBE)  # absent on containers made before probes had kinds: python3
        health = probed_health(note, c.id) if probe == "http" and c.state == "running" else c.health
        out.append(ServiceStateView(
            name=name, kind=labels.get(L.KIND), state=c.state, health=health, container_id=c.id,
            container_name=c.name, image=c.image, release=int(labels.get(L.RELEASE, 0) or 0),
            spec_hash=labels.get(L.SPEC_HASH), desired_hash=want,
            up_to_date=want is not None and labels.get(L.SPEC_HASH) == want,
            endpoint=labels.get("appliance.endpoint") or None, status_text=c.status, created_ts=c.created_ts,
            served_models=[m for m in labels.get(L.MODELS, "").split(",") if m],
            degraded=note.get("degraded") or note.get("held"), probe=probe))
    return out
