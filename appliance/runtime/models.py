"""Pydantic models of the running stack: what the runtime builds, records and reports.

A :class:`StackSpec` is the complete, resolved description of every container of one
instance (inference services from the plan, the gateway, the sample apps, the training
service). It is derived deterministically from (plan, catalog, inventory, settings), stored
with each release, and compared service by service -- by :meth:`ServiceSpec.spec_hash` --
to decide what to replace. Secrets never appear in it (apps get their API key, engines their
secret, from a mounted file).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field

from appliance.catalog.schema import ImageRecipe
from appliance.planner.models import DeviceRef, Plan
from appliance.runtime.urls import endpoint_url

STACK_FORMAT = "appliance-stack/1"


DEFAULT_BIND_IP = "127.0.0.1"
DEFAULT_GATEWAY_PORT = 8080
DEFAULT_AGENT_METRICS_PORT = 9464   # the node agent's Prometheus endpoint (loopback by default)
DEFAULT_CONSOLE_PORT = 8070        # the admin console (`appliance console`; the site bind address)


DEFAULT_ENGINE_PORT_BASE = 18000


class RemoteEngine(BaseModel):
    """An engine another node of the cluster serves, which the head's gateway routes to."""

    node: str
    service: str = Field(description="its service on that node")
    key: str = Field(description="the head's name for it: its route's service and secret file (<service>.<node>)")
    url: str = Field(description="http://<node address>:<published port>")
    served_models: list[str] = Field(default_factory=list)
    role: str = ""


class Settings(BaseModel):
    """Site settings that shape the stack but not the plan (recorded with each release).

    The defaults here are the one place the box's default bind address and gateway port are
    defined; the site configuration (:mod:`appliance.deploy.site`) extends this model.
    """

    bind_ip: str = Field(default=DEFAULT_BIND_IP, description="host address the gateway and apps publish on")
    gateway_port: int = Field(default=DEFAULT_GATEWAY_PORT, ge=1, le=65535,
                              description="host port of the gateway (OpenAI-compatible API)")
    app_port_base: int | None = Field(default=None, ge=1, le=65535,
                                      description="host port of the first app (apps in name order "
                                      "get consecutive ports); default: each app's catalog port")
    health_timeout_s: float | None = Field(default=None, gt=0,
                                           description="override of every service's health-wait timeout")
    tls: bool = Field(default=False, description="the gateway and apps serve HTTPS with the box's certificate "
                      "(<data>/tls: an admin's, or self-signed; appliance.deploy.tls)")
    tls_cert_source: str | None = Field(default=None, description="the admin's PEM certificate (init --tls-cert); "
                                        "None with tls: a self-signed one")
    tls_key_source: str | None = Field(default=None, description="the admin's PEM key (init --tls-key)")
    insecure_http: bool = Field(default=False, description="serve plain HTTP beyond loopback (init --insecure-http)")
    cluster_role: Literal["single", "head", "worker"] = Field(
        default="single", description="worker: engines only, published on node_address behind their secrets (no "
        "gateway, no apps); head: the gateway also routes to remote_engines (init --inventory, docs/cluster.md)")
    node_address: str | None = Field(default=None, description="worker: the address its engines publish on")
    engine_port_base: int | None = Field(default=None, ge=1, le=65535, description="worker: the host port of its "
                                         "first engine (engines in name order get consecutive ports)")
    remote_engines: list[RemoteEngine] = Field(default_factory=list, description="head: the workers' engines")


class Bind(BaseModel):
    source: str = Field(description="host path, or a volume name when volume=True")
    target: str
    read_only: bool = True
    volume: bool = False


class HealthSpec(BaseModel):
    path: str = "/health"
    port: int
    interval_s: float = 5.0
    timeout_s: float = 3.0
    start_period_s: float = 600.0
    retries: int = 3
    wait_timeout_s: float = Field(default=600.0, description="how long init waits for healthy")
    probe: Literal["python3", "python3-tls", "curl", "http"] = Field(
        default="python3", description="python3 / curl: a Docker health check run inside the container "
        "(python3-tls: the same over HTTPS, for a service behind the box's certificate); http: "
        "no check inside, the runtime and the agent GET the path at the container's address "
        "(appliance.runtime.probe)")


