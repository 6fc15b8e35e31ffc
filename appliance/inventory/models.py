"""Models of the node inventory (the output of ``appliance detect``).

Inventory (what the node *has*) is kept apart from usage (how busy it is right now):
``Accelerator.usage`` is filled only when usage is requested, so inventory stays
cheap and deterministic for planning.
"""

# annotation when the classes are created, which costs start-up time on every `appliance detect`.
import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

INVENTORY_FORMAT = "appliance-inventory/1"


class Record:
    """The small part of pydantic's model API that inventory users need, over a dataclass.

    WHY not pydantic here: ``appliance detect`` is measured against a peer tool, and building
    pydantic models costs about half of its whole-process time (``import pydantic`` plus
    schema generation for nine classes) for objects that detection fills itself from parsed
    files and tool output -- there is no untrusted input to validate. Consumers keep the
    same calls (``model_dump``, ``model_dump_json``, ``model_copy``); JSON field order is the
    declaration order, as with pydantic. Drivers must store values of the declared types
    (``tests/detect/test_models.py`` checks every snapshot's inventory against them).
    """

    def model_dump(self, mode: str = "python", **_ignored) -> dict:
        return asdict(self)

    def model_dump_json(self, indent: int | None = None, **_ignored) -> str:
        return json.dumps(self.model_dump(), indent=indent, ensure_ascii=False)

    def model_copy(self, *, update: dict | None = None, deep: bool = False):
        new = copy.deepcopy(self) if deep else copy.copy(self)
        for key, value in (update or {}).items():
            setattr(new, key, value)
        return new


@dataclass(kw_only=True, eq=True)
class Runtime(Record):
    """The vendor compute runtime/toolkit (CUDA, CANN, ROCm, DTK, ...)."""

    name: str
    version: str | None = None
    source: str | None = None  # "where the version was read"


@dataclass(kw_only=True, eq=True)
class Usage(Record):
    """Point-in-time usage of one accelerator (never part of planning input)."""

    utilization_pct: float | None = None
    memory_used_mib: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    source: str | None = None


@dataclass(kw_only=True, eq=True)
class Accelerator(Record):
    vendor: str   # "chip driver id: nvidia, amd, ascend, ..."
    model: str   # "product name, e.g. 'NVIDIA H200'"
    index: int   # "vendor-local index (the vendor tool's numbering when known)"
    backend: str   # "backend family: cuda, rocm, cann, ..."
    pci_bdf: str | None = None  # "PCI address 0000:00:06.0"
    pci_id: str | None = None  # "vendor:device, e.g. 10de:2335"
    pci_subsystem_id: str | None = None
    pci_class: str | None = None
    memory_mib: int | None = None
    arch: str | None = None  # "chip architecture, e.g. hopper, gfx942, ascend910b"
    variant: str | None = None  # "image variant key, e.g. 910b, 310p"
    driver_version: str | None = None
    runtime: Runtime | None = None
    compute_capability: str | None = None
    uuid: str | None = None
    numa_node: int | None = None
    health: Literal["ok", "warning", "error", "unknown"] = "unknown"
    dev_nodes: list[str] = field(default_factory=list)  # "/dev nodes for this device"
    physical_id: int | None = None  # "physical id (Ascend /dev/davinciN numbering)"
    sources: dict[str, str] = field(default_factory=dict)  # "field -> where its value came from"
    hints: list[str] = field(default_factory=list)  # "what the installer should do"
    usage: Usage | None = None


@dataclass(kw_only=True, eq=True)
class DiskInfo(Record):
    mountpoint: str
    device: str | None = None
    fstype: str | None = None
    total_mib: int | None = None
    free_mib: int | None = None


@dataclass(kw_only=True, eq=True)
class ContainerEngine(Record):
    name: str = "docker"
    present: bool = False
    version: str | None = None
    source: str | None = None


