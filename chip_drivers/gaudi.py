"""Intel Gaudi accelerators (backend ``gaudi``, software stack SynapseAI).

Layer a: PCI ``1da3`` (Habana Labs) functions of class ``1200``, except the Goya/Greco
inference cards (``0001``/``0030``), which the Gaudi software stack does not drive. Each
device's ``/dev/accel/accelN`` comes from ``/sys/bus/pci/devices/<bdf>/accel/``, and its module
id (the OAM slot, stable across reboots unlike indices) from the ``module_id`` attribute.

Layer b: ``habanalabs`` module and ``/sys/module/habanalabs/version``, ``/dev/accel/accel*``
and ``accel_controlD*`` (older drivers: ``/dev/hlN``, ``hl_controlDN``).

Layer c: ``hl-smi`` (nvidia-smi-like table: name, bus id, memory, usage; banner gives the
driver and hl-smi = SynapseAI version) and ``hl-smi -Q index,module_id,bus_id -f csv,noheader``
(module ids; the CSV parser also takes the documented ``-f csv`` form with a header).
"""

from __future__ import annotations

import re

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep, Runtime
from appliance.inventory.pci import PciDevice, normalize_bdf
from chip_drivers.base import (
    CLASS_PROCESSING_ACCEL,
    ChipDriver,
    ContainerAccess,
    DriverState,
    Product,
    add_step_detail,
)
from chip_drivers.smi_table import parse_csv_query, parse_smi_box
from chip_drivers.tool_devices import ToolDevice, merge_listing

QUERY_FIELDS = ("index", "module_id", "bus_id")
QUERY_ARGV = ("hl-smi", "-Q", ",".join(QUERY_FIELDS), "-f", "csv,noheader")
_NOT_GAUDI = {"0001", "0030"}   # Goya, Greco


def synapse_version(hl_smi_version: str | None) -> str | None:
    """``hl-1.15.1-fw-49.0.0.0`` -> ``1.15.1`` (hl-smi ships with the SynapseAI release)."""
    if not hl_smi_version:
        return None
    m = re.search(r"(\d+\.\d+\.\d+)", hl_smi_version)
    return m.group(1) if m else None


def parse_hl_smi(text: str):
    """``hl-smi`` default listing (see :func:`chip_drivers.smi_table.parse_smi_box`)."""
    return parse_smi_box(text, "AIP", "hl-smi")


