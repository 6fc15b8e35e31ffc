"""Pydantic models of the node inventory (the output of ``appliance detect``).

Inventory (what the node *has*) is kept apart from usage (how busy it is right now):
``Accelerator.usage`` is filled only when usage is requested, so inventory stays
cheap and deterministic for planning.
"""

# No ``from __future__ import annotations`` here: pydantic would have to evaluate every string
# annotation when the classes are created, which costs start-up time on every `appliance detect`.
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

INVENTORY_FORMAT = "appliance-inventory/1"


class Runtime(BaseModel):
    """The vendor compute runtime/toolkit (CUDA, CANN, ROCm, DTK, ...)."""

    name: str
    version: str | None = None
    source: str | None = Field(default=None, description="where the version was read")


class Usage(BaseModel):
    """Point-in-time usage of one accelerator (never part of planning input)."""

    utilization_pct: float | None = None
    memory_used_mib: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    source: str | None = None


class Accelerator(BaseModel):
    model_config = ConfigDict(validate_assignment=False)

    vendor: str = Field(description="chip driver id: nvidia, amd, ascend, ...")
    model: str = Field(description="product name, e.g. 'NVIDIA H200'")
    index: int = Field(description="vendor-local index (the vendor tool's numbering when known)")
    backend: str = Field(description="backend family: cuda, rocm, cann, ...")
    pci_bdf: str | None = Field(default=None, description="PCI address 0000:00:06.0")
    pci_id: str | None = Field(default=None, description="vendor:device, e.g. 10de:2335")
    pci_subsystem_id: str | None = None
    pci_class: str | None = None
    memory_mib: int | None = None
    arch: str | None = Field(default=None, description="chip architecture, e.g. hopper, gfx942, ascend910b")
    variant: str | None = Field(default=None, description="image variant key, e.g. 910b, 310p")
    driver_version: str | None = None
    runtime: Runtime | None = None
    compute_capability: str | None = None
    uuid: str | None = None
    numa_node: int | None = None
    health: Literal["ok", "warning", "error", "unknown"] = "unknown"
    dev_nodes: list[str] = Field(default_factory=list, description="/dev nodes for this device")
    physical_id: int | None = Field(default=None, description="physical id (Ascend /dev/davinciN numbering)")
    sources: dict[str, str] = Field(default_factory=dict, description="field -> where its value came from")
    hints: list[str] = Field(default_factory=list, description="what the installer should do")
    usage: Usage | None = None


class DiskInfo(BaseModel):
    mountpoint: str
    device: str | None = None
    fstype: str | None = None
    total_mib: int | None = None
    free_mib: int | None = None


class ContainerEngine(BaseModel):
    name: str = "docker"
    present: bool = False
    version: str | None = None
    source: str | None = None


class Node(BaseModel):
    hostname: str | None = None
    os: str | None = None
    os_id: str | None = None
    os_version_id: str | None = None
    kernel: str | None = None
    arch: str | None = Field(default=None, description="CPU architecture: x86_64, aarch64")
    cpu_model: str | None = None
    cpu_vendor: str | None = None
    cpu_count: int | None = None
    cpu_flags: list[str] = Field(default_factory=list, description="selected CPU features (avx2, avx512f, ...)")
    memory_mib: int | None = None
    disks: list[DiskInfo] = Field(default_factory=list)
    container_engine: ContainerEngine = Field(default_factory=ContainerEngine)


class ProbeStep(BaseModel):
    name: str
    result: Literal["ok", "none", "error", "skipped"]
    detail: str | None = None
    seconds: float = 0.0


class Probe(BaseModel):
    """What one chip driver tried and how it went."""

    driver: str
    steps: list[ProbeStep] = Field(default_factory=list)
    result: Literal["ok", "partial", "error", "none"] = "none"
    error: str | None = None
    seconds: float = 0.0


class Inventory(BaseModel):
    format: str = INVENTORY_FORMAT
    source: str = Field(default="live", description="'live' or 'snapshot:<dir>'")
    node: Node
    accelerators: list[Accelerator] = Field(default_factory=list)
    probes: list[Probe] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def backends(self) -> list[str]:
        seen: list[str] = []
        for acc in self.accelerators:
            if acc.backend not in seen:
                seen.append(acc.backend)
        return seen