@dataclass(kw_only=True, eq=True)
class Node(Record):
    hostname: str | None = None
    os: str | None = None
    os_id: str | None = None
    os_version_id: str | None = None
    kernel: str | None = None
    arch: str | None = None  # "CPU architecture: x86_64, aarch64"
    cpu_model: str | None = None
    cpu_vendor: str | None = None
    cpu_count: int | None = None
    cpu_flags: list[str] = field(default_factory=list)  # "selected CPU features (avx2, avx512f, ...)"
    memory_mib: int | None = None
    disks: list[DiskInfo] = field(default_factory=list)
    container_engine: ContainerEngine = field(default_factory=ContainerEngine)


@dataclass(kw_only=True, eq=True)
class ProbeStep(Record):
    name: str
    result: Literal["ok", "none", "error", "skipped"]
    detail: str | None = None
    seconds: float = 0.0


@dataclass(kw_only=True, eq=True)
class Probe(Record):
    """What one chip driver tried and how it went."""

    driver: str
    steps: list[ProbeStep] = field(default_factory=list)
    result: Literal["ok", "partial", "error", "none"] = "none"
    error: str | None = None
    seconds: float = 0.0


@dataclass(kw_only=True, eq=True)
class Inventory(Record):
    format: str = INVENTORY_FORMAT
    source: str = "live"  # "'live' or 'snapshot:<dir>'"
    node: Node
    accelerators: list[Accelerator] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def find(self, ref) -> "Accelerator | None":
        """The accelerator a device reference means, or None when this node has no such device.

        ``ref`` is anything with ``vendor`` and optional ``uuid``, ``pci_bdf``, ``physical_id``,
        ``index`` (a plan's DeviceRef). The most specific identity the reference carries decides,
        with no fallback to a weaker one: a planned GPU whose UUID is gone is gone, even if
        another card now sits at the same PCI address or index. Order: UUID, PCI address,
        physical id, index. The runtime (device exposure) and the agent and status (missing
        devices) all match through this one rule.
        """
        pool = [a for a in self.accelerators if a.vendor == ref.vendor]
        for key in ("uuid", "pci_bdf", "physical_id", "index"):
            want = getattr(ref, key, None)
            if want is not None:
                return next((a for a in pool if getattr(a, key) == want), None)
        return None

    def backends(self) -> list[str]:
        seen: list[str] = []
        for acc in self.accelerators:
            if acc.backend not in seen:
                seen.append(acc.backend)
        return seen


def _known(cls, data: dict) -> dict:
    """Only the fields ``cls`` declares: an inventory written by a newer version still reads."""
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def inventory_from_dict(data: dict) -> Inventory:
    """An :class:`Inventory` from its JSON (``appliance detect --json``, another node's report).

    Why by hand: these are dataclasses, not pydantic models (see :class:`Record`); the nesting
    is small and fixed. Unknown fields are ignored, missing ones take their defaults.
    """
    if not isinstance(data, dict) or not isinstance(data.get("node"), dict):
        raise ValueError("not an inventory: no 'node' object")
    node = dict(_known(Node, data["node"]))
    node["disks"] = [DiskInfo(**_known(DiskInfo, d)) for d in node.get("disks") or []]
    node["container_engine"] = ContainerEngine(**_known(ContainerEngine, node.get("container_engine") or {}))
    accs = []
    for a in data.get("accelerators") or []:
        a = dict(_known(Accelerator, a))
        a["runtime"] = Runtime(**_known(Runtime, a["runtime"])) if a.get("runtime") else None
        a["usage"] = Usage(**_known(Usage, a["usage"])) if a.get("usage") else None
        accs.append(Accelerator(**a))
    probes = []
    for p in data.get("probes") or []:
        p = dict(_known(Probe, p))
        p["steps"] = [ProbeStep(**_known(ProbeStep, s)) for s in p.get("steps") or []]
        probes.append(Probe(**p))
    top = _known(Inventory, data)
    top.update(node=Node(**node), accelerators=accs, probes=probes)
    return Inventory(**top)