class GaudiDriver(ChipDriver):
    vendor = "gaudi"
    display_name = "Intel Gaudi"
    backend = "gaudi"
    pci_vendor_ids = ('1da3',)
    accelerator_classes = (CLASS_PROCESSING_ACCEL,)
    kernel_modules = ('habanalabs',)
    tools = ('hl-smi',)
    provision_role = "gaudi"
    snapshot_commands = (("hl-smi",), QUERY_ARGV)
    snapshot_paths = ("/sys/module/habanalabs/version",)
    # Ids: pci.ids (1000, 1010, 1020, 1060, 1063) and the habanalabs driver's PCI id table
    # (habanalabs_drv.c: PCI_IDS_GAUDI_HL2000M 0x1001, PCI_IDS_GAUDI_HL2000M_SEC 0x1011,
    # PCI_IDS_GAUDI2_HL_288 0x1021, PCI_IDS_GAUDI3_SINGLE_DIE 0x1062), not in pci.ids 2026.08.22.
    # Memory: Gaudi 32 GB HBM2, Gaudi2 96 GB HBM2e (hl-smi shows 98304 MiB on an HL-225), Gaudi3
    # 128 GB HBM2e (public specs); hl-smi's figure replaces it.
    products: dict[str, Product] = {
        "1000": Product("Intel Gaudi (HL-205)", 32768, "gaudi", "gaudi"),
        "1010": Product("Intel Gaudi (HL-205, secured)", 32768, "gaudi", "gaudi"),
        # the HL-2000M variant of the same Gaudi chip: its 32 GB assumed
        "1001": Product("Intel Gaudi (HL-2000M)", 32768, "gaudi", "gaudi"),
        "1011": Product("Intel Gaudi (HL-2000M, secured)", 32768, "gaudi", "gaudi"),
        "1020": Product("Intel Gaudi2 (HL-225)", 98304, "gaudi2", "gaudi2"),
        # HL-288 is the Gaudi2 PCIe card (public Gaudi vLLM/DeepSeek-R1 launch scripts: `hl-smi | grep
        # HL-288` -> "Gaudi2 PCIe platform"); the same Gaudi2 chip and 96 GB as the HL-225 assumed.
        "1021": Product("Intel Gaudi2 PCIe (HL-288)", 98304, "gaudi2", "gaudi2"),
        "1060": Product("Intel Gaudi3 (HL-325L)", 131072, "gaudi3", "gaudi3"),
        # a single-die Gaudi3 (the 128 GB Gaudi3 is two dies): memory unknown until hl-smi runs
        "1062": Product("Intel Gaudi3 (single die)", None, "gaudi3", "gaudi3"),
        "1063": Product("Intel Gaudi3 PCIe (HL-338)", 131072, "gaudi3", "gaudi3"),
    }

    # ---- layer a ---------------------------------------------------------------------
    def claims(self, dev: PciDevice) -> bool:
        return super().claims(dev) and dev.device not in _NOT_GAUDI

    def from_pci(self, dev: PciDevice, index: int, host: HostView) -> Accelerator:
        acc = super().from_pci(dev, index, host)
        base = f"/sys/bus/pci/devices/{dev.bdf}"
        accel = [n for n in host.listdir(f"{base}/accel") if re.fullmatch(r"accel\d+", n)]
        if accel:
            minor = int(accel[0][5:])
            acc.dev_nodes = [f"/dev/accel/accel{minor}", f"/dev/accel/accel_controlD{minor}"]
            acc.sources["dev_nodes"] = "pci-sysfs accel"
            for path in (f"{base}/module_id", f"{base}/accel/{accel[0]}/module_id"):
                value = host.read_value(path)
                if value and value.isdigit():
                    acc.physical_id = int(value)
                    acc.sources["physical_id"] = f"{path} (module id)"
                    break
        return acc

    # ---- layer b ---------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = super().driver_state(host)
        nodes = [f"/dev/accel/{n}" for n in host.listdir("/dev/accel") if n.startswith("accel")]
        nodes += [f"/dev/{n}" for n in host.listdir("/dev") if re.fullmatch(r"hl(_controlD)?\d+", n)]
        state.dev_nodes = nodes
        return state

    # ---- layer c ---------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        listing = self.run_listing(host, ["hl-smi"], steps, parse_hl_smi)
        if listing is None:
            return accs
        add_step_detail(steps, f"{len(listing.devices)} device(s)")
        driver_version = listing.versions.get("Driver Version")
        runtime_version = synapse_version(listing.versions.get("HL-SMI Version"))
        rows = self.run_listing(host, list(QUERY_ARGV), steps,
                                lambda text: parse_csv_query(text, QUERY_FIELDS, "hl-smi -Q"), required=False)
        by_bus = {normalize_bdf(r["bus_id"]): r for r in rows or [] if r.get("bus_id")}
        for td in listing.devices:
            row = by_bus.get(td.bus_id or "")
            if row and row["module_id"].isdigit():
                td.physical_id = int(row["module_id"])

        def make_acc(td: ToolDevice, index: int) -> Accelerator:
            return Accelerator(vendor=self.vendor, model=f"Intel Gaudi {td.name or ''}".strip(), index=index,
                               backend=self.backend, sources={"model": "hl-smi"})

        def apply(acc: Accelerator, td: ToolDevice) -> None:
            if td.name and acc.sources.get("model") != "product-table":
                acc.model = f"Intel Gaudi {td.name}"
                acc.sources["model"] = "hl-smi"
            if td.memory_mib:
                acc.memory_mib = td.memory_mib
                acc.sources["memory_mib"] = "hl-smi"
            if td.physical_id is not None:
                acc.physical_id = td.physical_id
                acc.sources["physical_id"] = "hl-smi -Q module_id"
            if driver_version and not acc.driver_version:
                acc.driver_version = driver_version
                acc.sources["driver_version"] = "hl-smi"
            if runtime_version:
                acc.runtime = Runtime(name="gaudi", version=runtime_version, source="hl-smi (HL-SMI Version)")
            if not acc.dev_nodes and td.index is not None:
                acc.dev_nodes = [f"/dev/accel/accel{td.index}", f"/dev/accel/accel_controlD{td.index}"]
                acc.sources["dev_nodes"] = "hl-smi index"
            acc.health = "ok"

        return merge_listing(self, host, accs, listing.devices, tool="hl-smi", usage=usage, steps=steps,
                             make_acc=make_acc, apply=apply)

    # ---- containers ------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """The habana container runtime with ``HABANA_VISIBLE_MODULES`` (module ids survive
        reboots; indices may not) or, when a module id is unknown, ``HABANA_VISIBLE_DEVICES``;
        the accel nodes are passed as well so the selection holds even if the runtime's
        defaults change; ``SYS_NICE`` and host IPC as Habana's docs require."""
        env = {"OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
        if accs and all(a.physical_id is not None for a in accs):
            env["HABANA_VISIBLE_MODULES"] = ",".join(str(a.physical_id) for a in accs)
        else:
            env["HABANA_VISIBLE_DEVICES"] = ",".join(str(a.index) for a in accs)
        devices: list[str] = []
        for acc in accs:
            nodes = acc.dev_nodes or [f"/dev/accel/accel{acc.index}", f"/dev/accel/accel_controlD{acc.index}"]
            devices += [f"{n}:{n}:rwm" for n in nodes]
        return ContainerAccess(devices=devices, env=env, runtime="habana", cap_add=["SYS_NICE"],
                               ipc_mode="host")
