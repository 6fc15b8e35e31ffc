"""The ``appliance status`` report: a stable JSON schema (``appliance-status/1``).

Monitoring scripts parse ``appliance status --json``, so fields are only ever *added* within
one format version; renaming or removing one bumps :data:`STATUS_FORMAT`. Every field is
documented in ``docs/status.md``. Units are in the names (``_mib``, ``_pct``, ``_s``, ``_w``,
``_c``); times are UTC ISO 8601 strings with a ``Z`` (``..._at``) or Unix seconds (``..._ts``).

WHY dataclasses and not pydantic (as for the inventory, :class:`appliance.inventory.models.Record`):
``appliance status`` is run in loops and by monitoring scripts, and building pydantic schemas
for these classes cost about a third of its whole-process time -- for a report the code fills
itself from values it has just read. :class:`Report` keeps the part of pydantic's API the
callers use (``model_dump``, ``model_dump_json``, ``model_copy``), the JSON field order is the
declaration order as before, and ``float`` fields hold floats (an ``int`` given to one is
converted, as pydantic did, so ``37`` is written ``37.0`` as before). Nothing is validated:
the values come from this package, not from users.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from appliance.inventory.models import Record

STATUS_FORMAT = "appliance-status/1"

OVERALL = ("healthy", "degraded", "unknown", "not_installed")
SEVERITIES = ("error", "warning", "info")

# exit codes of `appliance status` (documented in docs/status.md)
EXIT_HEALTHY = 0
EXIT_DEGRADED = 1
EXIT_UNKNOWN = 2
EXIT_CODES: dict[str, int] = {"healthy": EXIT_HEALTHY, "degraded": EXIT_DEGRADED,
                              "unknown": EXIT_UNKNOWN, "not_installed": EXIT_UNKNOWN}

_FLOAT_FIELDS: dict[type, tuple[str, ...]] = {}


class Report(Record):
    """A part of the status report (see the module docstring)."""

    def __post_init__(self) -> None:
        cls = type(self)
        names = _FLOAT_FIELDS.get(cls)
        if names is None:
            names = _FLOAT_FIELDS[cls] = tuple(f.name for f in fields(cls)
                                               if str(f.type).split(" | ")[0] == "float")
        for name in names:
            value = getattr(self, name)
            if type(value) is int:
                setattr(self, name, float(value))

    def model_dump_json(self, indent: int | None = None, **_ignored) -> str:
        """Compact like pydantic's (no spaces) unless ``indent``: one line per ``--watch`` report."""
        return json.dumps(self.model_dump(), indent=indent, ensure_ascii=False,
                          separators=None if indent is not None else (",", ":"))


@dataclass(kw_only=True, eq=True)
class Problem(Report):
    """Something an admin should know about, with what to do about it."""

    severity: str   # one of SEVERITIES -- error: the box is degraded; warning: works, needs attention; info
    code: str       # stable machine-readable kind, e.g. service_stopped, disk_nearly_full
    subject: str    # what it is about: a service, 'accelerator nvidia:0', 'disk /var/lib/docker'
    message: str
    fix: str        # what to do, as a command where there is one


@dataclass(kw_only=True, eq=True)
class ReleaseInfo(Report):
    id: int
    version: str | None = None      # appliance/bundle version the release was installed as
    status: str                     # active (the running release)
    source: str                     # what made it: init, upgrade, rollback to N, ...
    since: str                      # when it became active (UTC)
    since_ts: float
    plan_hash: str | None = None
    stack_hash: str | None = None
    demo: bool = False              # the templated test engine (canned answers; test stacks only)
    previous_id: int | None = None  # the release `appliance rollback` returns to
    evaluation: bool = False        # it serves the built-in evaluation models (small; init --demo)


@dataclass(kw_only=True, eq=True)
class DiskStatus(Report):
    path: str       # what the disk holds: the data directory, Docker's root, /
    purpose: str
    total_mib: int
    free_mib: int
    used_pct: float


@dataclass(kw_only=True, eq=True)
class DockerStatus(Report):
    reachable: bool | None  # null: not asked (nothing is installed, so nothing to ask about)
    host: str               # DOCKER_HOST the engine was looked for at
    version: str | None = None
    error: str | None = None


@dataclass(kw_only=True, eq=True)
class AgentStatus(Report):
    last_event: str | None = None       # the node agent's last recorded event
    last_event_at: str | None = None
    running: bool | None = None         # a reconcile pass within 3 intervals (null: never ran)
    last_pass_at: str | None = None     # when the agent last finished a reconcile pass
    interval_s: float | None = None


