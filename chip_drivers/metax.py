"""MetaX GPUs (backend ``maca``).

Layer a: PCI vendor ``9999``. ``pci.ids`` has one entry, ``0a01`` "C500"; the ids of C550,
N260 and later boards are not public (chips.md §8), so such devices are claimed by class
(3D/display/processing accelerator) and named by ``mx-smi``. All of C500/C550/N260 carry
64 GB HBM2e (mx-smi prints 65536 MiB).

Layer b: kernel module ``metax`` (a DRM driver: ``lsmod`` shows it beside ``ttm``/``drm``),
``/sys/module/metax/version`` when declared; ``/dev/mxcd`` (+ ``/dev/mxnd``, ``/dev/mxgd`` on
some releases); each GPU's own ``/dev/dri/cardN`` and ``renderDN`` read from its PCI
function's sysfs ``drm/`` directory; the MACA version from ``/opt/maca/Version.txt`` (the
file MetaX's build scripts read, e.g. ``Version:3.1.0.14``), else an install link
``/opt/maca -> maca-<ver>``, else mx-smi's ``MACA Version`` line.

Layer c: ``mx-smi`` default listing (``MX-SMI 2.x  Kernel Mode Driver Version: …`` banner,
``GPU NAME [Persistence-M] | Bus-id | GPU-Util`` / ``Temp Pwr:Usage/Cap [Perf] |
Memory-Usage`` blocks).
"""

from __future__ import annotations

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep, Runtime
from chip_drivers import smi_table as st
from chip_drivers import vendor_files as vf
from chip_drivers.base import (
    CLASS_3D,
    CLASS_DISPLAY_OTHER,
    CLASS_PROCESSING_ACCEL,
    ChipDriver,
    ContainerAccess,
    DriverState,
    ProbeFailure,
    Product,
)
from chip_drivers.tool_devices import merge_tool_listing

MACA_HOME = "/opt/maca"
MXDRIVER_HOME = "/opt/mxdriver"
CONTROL_NODES = ("/dev/mxcd", "/dev/mxnd", "/dev/mxgd")
_PERSISTENCE = {"on", "off", "n/a", "enabled", "disabled"}


class MetaxDriver(ChipDriver):
    vendor = "metax"
    display_name = "MetaX"
    backend = "maca"
    pci_vendor_ids = ('9999',)
    accelerator_classes = (CLASS_3D, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL)
    kernel_modules = ('metax',)
    tools = ('mx-smi',)
    provision_role = "metax"
    drm_devices = True
    products: dict[str, Product] = {
        # pci.ids "C500" (the only MetaX entry). 64 GB HBM2e (public spec; mx-smi shows 65536 MiB).
        "0a01": Product("MetaX C500", 65536, "xcore1000", "c500"),
    }

    # ---- layer b -------------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = super().driver_state(host)
        state.dev_nodes = vf.existing(host, CONTROL_NODES)
        state.runtime = vf.runtime("maca", vf.toolkit_version(host, MACA_HOME, "maca", "Version.txt"))
        return state

    def apply_driver_state(self, accs: list[Accelerator], state: DriverState) -> None:
        super().apply_driver_state(accs, state)
        for acc in accs:
            acc.dev_nodes = [n for n in acc.dev_nodes if n.startswith("/dev/dri/")] + list(state.dev_nodes)

    # ---- layer c -------------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        parsed = self.run_listing(host, ["mx-smi"], steps, parse_mx_smi)
        if parsed is None:
            return accs
        state = self.state
        out = merge_tool_listing(self, host, accs, parsed, tool="mx-smi", usage=usage, steps=steps)
        if parsed["maca_version"]:
            for acc in out:
                if acc.runtime is None:
                    acc.runtime = Runtime(name="maca", version=parsed["maca_version"], source="mx-smi")
        for acc in out:
            if not acc.dev_nodes and state is not None:
                acc.dev_nodes = list(state.dev_nodes)
        return out

    # ---- containers ----------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """Plain device access, the way MetaX documents ``docker run``.

        ``/dev/mxcd`` plus each GPU's own DRM nodes (the whole ``/dev/dri`` only when a
        device's nodes are unknown), group ``video``, the host's ``/opt/mxdriver`` and
        ``/opt/maca`` read-only (driver userland and management library), and
        ``CUDA_VISIBLE_DEVICES`` as container ordinals (MACA is CUDA-compatible and numbers
        the GPUs it can open).
        """
        access = ContainerAccess(group_add=["video"])
        devices: list[str] = []
        for acc in sorted(accs, key=lambda a: a.index):
            nodes = [n for n in acc.dev_nodes if n.startswith("/dev/dri/")] or ["/dev/dri"]
            nodes += [n for n in acc.dev_nodes if n in CONTROL_NODES] or ["/dev/mxcd"]
            for node in nodes:
                if node not in devices:
                    devices.append(node)
        if "/dev/dri" in devices:
            devices = [d for d in devices if not d.startswith("/dev/dri/")]
        devices.sort(key=lambda d: (d not in CONTROL_NODES, d))
        access.devices = [f"{d}:{d}:rwm" for d in devices]
        access.volumes = {MXDRIVER_HOME: MXDRIVER_HOME, MACA_HOME: MACA_HOME}
        access.env = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(accs)))}
        return access


def parse_mx_smi(text: str) -> dict:
    """Parse ``mx-smi``'s default listing.

    Returns ``{"driver_version", "maca_version", "smi_version", "attached", "devices"}``;
    each device is ``{"index", "name", "bus_id", "memory_total_mib", "memory_used_mib",
    "utilization_pct", "temperature_c", "power_w", "power_limit_w"}``. ``maca_version`` is
    None when mx-smi prints ``unknown`` (inside a pod). Raises :class:`ProbeFailure` when the
    text is not an mx-smi listing.
    """
    if "MX-SMI" not in text.upper() and "MetaX System Management" not in text:
        raise ProbeFailure(f"mx-smi output not recognised (no MX-SMI banner): {st.first_line(text)!r}")
    has_persistence = any("Persistence" in c for row in st.parse_box_table(text).header for c in row)

    def name_of(words: list[str]) -> str:
        if has_persistence and words and words[-1].lower() in _PERSISTENCE:
            words = words[:-1]
        return " ".join(words)

    devices = [{
        "index": b.index, "name": name_of(b.words), "bus_id": b.bus_id,
        "memory_used_mib": b.memory_used_mib, "memory_total_mib": b.memory_total_mib,
        "utilization_pct": st.find_number(st.PCT_RE, b.cell(0, 2)),
        "temperature_c": b.temperature_c, "power_w": b.power_w, "power_limit_w": b.power_limit_w,
    } for b in st.device_blocks(text, "mx-smi", ("GPU",), name_of=name_of)]
    attached = None
    for line in text.splitlines():
        if line.strip().startswith("Attached GPUs"):
            value = line.partition(":")[2].strip()
            attached = int(value) if value.isdigit() else None
    return {
        "driver_version": st.header_value(text, "Kernel Mode Driver Version"),
        "maca_version": st.header_value(text, "MACA Version"),
        "smi_version": st.header_value(text, "MX-SMI"),
        "attached": attached,
        "devices": devices,
    }
