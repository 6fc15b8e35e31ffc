"""The chip driver contract.

A chip driver knows one accelerator vendor: how to recognise its PCI functions
(layer a: sysfs, before any driver exists), how to read its driver and runtime state
(layer b: kernel modules, /proc, /sys/module, /dev nodes, version files), how to enrich
devices from the vendor library or CLI (layer c, always under a timeout), and how to hand
devices to a container. Drivers touch the machine only through a
:class:`~appliance.inventory.hostview.HostView`, so they behave the same on a snapshot.

Adding a vendor: see ``docs/adding-a-chip-driver.md``.

Contract notes (stable; additions are optional and keep old names working):

- Use vendor *libraries* (NVML, DCMI, ...) only when ``host.native`` is true; otherwise
  (snapshot replay, ``appliance snapshot`` capture, a live host with another root) use the
  vendor CLI through ``host.run`` so that a capture records exactly what a replay reads.
- ``host.run(argv, timeout_s=self.tool_timeout_s)`` for every tool call; a command absent
  from a snapshot behaves as a tool that is not installed (``result.not_found``).
- :meth:`ChipDriver.run_tool` runs a tool and appends its ProbeStep (``none`` when the tool
  is not installed, which is not an error); :meth:`ChipDriver.run_listing` also parses the
  output and marks the step ``error`` when the parser does not recognise it. Shared
  parsing lives in :mod:`chip_drivers.smi_table` (tool output),
  :mod:`chip_drivers.tool_devices` (matching a listing to PCI devices) and
  :mod:`chip_drivers.vendor_files` (version files, ``/dev`` and DRM nodes).
- ``DriverState.devices`` (optional) carries per-device facts found in layer b, keyed by
  normalized PCI address (model, uuid, dev_nodes, minor); :meth:`apply_driver_state` copies
  them onto the matching accelerators with ``sources`` set.
- ``snapshot_commands``/``snapshot_paths``: extra argv lists and files ``appliance snapshot``
  records for this vendor *besides* what detection itself runs and reads (a capture runs
  detection through a recording host, so every file read and command run is kept anyway).
- ``ContainerAccess.device_requests`` holds keyword-argument dicts for
  ``docker.types.DeviceRequest`` (``driver``, ``count``, ``device_ids``, ``capabilities``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep, Runtime
from appliance.inventory.pci import PciDevice

if TYPE_CHECKING:  # pragma: no cover
    from appliance.subproc import CommandResult

# PCI class prefixes (base class + subclass) that accelerators use. Anything else from the
# same vendor (VGA for a BMC, NICs, RAID, host bridges, CPU chipset functions) is ignored.
CLASS_VGA = "0300"
CLASS_3D = "0302"
CLASS_DISPLAY_OTHER = "0380"
CLASS_COPROCESSOR = "0b40"
CLASS_PROCESSING_ACCEL = "1200"


class ProbeFailure(Exception):
    """A probe step failed; the message says what failed (shown in ``probes[].error``)."""


@dataclass(frozen=True)
class Product:
    """A row of the built-in product table: what a PCI id is, before any vendor tool runs."""

    name: str
    memory_mib: int | None = None
    arch: str | None = None
    variant: str | None = None
    compute_capability: str | None = None


@dataclass
class DriverState:
    """Layer b: what the host's driver/runtime installation looks like for this vendor."""

    driver_loaded: bool = False
    driver_version: str | None = None
    driver_version_source: str | None = None
    runtime: Runtime | None = None
    modules: list[str] = field(default_factory=list)
    dev_nodes: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    steps: list[ProbeStep] = field(default_factory=list)
    # optional: normalized PCI address -> {"model", "uuid", "dev_nodes", "minor", "source"}
    devices: dict[str, dict] = field(default_factory=dict)


@dataclass
class ContainerAccess:
    """How to give a container a set of devices, in Docker SDK terms.

    ``device_requests`` are keyword-argument dicts for ``docker.types.DeviceRequest``
    (NVIDIA: ``{"driver": "nvidia", "device_ids": [uuid, ...], "capabilities": [["gpu"]]}``);
    ``devices`` are ``host:container:perms`` strings; ``volumes`` map host path ->
    container path (read-only); never privileged.
    """

    devices: list[str] = field(default_factory=list)
    device_requests: list[dict] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    group_add: list[str] = field(default_factory=list)
    runtime: str | None = None
    cap_add: list[str] = field(default_factory=list)
    ipc_mode: str | None = None