@dataclass(kw_only=True, eq=True)
class NodeStatus(Report):
    hostname: str | None = None
    source: str = "live"                # 'live' or 'snapshot:<dir>' (hardware facts only)
    uptime_s: int | None = None
    cpu_count: int | None = None
    load_1m: float | None = None
    memory_total_mib: int | None = None
    memory_available_mib: int | None = None
    disks: list[DiskStatus] = field(default_factory=list)
    docker: DockerStatus
    agent: AgentStatus = field(default_factory=AgentStatus)


@dataclass(kw_only=True, eq=True)
class AcceleratorStatus(Report):
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
    runtime: str | None = None          # compute runtime, e.g. 'CUDA 13.0', 'CANN 8.5.0'
    health: str                         # ok, warning, error or unknown (from the vendor driver/tool)
    usage_source: str | None = None     # where usage came from: nvml, npu-smi info, ...
    services: list[str] = field(default_factory=list)  # services planned on this device
    hints: list[str] = field(default_factory=list)


@dataclass(kw_only=True, eq=True)
class ServiceStatus(Report):
    name: str
    kind: str | None = None             # inference, gateway, app, training
    state: str                          # running, exited, restarting, created, paused, dead, missing, unknown
    health: str | None = None           # healthy, unhealthy, starting, or null (no check)
    ok: bool                            # running and healthy (or running without a health check)
    uptime_s: int | None = None         # seconds since the container started (list call: Docker's rounding;
    #                                     exact when inspected)
    restarts: int | None = None         # Docker restarts of the current container; null: unknown
    repairs: int = 0                    # times the node agent restarted or recreated the service
    devices: list[str] = field(default_factory=list)  # 'vendor:index' of the accelerators it uses
    endpoint: str | None = None         # published URL on the host, if any
    image: str | None = None
    models: list[str] = field(default_factory=list)   # model names it serves
    container: str | None = None
    container_id: str | None = None
    release: int | None = None          # release the container was created for
    up_to_date: bool = True             # the container matches the active release's definition
    status_text: str | None = None      # Docker's status text, e.g. 'Up 3 minutes (healthy)'
    exit_code: int | None = None
    note: str | None = None             # held by request, or degraded by the agent, and why


@dataclass(kw_only=True, eq=True)
class ModelServed(Report):
    name: str                           # served model name (what API clients put in 'model')
    model: str | None = None            # catalog model id
    role: str | None = None
    service: str
    engine: str | None = None
    devices: list[str] = field(default_factory=list)
    ready: bool                         # its service is running and healthy
    demo: bool = False
    precision: str | None = None
    weights: str | None = None          # in_store | present (not placed by the store) | missing | not_needed
    weights_verified_at: str | None = None  # when the model store last hashed its files (UTC)
    evaluation: bool = False            # a built-in evaluation model (small; for trying the box)


@dataclass(kw_only=True, eq=True)
class LastUpgrade(Report):
    kind: str                           # upgrade, rollback, init
    from_version: str | None = None
    to_version: str | None = None
    status: str                         # running, done, rolled_back, failed
    step: str
    release: int | None = None
    started_at: str
    updated_at: str
    error: str | None = None


@dataclass(kw_only=True, eq=True)
class Endpoints(Report):
    gateway: str | None = None          # OpenAI-compatible base URL (…/v1)
    apps: dict[str, str] = field(default_factory=dict)  # app name -> page URL


@dataclass(kw_only=True, eq=True)
class CollectInfo(Report):
    """How the report was made (for the benchmark and for support)."""

    hardware: str                       # 'live' or 'snapshot:<dir>'
    docker_api_calls: int               # HTTP requests made to the Docker engine
    docker_inspects: int                # containers inspected (bounded; 0 on a healthy stack)
    seconds: float


@dataclass(kw_only=True, eq=True)
class StatusReport(Report):
    format: str = STATUS_FORMAT
    status: str                         # one of OVERALL
    healthy: bool                       # true only when status is 'healthy'
    exit_code: int                      # 0 healthy, 1 degraded, 2 cannot tell (Docker down, nothing installed)
    summary: str                        # one line for people
    instance: str
    appliance_version: str
    checked_at: str
    release: ReleaseInfo | None = None
    node: NodeStatus
    accelerators: list[AcceleratorStatus] = field(default_factory=list)
    services: list[ServiceStatus] = field(default_factory=list)
    models: list[ModelServed] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    last_upgrade: LastUpgrade | None = None
    endpoints: Endpoints = field(default_factory=Endpoints)
    collect: CollectInfo