class ServiceSpec(BaseModel):
    name: str
    kind: Literal["inference", "gateway", "app", "training"]
    image: str = Field(description="the image the plan names (catalog reference)")
    build: str | None = Field(default=None, description="images/ subdirectory the image is built from locally")
    recipe: ImageRecipe | None = Field(default=None, description="layered on a vendor base from carried wheels")
    content_hash: str | None = Field(default=None, description="hash of the build directory (local images)")
    image_ref: str | None = Field(default=None, description="what Docker runs: a local build's content tag "
                                  "(appliance.runtime.images.content_tag), else the image itself")
    entrypoint: list[str] = Field(default_factory=list, description="overrides the image's entrypoint when set")
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    port: int = Field(description="port the service listens on inside the container")
    host_port: int | None = None
    host_ip: str | None = None
    aliases: list[str] = Field(default_factory=list)
    binds: list[Bind] = Field(default_factory=list)
    tmpfs: dict[str, str] = Field(default_factory=dict)
    devices: list[str] = Field(default_factory=list)
    device_requests: list[dict] = Field(default_factory=list)
    device_refs: list[DeviceRef] = Field(default_factory=list)
    group_add: list[str] = Field(default_factory=list)
    runtime: str | None = None
    cap_add: list[str] = Field(default_factory=list)
    ipc_mode: str | None = None
    hardened: bool = Field(default=False, description="read-only root fs, all capabilities dropped")
    user: str | None = Field(default=None, description="uid:gid the container runs as (our images: their "
                             "account, appliance.runtime.ownership.container_user); None: the image's own")
    networks: list[str] | None = Field(default=None, description="the stack networks it is attached to, the "
                                       "first at creation ([]: none at all); None: a service recorded before "
                                       "the engine network, on the stack's one network")
    tls: bool | None = Field(default=None, description="serves HTTPS on its published port (None: plain HTTP)")
    health: HealthSpec
    depends_on: list[str] = Field(default_factory=list)
    memory_limit_mib: int | None = None
    pids_limit: int | None = Field(default=None, description="processes/threads at most (default: 512 for our "
                                   "hardened services, none for engines)")
    cpus: float | None = None
    cpuset: str | None = Field(default=None, description="host cores the container may run on (e.g. '0-1')")
    shm_size_mib: int | None = None
    served_models: list[str] = Field(default_factory=list)
    demo: bool = False

    def spec_hash(self) -> str:
        """Fingerprint of the container definition (start order is not part of it).

        The health probe counts only when it is not ``python3``: a definition from before the
        probe field (always python3) hashes as it did, so its container is kept."""
        data = self.model_dump(mode="json", exclude={"depends_on"})
        if data["health"].get("probe") == "python3":
            del data["health"]["probe"]
        for key in _LATER_FIELDS:  # likewise fields unset on every service before they existed
            if data.get(key) is None:
                data.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def run_image(self) -> str:
        """The reference a container of this service is created from."""
        return self.image_ref or self.image

    def endpoint(self) -> str | None:
        return endpoint_url(self.host_ip, self.host_port, self.tls)

    def internal_url(self) -> str:
        return f"http://{self.name}:{self.port}"


# ServiceSpec fields added after stacks were first recorded: left out of a hash while unset, so
# a recorded definition hashes as it did when it was applied
_LATER_FIELDS = ("recipe", "pids_limit", "user", "networks", "tls")
_LATER_SETTINGS = {"cluster_role": "single", "node_address": None, "engine_port_base": None, "remote_engines": []}


class StackSpec(BaseModel):
    format: str = STACK_FORMAT
    instance: str
    network: str = Field(description="the front network: the gateway and the apps (every service, in a stack "
                         "recorded before engine_network)")
    engine_network: str | None = Field(default=None, description="the internal network of the engines and the "
                                       "gateway; None in a stack recorded before it")
    settings: Settings = Field(default_factory=Settings)
    plan_hash: str | None = None
    services: list[ServiceSpec] = Field(default_factory=list)
    routes: dict = Field(default_factory=dict, description="the gateway's routes.json content")
    apps: list[str] = Field(default_factory=list)
    hashes: dict[str, str] = Field(default_factory=dict, description="service -> spec hash, as applied")

    def service(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)

    def networks_of(self, svc: ServiceSpec) -> list[str]:
        """The networks ``svc``'s container is attached to, the one it is created on first."""
        return list(svc.networks) if svc.networks is not None else [self.network]

    def network_of(self, svc: ServiceSpec) -> str | None:
        """Where ``svc`` is reached from this host (its address for an outside health probe): its
        first network (an engine's: the engine network)."""
        nets = self.networks_of(svc)
        return nets[0] if nets else None

    def stack_networks(self) -> dict[str, bool]:
        """Every network the stack's containers use -> internal (no route out, nothing published)."""
        out = {self.network: False}
        if self.engine_network:
            out[self.engine_network] = True
        for svc in self.services:
            for net in self.networks_of(svc):
                out.setdefault(net, net == self.engine_network)
        return out

    def hash_of(self, name: str) -> str | None:
        """The spec hash the containers of ``name`` were labelled with when this stack was applied.

        Recorded rather than recomputed, so a newer appliance version that hashes differently
        never mistakes a running container for a stale one.
        """
        if name in self.hashes:
            return self.hashes[name]
        svc = self.service(name)
        return svc.spec_hash() if svc else None

    def with_hashes(self) -> "StackSpec":
        return self.model_copy(update={"hashes": {s.name: s.spec_hash() for s in self.services}})

    def start_order(self) -> list[list[str]]:
        """Services grouped in dependency levels (each level only depends on earlier ones)."""
        remaining = {s.name: set(d for d in s.depends_on if self.service(d)) for s in self.services}
        levels: list[list[str]] = []
        done: set[str] = set()
        while remaining:
            level = sorted(n for n, deps in remaining.items() if deps <= done)
            if not level:  # a cycle: start the rest together rather than never
                level = sorted(remaining)
            levels.append(level)
            done.update(level)
            for n in level:
                remaining.pop(n)
        return levels

    def stack_hash(self) -> str:
        data = self.model_dump(mode="json")
        if data.get("engine_network") is None:
            data.pop("engine_network", None)
        settings = data.get("settings") or {}
        for key, default in _LATER_SETTINGS.items():  # a stack recorded before the cluster settings hashes as then
            if settings.get(key, default) == default:
                settings.pop(key, None)
        for svc in data["services"]:  # as in ServiceSpec.spec_hash: python3 (the default) hashes as before
            if svc["health"].get("probe") == "python3":
                del svc["health"]["probe"]
            for key in _LATER_FIELDS:
                if svc.get(key) is None:
                    svc.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def endpoints(self) -> dict:
        """``{"gateway": ".../v1", "apps": {name: url}}`` from the published host ports: the
        gateway's OpenAI base URL (what clients paste) and each app's page."""
        gateway = next((s.endpoint() for s in self.services if s.kind == "gateway" and s.endpoint()), None)
        apps = {s.name: s.endpoint() + "/" for s in self.services if s.kind == "app" and s.endpoint()}
        return {"gateway": gateway + "/v1" if gateway else None, "apps": dict(sorted(apps.items()))}

    def host_ports(self) -> dict[str, int]:
        """service -> host port it publishes (what preflight checks, what the site owns)."""
        return {s.name: s.host_port for s in self.services if s.host_port is not None}


