"""The Plan: what the runtime will run, and why.

A plan is a pure function of (inventory, catalog, request): same inputs, byte-identical
JSON. ``plan_hash`` fingerprints each service so the runtime replaces only services whose
definition changed. The runtime turns a plan into containers (adding the gateway, apps and
training service); it never re-decides engine, image or devices.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from appliance.catalog.schema import ImageRecipe

PLAN_FORMAT = "appliance-plan/1"


class DeviceRef(BaseModel):
    """One accelerator a service uses (enough for the chip driver to expose it)."""

    vendor: str
    index: int
    pci_bdf: str | None = None
    uuid: str | None = None
    physical_id: int | None = None
    model: str | None = None
    memory_mib: int | None = None


class MemoryBudget(BaseModel):
    """Per-device memory need, MiB, with its parts (weights + KV cache + overhead)."""

    weights_mib: int
    kv_cache_mib: int
    overhead_mib: int
    total_mib: int
    usable_mib: int | None = Field(default=None, description="usable memory per device (after the utilization cap)")
    context_tokens: int | None = None
    concurrency: int | None = None


Probe = Literal["python3", "curl", "http"]


class HealthCheck(BaseModel):
    path: str = "/health"
    port: int
    interval_s: float = 10.0
    timeout_s: float = 5.0
    start_period_s: float = 600.0
    retries: int = 3
    probe: Probe | None = Field(
        default=None, description="how the health path is checked: python3 / curl run inside the container, http "
        "from outside it (the runtime and the agent); None (plans made before the field): as probe_for() says")

    @staticmethod
    def probe_for(explicit: str | None, build: str | None) -> str:
        """The probe of an image: the catalog's ``probe`` when set, else ``python3`` for a local
        build (our images ship it), else ``http`` (a vendor image may lack python3 and curl)."""
        return explicit or ("python3" if build else "http")


class PlannedConversion(BaseModel):
    """The one-off conversion of a service's weights by its engine's tool (appliance.deploy.convert)."""

    tool: str
    entrypoint: list[str]
    command: list[str]
    source_path: str = Field(description="the model store's weights (read-only)")
    output_path: str = Field(description="where the converted weights go; the service serves them")
    timeout_s: float


class PlannedService(BaseModel):
    name: str = Field(description="service name, e.g. llm-qwen2-5-7b-instruct")
    role: str = Field(description="chat | embedding | rerank | completion")
    model: str
    served_model_name: str
    engine: str
    backend: str
    image: str
    precision: str
    tensor_parallel: int = 1
    devices: list[DeviceRef] = Field(default_factory=list)
    memory_mib_per_device: int | None = None
    memory: MemoryBudget | None = None
    entrypoint: list[str] = Field(default_factory=list,
                                  description="container entrypoint override (empty: image default)")
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] | None = Field(default=None, description="settings the start script writes into the "
                                          "engine's config file (dotted keys; MindIE)")
    port: int
    health: HealthCheck
    model_path: str | None = Field(default=None, description="host path of the weights, mounted read-only")
    model_container_path: str | None = Field(default=None, description="where the weights appear in the container")
    model_source: str | None = Field(default=None, description="public weights (e.g. Hugging Face repo)")
    model_file: str | None = Field(default=None, description="file inside the source (GGUF)")
    cpuset: str | None = Field(default=None, description="host cores a CPU-served model runs on (e.g. '0-1'); "
                               "threads = their number")
    evaluation: bool = Field(default=False, description="a built-in evaluation model (small; for trying the box)")
    weights_files: list[str] = Field(default_factory=list, description="the files expected at model_path "
                                     "(appliance models import places them there)")
    image_version: str | None = None
    exclusive_devices: bool = Field(default=False, description="no other service may share its devices")
    build: str | None = Field(default=None,
                              description="local build context: the runtime builds the image, never pulls it")
    recipe: ImageRecipe | None = Field(default=None, description="the image is layered on a vendor base from "
                                       "wheels (appliance.runtime.images: recipe builds)")
    conversion: PlannedConversion | None = Field(default=None, description="its engine serves converted weights: "
                                                 "made from model_path before the service starts")
    license_required: bool = False
    demo: bool = False

    def spec_hash(self) -> str:
        data = self.model_dump(mode="json")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class Rejected(BaseModel):
    model: str
    engine: str | None = None
    precision: str | None = None
    tensor_parallel: int | None = None
    reason: str
    code: str = Field(default="other", description="machine-readable reason: memory, license, runtime, driver, "
                      "variant, compute_capability, heads, precision, role, architecture, capacity, ranked_lower, ...")
    image: str | None = None


class PlannedApp(BaseModel):
    """A sample app whose model roles the plan satisfies (built locally by the runtime)."""

    name: str
    image: str
    build: str | None = None
    port: int
    health_path: str = "/health"
    bindings: dict[str, str] = Field(default_factory=dict, description="role -> planned service name")
    models: dict[str, str] = Field(default_factory=dict, description="role -> served model name")
    env: dict[str, str] = Field(default_factory=dict)


class PlannedImage(BaseModel):
    image: str
    build: str | None = None
    port: int


class Plan(BaseModel):
    format: str = PLAN_FORMAT
    profile: str = "default"
    catalog_version: str | None = None
    node: dict = Field(default_factory=dict, description="summary of the inventory the plan is for")
    services: list[PlannedService] = Field(default_factory=list)
    apps: list[PlannedApp] = Field(default_factory=list)
    gateway: PlannedImage | None = None
    rejected: list[Rejected] = Field(default_factory=list)
    explain: list[str] = Field(default_factory=list)
    plan_hash: str | None = None

    def compute_hash(self) -> str:
        data = self.model_dump(mode="json", exclude={"plan_hash", "explain", "rejected"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
