"""The Plan: what the runtime will run, and why.

A plan is a pure function of (inventory, catalog, request): same inputs, byte-identical
JSON. ``plan_hash`` fingerprints each service so the runtime replaces only services whose
definition changed. The runtime turns a plan into containers (adding the gateway, apps and
training service); it never re-decides engine, image or devices.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, Field

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


class HealthCheck(BaseModel):
    path: str = "/health"
    port: int
    interval_s: float = 10.0
    timeout_s: float = 5.0
    start_period_s: float = 600.0
    retries: int = 3


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
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    port: int
    health: HealthCheck
    model_path: str | None = Field(default=None, description="host path of the weights, mounted read-only")
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


class Plan(BaseModel):
    format: str = PLAN_FORMAT
    profile: str = "default"
    catalog_version: str | None = None
    node: dict = Field(default_factory=dict, description="summary of the inventory the plan is for")
    services: list[PlannedService] = Field(default_factory=list)
    rejected: list[Rejected] = Field(default_factory=list)
    explain: list[str] = Field(default_factory=list)
    plan_hash: str | None = None

    def compute_hash(self) -> str:
        data = self.model_dump(mode="json", exclude={"plan_hash", "explain", "rejected"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
