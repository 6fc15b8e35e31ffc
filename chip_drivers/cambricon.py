"""Cambricon MLU accelerators (backend ``neuware``).

Layer a: PCI vendor ``cabc``, class 0x1200 (processing accelerator). ``pci.ids`` knows only
MLU270-S4 ``0270`` and MLU370-S4 ``0370``; MLU290 ``0290`` and MLU365 ``0365`` come from
Cambricon's own scripts (see the table). Public MLU370 boards (S4, X4, X8) all use device
``0370`` as far as we know; an MLU370-X8 is two chips, each its own PCI function with 24 GB,
so the table holds the per-function memory (24 GiB) and names the family ("MLU370"); cnmon
then names the board. The MLU590 id is not public (chips.md §8): such devices are still
claimed by class and named from cnmon.

Layer b: kernel module ``cambricon_drv`` (PCI driver name ``cambricon-pci-drv``), its
``/sys/module/cambricon_drv/version`` when the module declares one, ``/proc/driver/cambricon``
(``mlus/<bdf>/`` per bound device), nodes ``/dev/cambricon_ctl``, ``/dev/cambricon_devN``,
``/dev/cambricon_ipcmN``, ``/dev/cambricon_gdr``; the Neuware (CNToolkit) version from
``/usr/local/neuware/version.txt`` (``Neuware Version 3.9.0``, the file Cambricon's docs and
operator read), else the install directory link ``/usr/local/neuware -> neuware-<ver>``.

Layer c: ``cnmon`` default listing (v5 layout: ``Card VF Name Firmware | Bus-Id | Util
Ecc-Error`` / ``Fan Temp Pwr:Usage/Cap | Memory-Usage | SR-IOV Compute-Mode``; the v4 layout
has ``Inited`` instead of ``Bus-Id`` and is matched by card order).
"""

from __future__ import annotations

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep
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

NEUWARE_HOME = "/usr/local/neuware"


class CambriconDriver(ChipDriver):
    vendor = "cambricon"
    display_name = "Cambricon"
    backend = "neuware"
    pci_vendor_ids = ('cabc',)
    accelerator_classes = (CLASS_PROCESSING_ACCEL, CLASS_3D, CLASS_DISPLAY_OTHER)
    kernel_modules = ('cambricon_drv', 'cambricon')
    tools = ('cnmon',)
    provision_role = "cambricon"
    products: dict[str, Product] = {
        # pci.ids: "MLU270-S4". 16 GB DDR4 (public spec).
        "0270": Product("MLU270-S4", 16384, "mlu270", "mlu270"),
        # pci.ids: "MLU370-S4"; the whole MLU370 family (S4/X4: one 24 GB chip; X8: two 24 GB
        # chips, one PCI function each) — per-function memory. cnmon names the exact board.
        "0370": Product("MLU370", 24576, "mlu370", "mlu370"),
        # Not in pci.ids (2026.08.22): ids from Cambricon's manufacturing test scripts (`lspci -d
        # cabc:0290` -> MLU290 cards, `cabc:0365` -> MLU365 cards). Memory from Cambricon's
        # driver: MLU290 "only one version of mlu290 with 32GB HBM"; the one MLU365 board in its
        # board table (MLU365-D2) has total_mem_size 0x300000000 = 12 GiB.
        "0290": Product("MLU290", 32768, "mlu290", "mlu290"),
        "0365": Product("MLU365", 12288, "mlu370", "mlu365"),
    }

    # ---- layer b -------------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = super().driver_state(host)
        if not state.driver_loaded and host.is_dir("/proc/driver/cambricon"):
            state.driver_loaded = True
            state.modules.append("cambricon_drv")
        if state.driver_version:
            state.driver_version = state.driver_version.lstrip("v")
        state.dev_nodes = present_nodes(host)
        state.runtime = vf.runtime("neuware", vf.toolkit_version(host, NEUWARE_HOME, "neuware", "version.txt"))
        return state

    def apply_driver_state(self, accs: list[Accelerator], state: DriverState) -> None:
        super().apply_driver_state(accs, state)
        for acc in accs:
            acc.dev_nodes = device_nodes(acc.index, state.dev_nodes)

    # ---- layer c -------------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        parsed = self.run_listing(host, ["cnmon"], steps, parse_cnmon)
        if parsed is None:
            return accs
        state = self.state
        out = merge_tool_listing(self, host, accs, parsed, tool="cnmon", usage=usage, steps=steps)
        nodes = state.dev_nodes if state is not None else present_nodes(host)
        for acc in out:  # cnmon's card number is the driver's /dev numbering
            acc.dev_nodes = device_nodes(acc.index, nodes)
        return out

    # ---- containers ----------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """Plain ``--device`` access (no Cambricon container runtime is assumed).

        Each MLU's ``/dev/cambricon_devN`` and ``/dev/cambricon_ipcmN`` plus the shared
        ``/dev/cambricon_ctl``, at the same paths inside; ``MLU_VISIBLE_DEVICES`` lists the
        container's own ordinals (0..n-1: the runtime numbers the MLUs it can open);
        ``NEUWARE_HOME`` points at the toolkit inside the image. The nodes seen on the host
        are used when known, else the conventional names for the index.
        """
        access = ContainerAccess()
        for acc in sorted(accs, key=lambda a: a.index):
            nodes = acc.dev_nodes or device_nodes(acc.index, None)
            for node in nodes:
                spec = f"{node}:{node}:rwm"
                if spec not in access.devices:
                    access.devices.append(spec)
        access.devices.sort(key=lambda s: (not s.startswith("/dev/cambricon_ctl:"), s))
        access.env = {"MLU_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(accs))),
                      "NEUWARE_HOME": NEUWARE_HOME}
        return access


def present_nodes(host: HostView) -> list[str]:
    """The Cambricon /dev nodes on the host: control, GPUDirect, per-MLU dev and ipcm nodes."""
    return (vf.existing(host, ["/dev/cambricon_ctl", "/dev/cambricon_gdr"])
            + list(vf.numbered_dev_nodes(host, r"cambricon_dev(\d+)").values())
            + list(vf.numbered_dev_nodes(host, r"cambricon_ipcm(\d+)").values()))


def device_nodes(index: int, present: list[str] | None) -> list[str]:
    """MLU ``index``'s nodes; only those present on the host when ``present`` is known."""
    wanted = [f"/dev/cambricon_dev{index}", f"/dev/cambricon_ipcm{index}", "/dev/cambricon_ctl"]
    return wanted if present is None else [p for p in wanted if p in present]