class Change(BaseModel):
    """One change the runtime makes (or, with --dry-run, would make)."""

    action: Literal["build-image", "pull-image", "create-network", "create-volume", "create", "replace", "start",
                    "remove", "keep", "write-config"]
    target: str
    detail: str = ""


class ServiceState(BaseModel):
    """A service as it is now (from one Docker list call plus the recorded release)."""

    name: str
    kind: str | None = None
    state: str = Field(description="running, exited, created, restarting, missing, ...")
    health: str | None = None
    container_id: str | None = None
    container_name: str | None = None
    image: str | None = None
    release: int | None = None
    spec_hash: str | None = None
    desired_hash: str | None = None
    up_to_date: bool = True
    endpoint: str | None = None
    status_text: str | None = None
    created_ts: float | None = None
    served_models: list[str] = Field(default_factory=list)
    degraded: str | None = Field(default=None, description="why the agent marked it degraded")
    probe: str | None = Field(default=None, description="its container's health probe (label appliance.probe): "
                              "http: health is the node agent's last outside probe (None until it has one)")


class Release(BaseModel):
    id: int
    created_ts: float
    status: str
    source: str
    version: str | None = None
    plan_hash: str | None = None
    stack_hash: str | None = None
    plan: Plan | None = None
    stack: StackSpec | None = None
    note: str | None = None


class ImageChange(BaseModel):
    service: str
    from_image: str
    to_image: str


class ReleaseChanges(BaseModel):
    """What a release changed against the one it replaced (:func:`appliance.runtime.releases.changes`)."""

    release: int
    against: int | None = Field(default=None, description="the release it replaced (None: the first)")
    from_version: str | None = None
    to_version: str | None = None
    added: list[str] = Field(default_factory=list, description="services new in this release")
    removed: list[str] = Field(default_factory=list)
    images: list[ImageChange] = Field(default_factory=list, description="services whose image changed")
    reconfigured: list[str] = Field(default_factory=list, description="same image, other container definition")
    models_added: list[str] = Field(default_factory=list)
    models_removed: list[str] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.images or self.reconfigured or self.models_added
                    or self.models_removed or self.from_version != self.to_version)


class PhaseTiming(BaseModel):
    name: str
    seconds: float
    waiting_s: float = 0.0
    detail: str = ""


class ApplyResult(BaseModel):
    """What applying a stack did (or would do)."""

    changes: list[Change] = Field(default_factory=list)
    created: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    removed_images: list[str] = Field(default_factory=list,
                                      description="images of the containers this apply removed (prune candidates)")
    waiting_s: float = 0.0


class InitResult(BaseModel):
    ok: bool = True
    dry_run: bool = False
    instance: str
    release: int | None = None
    previous_release: int | None = None
    plan: Plan
    stack: StackSpec
    changes: list[Change] = Field(default_factory=list)
    phases: list[PhaseTiming] = Field(default_factory=list)
    endpoints: dict[str, str] = Field(default_factory=dict)
    preflight: list[dict] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    next_steps: list[str] = Field(default_factory=list)
