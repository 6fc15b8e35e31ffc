"""The ``appliance status`` report: a stable JSON schema (``appliance-status/1``).

Monitoring scripts parse ``appliance status --json``, so fields are only ever *added* within
one format version; renaming or removing one bumps :data:`STATUS_FORMAT`. Every field is
documented in ``docs/status.md``. Units are in the names (``_mib``, ``_pct``, ``_s``, ``_w``,
``_c``); times are UTC ISO 8601 strings with a ``Z`` (``..._at``) or Unix seconds (``..._ts``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

STATUS_FORMAT = "appliance-status/1"

Overall = Literal["healthy", "degraded", "unknown", "not_installed"]
Severity = Literal["error", "warning", "info"]

# exit codes of `appliance status` (documented in docs/status.md)
EXIT_HEALTHY = 0
EXIT_DEGRADED = 1
EXIT_UNKNOWN = 2
EXIT_CODES: dict[str, int] = {"healthy": EXIT_HEALTHY, "degraded": EXIT_DEGRADED,
                              "unknown": EXIT_UNKNOWN, "not_installed": EXIT_UNKNOWN}


class Problem(BaseModel):
    """Something an admin should know about, with what to do about it."""

    severity: Severity = Field(description="error: the box is degraded; warning: works, needs attention; info")
    code: str = Field(description="stable machine-readable kind, e.g. service_stopped, disk_nearly_full")
    subject: str = Field(description="what it is about: a service, 'accelerator nvidia:0', 'disk /var/lib/docker'")
    message: str
    fix: str = Field(description="what to do, as a command where there is one")


class ReleaseInfo(BaseModel):
    id: int
    version: str | None = Field(default=None, description="appliance/bundle version the release was installed as")
    status: str = Field(description="active (the running release)")
    source: str = Field(description="what made it: init, upgrade, rollback to N, ...")
    since: str = Field(description="when it became active (UTC)")
    since_ts: float
    plan_hash: str | None = None
    stack_hash: str | None = None
    demo: bool = Field(default=False, description="the built-in CPU demo stack (templated answers)")
    previous_id: int | None = Field(default=None, description="the release `appliance rollback` returns to")


class DiskStatus(BaseModel):
    path: str = Field(description="what the disk holds: the data directory, Docker's root, /")
    purpose: str
    total_mib: int
    free_mib: int
    used_pct: float


class DockerStatus(BaseModel):
    reachable: bool | None = Field(description="null: not asked (nothing is installed, so nothing to ask about)")
    host: str = Field(description="DOCKER_HOST the engine was looked for at")
    version: str | None = None
    error: str | None = None


class AgentStatus(BaseModel):
    last_event: str | None = Field(default=None, description="the node agent's last recorded event")
    last_event_at: str | None = None
    running: bool | None = Field(default=None, description="a reconcile pass within 3 intervals (null: never ran)")
    last_pass_at: str | None = Field(default=None, description="when the agent last finished a reconcile pass")
    interval_s: float | None = None


class NodeStatus(BaseModel):
    hostname: str | None = None
    source: str = Field(default="live", description="'live' or 'snapshot:<dir>' (hardware facts only)")
    uptime_s: int | None = None
    cpu_count: int | None = None
    load_1m: float | None = None
    memory_total_mib: int | None = None
    memory_available_mib: int | None = None
    disks: list[DiskStatus] = Field(default_factory=list)
    docker: DockerStatus
    agent: AgentStatus = Field(default_factory=AgentStatus)


class AcceleratorStatus(BaseModel):
    vendor: str
    index: int
    model: str
    backend: str
    pci_bdf: str | None = None
    uuid: str | None = None
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    driver_version: str | None = None
    runtime: str | None = Field(default=None, description="compute runtime, e.g. 'CUDA 13.0', 'CANN 8.5.0'")
    health: str = Field(description="ok, warning, error or unknown (from the vendor driver/tool)")
    usage_source: str | None = Field(default=None, description="where usage came from: nvml, npu-smi info, ...")
    services: list[str] = Field(default_factory=list, description="services planned on this device")
    hints: list[str] = Field(default_factory=list)


class ServiceStatus(BaseModel):
    name: str
    kind: str | None = Field(default=None, description="inference, gateway, app, training")
    state: str = Field(description="running, exited, restarting, created, paused, dead, missing, unknown")
    health: str | None = Field(default=None, description="healthy, unhealthy, starting, or null (no check)")
    ok: bool = Field(description="running and healthy (or running without a health check)")
    uptime_s: int | None = Field(default=None, description="seconds since the container started (list call: "
                                 "Docker's rounding; exact when inspected)")
    restarts: int | None = Field(default=None, description="Docker restarts of the current container; null: unknown")
    repairs: int = Field(default=0, description="times the node agent restarted or recreated the service")
    devices: list[str] = Field(default_factory=list, description="'vendor:index' of the accelerators it uses")
    endpoint: str | None = Field(default=None, description="published URL on the host, if any")
    image: str | None = None
    models: list[str] = Field(default_factory=list, description="model names it serves")
    container: str | None = None
    container_id: str | None = None
    release: int | None = Field(default=None, description="release the container was created for")
    up_to_date: bool = Field(default=True, description="the container matches the active release's definition")
    status_text: str | None = Field(default=None, description="Docker's status text, e.g. 'Up 3 minutes (healthy)'")
    exit_code: int | None = None
    note: str | None = Field(default=None, description="held by request, or degraded by the agent, and why")


class ModelServed(BaseModel):
    name: str = Field(description="served model name (what API clients put in 'model')")
    model: str | None = Field(default=None, description="catalog model id")
    role: str | None = None
    service: str
    engine: str | None = None
    devices: list[str] = Field(default_factory=list)
    ready: bool = Field(description="its service is running and healthy")
    demo: bool = False


class LastUpgrade(BaseModel):
    kind: str = Field(description="upgrade, rollback, init")
    from_version: str | None = None
    to_version: str | None = None
    status: str = Field(description="running, done, rolled_back, failed")
    step: str
    release: int | None = None
    started_at: str
    updated_at: str
    error: str | None = None


class Endpoints(BaseModel):
    gateway: str | None = Field(default=None, description="OpenAI-compatible base URL (…/v1)")
    apps: dict[str, str] = Field(default_factory=dict, description="app name -> page URL")


class CollectInfo(BaseModel):
    """How the report was made (for the benchmark and for support)."""

    hardware: str = Field(description="'live' or 'snapshot:<dir>'")
    docker_api_calls: int = Field(description="HTTP requests made to the Docker engine")
    docker_inspects: int = Field(description="containers inspected (bounded; 0 on a healthy stack)")
    seconds: float


class StatusReport(BaseModel):
    format: str = STATUS_FORMAT
    status: Overall
    healthy: bool = Field(description="true only when status is 'healthy'")
    exit_code: int = Field(description="0 healthy, 1 degraded, 2 cannot tell (Docker down, nothing installed)")
    summary: str = Field(description="one line for people")
    instance: str
    appliance_version: str
    checked_at: str
    release: ReleaseInfo | None = None
    node: NodeStatus
    accelerators: list[AcceleratorStatus] = Field(default_factory=list)
    services: list[ServiceStatus] = Field(default_factory=list)
    models: list[ModelServed] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)
    last_upgrade: LastUpgrade | None = None
    endpoints: Endpoints = Field(default_factory=Endpoints)
    collect: CollectInfo