def parse_cnmon(text: str) -> dict:
    """Parse ``cnmon``'s default listing.

    Returns ``{"driver_version", "cnmon_version", "devices": [...], "by_order"}`` where each
    device is ``{"index", "name", "bus_id", "memory_total_mib", "memory_used_mib",
    "utilization_pct", "temperature_c", "power_w", "power_limit_w", "firmware"}``.
    Raises :class:`ProbeFailure` when the text is not a cnmon listing.
    """
    if "CNMON" not in text.upper() or "|" not in text:
        raise ProbeFailure(f"cnmon output not recognised (no CNMON banner): {st.first_line(text)!r}")
    devices = []
    for b in st.device_blocks(text, "cnmon", ("Card",), name_of=lambda words: _name_firmware(words)[0]):
        name, firmware = _name_firmware(b.words)
        devices.append({
            "index": b.index, "name": name, "firmware": firmware, "bus_id": b.bus_id,
            "memory_used_mib": b.memory_used_mib, "memory_total_mib": b.memory_total_mib,
            "utilization_pct": st.find_number(st.PCT_RE, b.cell(0, 2)),
            "temperature_c": b.temperature_c, "power_w": b.power_w, "power_limit_w": b.power_limit_w,
        })
    return {
        "driver_version": st.header_value(text, "Driver"),
        "cnmon_version": st.header_value(text, "CNMON"),
        "devices": devices,
        "by_order": bool(devices) and all(d["bus_id"] is None for d in devices),
    }


def _name_firmware(words: list[str]) -> tuple[str, str | None]:
    """``["/", "MLU370-X8", "v1.1.6"]`` (VF column, name, firmware) -> ``("MLU370-X8", "v1.1.6")``;
    the VF column is ``/`` for a physical function or a number."""
    rest = words[1:] if words and (words[0] == "/" or words[0].isdigit()) else words
    firmware = rest[-1] if len(rest) >= 2 and rest[-1].lower().startswith("v") else None
    return " ".join(rest[:-1] if firmware else rest), firmware