class ChipDriver:
    """Base class; subclasses set the class attributes and override the layer methods."""

    vendor: ClassVar[str]                      # id used in all output: nvidia, amd, ascend, ...
    display_name: ClassVar[str]
    backend: ClassVar[str]                     # cuda, rocm, cann, xpu, dtk, neuware, maca, musa, corex, gaudi
    pci_vendor_ids: ClassVar[tuple[str, ...]] = ()
    accelerator_classes: ClassVar[tuple[str, ...]] = (CLASS_3D, CLASS_PROCESSING_ACCEL, CLASS_COPROCESSOR)
    products: ClassVar[dict[str, Product]] = {}   # "device" or "device:subvendor:subdevice" -> Product
    kernel_modules: ClassVar[tuple[str, ...]] = ()
    tools: ClassVar[tuple[str, ...]] = ()       # management CLIs, in order of preference
    # argv lists ``appliance snapshot`` records for this vendor (beside the ones enrich() runs)
    snapshot_commands: ClassVar[tuple[tuple[str, ...], ...]] = ()
    # files/directories ``appliance snapshot`` copies for this vendor (version files, /proc/driver/...)
    snapshot_paths: ClassVar[tuple[str, ...]] = ()
    provision_role: ClassVar[str | None] = None
    tool_timeout_s: ClassVar[float] = 10.0
    # DRM drivers (amdgpu, Hygon, MetaX, Moore Threads): each device's /dev/dri/cardN and
    # renderDN are read from its PCI function's sysfs drm/ directory in layer a, so a
    # container gets exactly its own nodes (never the BMC's card0).
    drm_devices: ClassVar[bool] = False
    # what the last driver_state() found (set by ChipDriver.driver_state), so that enrich()
    # can give a device the tool lists but PCI does not show the same layer b facts
    state: DriverState | None = None

    # ---- layer a -------------------------------------------------------------------------
    def claims(self, dev: PciDevice) -> bool:
        """True when this PCI function is one of our accelerators (not a NIC, BMC VGA, chipset)."""
        if dev.vendor not in self.pci_vendor_ids:
            return False
        if self.lookup_product(dev) is not None:
            return dev.class_prefix in self.accelerator_classes or dev.class_prefix == CLASS_VGA and self.allow_vga(dev)
        return dev.class_prefix in self.accelerator_classes

    def allow_vga(self, dev: PciDevice) -> bool:
        """Whether a known product may show up with the VGA class (some GPUs do). Default: no."""
        return False

    def lookup_product(self, dev: PciDevice) -> Product | None:
        if dev.subsystem_vendor and dev.subsystem_device:
            hit = self.products.get(f"{dev.device}:{dev.subsystem_vendor}:{dev.subsystem_device}")
            if hit:
                return hit
        return self.products.get(dev.device)

    def from_pci(self, dev: PciDevice, index: int, host: HostView) -> Accelerator:
        """An accelerator known from PCI alone (name and memory from the product table)."""
        from appliance.inventory.pci import pci_ids_name

        product = self.lookup_product(dev)
        sources: dict[str, str] = {"pci_bdf": "pci-sysfs", "pci_id": "pci-sysfs"}
        if product:
            name = product.name
            sources["model"] = "product-table"
        else:
            name = pci_ids_name(host, dev.vendor, dev.device) or f"{self.display_name} device {dev.pci_id}"
            sources["model"] = "pci.ids" if not name.endswith(dev.pci_id) else "pci-sysfs"
        acc = Accelerator(
            vendor=self.vendor, model=name, index=index, backend=self.backend,
            pci_bdf=dev.bdf, pci_id=dev.pci_id,
            pci_subsystem_id=(f"{dev.subsystem_vendor}:{dev.subsystem_device}"
                              if dev.subsystem_vendor and dev.subsystem_device else None),
            pci_class=dev.pci_class, numa_node=dev.numa_node, sources=sources,
        )
        sources = acc.sources  # pydantic copied the dict: record further sources on the model's own
        if product:
            if product.memory_mib is not None:
                acc.memory_mib = product.memory_mib
                sources["memory_mib"] = "product-table"
            acc.arch = product.arch
            acc.variant = product.variant
            if product.compute_capability:
                acc.compute_capability = product.compute_capability
                sources["compute_capability"] = "product-table"
        if self.drm_devices:
            from chip_drivers.vendor_files import drm_nodes

            nodes = drm_nodes(host, dev.bdf)
            if nodes:
                acc.dev_nodes = nodes
                sources["dev_nodes"] = "pci-sysfs drm"
        return acc

    # ---- layer b -------------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        """Kernel modules, /proc, /sys/module, /dev nodes, version files. Override per vendor."""
        state = self.state = DriverState()
        loaded = loaded_modules(host)
        state.modules = [m for m in self.kernel_modules if m in loaded]
        state.driver_loaded = bool(state.modules)
        for mod in state.modules:
            version = host.read_value(f"/sys/module/{mod}/version")
            if version:
                state.driver_version = version
                state.driver_version_source = f"/sys/module/{mod}/version"
                break
        return state

    def apply_driver_state(self, accs: list[Accelerator], state: DriverState) -> None:
        for acc in accs:
            per_device = state.devices.get(acc.pci_bdf or "") if state.devices else None
            if per_device:
                source = per_device.get("source") or "driver-state"
                if per_device.get("model"):
                    acc.model = per_device["model"]
                    acc.sources["model"] = source
                if per_device.get("uuid"):
                    acc.uuid = per_device["uuid"]
                    acc.sources["uuid"] = source
                for node in per_device.get("dev_nodes") or []:
                    if node not in acc.dev_nodes:
                        acc.dev_nodes.append(node)
            if state.driver_version:
                acc.driver_version = state.driver_version
                acc.sources["driver_version"] = state.driver_version_source or "driver-state"
            if state.runtime:
                acc.runtime = state.runtime
            if not state.driver_loaded and not state.driver_version:
                acc.health = "warning"
                for hint in state.hints or [self.missing_driver_hint()]:
                    if hint not in acc.hints:
                        acc.hints.append(hint)

    def missing_driver_hint(self) -> str:
        return (f"no {self.display_name} driver is loaded: run `appliance provision` with the "
                f"driver package in the offline package directory")

    # ---- layer c -------------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        """Refine devices from the vendor library/CLI. Append a ProbeStep per attempt.

        Return the (possibly extended) device list. Raise :class:`ProbeFailure` on a
        failure; devices from layers a and b are kept by the caller.
        """
        return accs

    def run_tool(self, host: HostView, argv: list[str], steps: list[ProbeStep], *,
                 required: bool = True, timeout_s: float | None = None) -> CommandResult | None:
        """Run a vendor tool under the driver's timeout and append a ProbeStep named by its argv.

        Returns None when the tool is not installed (step ``none``: not an error, the node
        may simply lack it). A timeout or non-zero exit is a step ``error`` and raises
        :class:`ProbeFailure` when ``required``; otherwise None is returned, so a secondary
        listing failing does not throw away what the primary listing gave.
        """
        start = time.monotonic()
        result = host.run(list(argv), timeout_s=self.tool_timeout_s if timeout_s is None else timeout_s)
        seconds = round(result.seconds or (time.monotonic() - start), 4)
        name = " ".join(argv)
        if result.not_found:
            steps.append(ProbeStep(name=name, result="none", detail=f"{argv[0]} is not installed",
                                   seconds=seconds))
            return None
        if not result.ok:
            detail = result.describe_failure()
            steps.append(ProbeStep(name=name, result="error", detail=detail, seconds=seconds))
            if required:
                raise ProbeFailure(detail)
            return None
        steps.append(ProbeStep(name=name, result="ok", seconds=seconds))
        return result

    def run_listing(self, host: HostView, argv: list[str], steps: list[ProbeStep], parse, *,
                    required: bool = True):
        """:meth:`run_tool`, then ``parse(stdout)`` through :func:`parse_output`; None when the
        tool is missing, or failed or printed garbage and was not ``required``."""
        result = self.run_tool(host, argv, steps, required=required)
        return None if result is None else parse_output(steps, parse, result.stdout, required=required)

    # ---- containers ----------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """Docker settings that expose exactly ``accs`` to a container."""
        raise NotImplementedError(f"{self.vendor}: container access not implemented")


_MODULE_RE = re.compile(r"^(\S+)\s")


def loaded_modules(host: HostView) -> set[str]:
    """Names of loaded kernel modules, from /proc/modules (falls back to /sys/module)."""
    text = host.read_text("/proc/modules")
    if text:
        return {m.group(1) for m in map(_MODULE_RE.match, text.splitlines()) if m}
    return set(host.listdir("/sys/module"))


def parse_output(steps: list[ProbeStep], parse, text: str, *, required: bool = True):
    """``parse(text)``; on :class:`ProbeFailure` the tool's step (the last one) becomes ``error``
    with the parser's message, then the failure is raised (``required``) or None returned."""
    try:
        return parse(text)
    except ProbeFailure as exc:
        if steps:
            steps[-1].result, steps[-1].detail = "error", str(exc)
        if required:
            raise
        return None


def add_step_detail(steps: list[ProbeStep], detail: str) -> None:
    """Attach a summary ("8 device(s)", merge notes) to the last step."""
    if steps and detail:
        steps[-1].detail = detail if not steps[-1].detail else f"{steps[-1].detail}; {detail}"


def resolve_tool(host: HostView, name: str, fallback_dirs: tuple[str, ...] = ()) -> str:
    """The argv[0] to use: the bare name when on PATH (and always on a snapshot or a live host
    with another root, whose commands are keyed/found by name), else an absolute path from
    ``fallback_dirs`` on this machine (hy-smi lives in /opt/hyhal/bin, rocm-smi in
    /opt/rocm/bin, often not on root's PATH)."""
    if not getattr(host, "native", False) or host.has_tool(name):
        return name
    for directory in fallback_dirs:
        candidate = f"{directory.rstrip('/')}/{name}"
        if host.exists(candidate):
            return candidate
    return name
