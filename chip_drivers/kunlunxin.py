"""Kunlunxin XPUs (backend ``xpu``, runtime XRE).

Layer a: PCI ``1d22`` (Baidu) functions of an accelerator class; ``3688`` is the P800
(unverified id from a community script, see chips.md), ``3685`` a Kunlun2 virtual function.
``3684`` is two generations (Kunlunxin's XRE install guide, "安装前检查"): the first-generation
K100/K200 enumerate as class ``1200`` with no subsystem id, the second-generation R200 as class
``0780`` ("communication controller") with subsystem ``0002:0001``. So class ``0780`` is an
accelerator class here, but only for Kunlunxin's own accelerator ids (those in the product
table); a ``3684`` of class ``0780`` or with a subsystem id other than the R200's is a
second-generation board the table does not name (R300 and the 32 GB R200 variants list the
same id, e.g. an R300 box's ``lspci`` shows "Communication controller: Device 1d22:3684").
The Baidu storage device ``1380`` is not an accelerator class and is never reported.

Layer b: ``kunlun`` module (``/sys/module/kunlun/version``), ``/dev/xpuN`` and ``/dev/xpuctrl``.
No runtime version file is documented; XRE's version comes from the xpu-smi banner.

Layer c: ``xpu-smi`` (nvidia-smi-like table) and ``xpu-smi -q`` (UUID, minor number, brand).
WHY the brand check: Intel's XPU Manager also installs a command named ``xpu-smi``; its output
(a help text naming "Intel(R) XPU System Management Interface", or a discovery table) is
recognised and skipped rather than parsed as Kunlunxin devices.
"""

from __future__ import annotations

import re

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep, Runtime
from appliance.inventory.pci import PciDevice, normalize_bdf
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
    add_step_detail,
    parse_output,
)
from chip_drivers.smi_table import parse_smi_box
from chip_drivers.tool_devices import ToolDevice, merge_listing

# "Other communication controller": the class the Kunlun2 (R200/R300) functions report. Accepted
# by this driver only, and only for the device ids of its product table.
CLASS_COMM_OTHER = "0780"
KUNLUN_DEVICE = "3684"
# A 3684 function that is second generation (class 0780, or a subsystem id) but not a board the
# table knows: named by generation, memory from xpu-smi.
KUNLUN2_BOARD = Product("Kunlunxin Kunlun2 AI Accelerator (R-series)", None, "KL2", "kl2")


def is_intel_xpu_smi(text: str) -> bool:
    """Output of Intel's XPU Manager ``xpu-smi`` (the name clash), not Kunlunxin's."""
    return "Intel(R)" in text or ("Device Name:" in text and "Intel" in text)


def parse_xpu_smi(text: str):
    """Kunlunxin ``xpu-smi`` default listing (see :func:`chip_drivers.smi_table.parse_smi_box`)."""
    if is_intel_xpu_smi(text):
        raise ProbeFailure("xpu-smi is Intel's XPU Manager, not Kunlunxin's tool")
    listing = parse_smi_box(text, "XPU", "xpu-smi")
    if "XPU-SMI" not in text and not listing.devices:
        raise ProbeFailure("xpu-smi: output not recognised (no XPU-SMI banner or device rows)")
    return listing


def parse_xpu_smi_q(text: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``xpu-smi -q``: top-level ``Key : value`` lines and per-device blocks ``XPU <bdf>``
    -> ({"Driver Version": ...}, {bdf: {"Product Name": ..., "XPU UUID": ..., ...}})."""
    top: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        m = re.match(r"^XPU\s+([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*$", line)
        if m:
            current = devices.setdefault(normalize_bdf(m.group(1)), {})
            continue
        key, sep, value = line.partition(" : ")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        target = current if (current is not None and line.startswith(" ")) else top
        target.setdefault(key, value)
    if not devices and "Driver Version" not in top:
        raise ProbeFailure("xpu-smi -q: output not recognised (no 'XPU <bus id>' blocks)")
    return top, devices


class KunlunxinDriver(ChipDriver):
    vendor = "kunlunxin"
    display_name = "Kunlunxin"
    backend = "xpu"
    pci_vendor_ids = ('1d22',)
    accelerator_classes = (CLASS_PROCESSING_ACCEL, CLASS_3D, CLASS_DISPLAY_OTHER, CLASS_COMM_OTHER)
    kernel_modules = ('kunlun', 'xpu')
    tools = ('xpu-smi',)
    provision_role = "kunlunxin"
    snapshot_commands = (("xpu-smi",), ("xpu-smi", "-q"))
    snapshot_paths = ("/sys/module/kunlun/version",)
    # Keys: device id, or device:subsystem vendor:subsystem device (a board of that chip).
    products: dict[str, Product] = {
        "3688": Product("Kunlunxin P800", 98304, "KL3", "p800"),
        # first generation (XRE install guide: no subsystem id = K100 or K200; a K200 is two
        # XPUs behind one function): memory not in a source this project holds -> unknown
        "3684": Product("Kunlunxin Kunlun AI Accelerator (K100/K200)", None, "KL1", "kl1"),
        # XRE install guide: subsystem 0002:0001 = the standard R200 card (class 0780); its
        # SR-IOV table gives the R200 16 GB (chip KLX2-S1P; R200_8F/R200_8FS/RG800/R300: 32 GB)
        "3684:0002:0001": Product("Kunlunxin R200", 16384, "KL2", "kl2"),
        "3685": Product("Kunlunxin Kunlun2 (VF)", None, "KL2", "kl2"),
    }

    # ---- layer a ---------------------------------------------------------------------
    def claims(self, dev: PciDevice) -> bool:
        if dev.vendor in self.pci_vendor_ids and dev.class_prefix == CLASS_COMM_OTHER:
            return dev.device in {key.split(":")[0] for key in self.products}
        return super().claims(dev)

    def lookup_product(self, dev: PciDevice) -> Product | None:
        product = super().lookup_product(dev)
        if dev.device == KUNLUN_DEVICE and product is self.products[KUNLUN_DEVICE] and (
                dev.class_prefix == CLASS_COMM_OTHER or (dev.subsystem_vendor or "0000") != "0000"):
            # second generation, board not in the table ("no subsystem" in lspci reads as
            # subsystem 0000:0000 in sysfs)
            return KUNLUN2_BOARD
        return product

    # ---- layer b ---------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = super().driver_state(host)
        state.dev_nodes = (list(vf.numbered_dev_nodes(host, r"xpu(\d+)").values())
                           + vf.existing(host, ("/dev/xpuctrl",)))
        return state

    # ---- layer c ---------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        res = self.run_tool(host, ["xpu-smi"], steps)
        if res is None:
            return accs
        if is_intel_xpu_smi(res.stdout):
            steps[-1].result = "skipped"
            steps[-1].detail = "xpu-smi here is Intel's XPU Manager (name clash), not Kunlunxin's"
            return accs
        listing = parse_output(steps, parse_xpu_smi, res.stdout)
        add_step_detail(steps, f"{len(listing.devices)} XPU(s)")
        driver_version = listing.versions.get("Driver Version")
        rt_version = listing.versions.get("XPU-RT Version")
        _, details = self.run_listing(host, ["xpu-smi", "-q"], steps, parse_xpu_smi_q, required=False) or ({}, {})
        for td in listing.devices:
            info = details.get(td.bus_id or "", {})
            if info.get("XPU UUID"):
                td.uuid = info["XPU UUID"]
            if info.get("Minor Number", "").isdigit():
                td.extra["minor"] = info["Minor Number"]

        def make_acc(td: ToolDevice, index: int) -> Accelerator:
            return Accelerator(vendor=self.vendor, model=f"Kunlunxin {td.name or 'XPU'}", index=index,
                               backend=self.backend, variant="p800" if "P800" in (td.name or "") else None,
                               sources={"model": "xpu-smi"})

        def apply(acc: Accelerator, td: ToolDevice) -> None:
            if td.name:
                acc.model = f"Kunlunxin {td.name}"
                acc.sources["model"] = "xpu-smi"
            if td.memory_mib:
                acc.memory_mib = td.memory_mib
                acc.sources["memory_mib"] = "xpu-smi"
            if td.uuid:
                acc.uuid = td.uuid
                acc.sources["uuid"] = "xpu-smi -q"
            minor = td.extra.get("minor", str(td.index) if td.index is not None else None)
            if minor is not None:
                acc.dev_nodes = [f"/dev/xpu{minor}"]
                acc.sources["dev_nodes"] = "xpu-smi -q (Minor Number)" if "minor" in td.extra else "xpu-smi index"
            if driver_version and not acc.driver_version:
                acc.driver_version = driver_version
                acc.sources["driver_version"] = "xpu-smi"
            if rt_version:
                acc.runtime = Runtime(name="xpu", version=rt_version, source="xpu-smi (XPU-RT Version)")
            acc.health = "ok"

        return merge_listing(self, host, accs, listing.devices, tool="xpu-smi", usage=usage, steps=steps,
                             make_acc=make_acc, apply=apply)

    # ---- containers ------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """``/dev/xpuN`` per XPU plus ``/dev/xpuctrl``, ``XPU_VISIBLE_DEVICES`` with the xpu-smi
        indices (what Paddle/FastDeploy read). No public container runtime exists; the usual
        ``--privileged`` is deliberately not used."""
        devices: list[str] = []
        for acc in accs:
            nodes = acc.dev_nodes or [f"/dev/xpu{acc.index}"]
            devices += [f"{n}:{n}:rwm" for n in nodes]
        devices.append("/dev/xpuctrl:/dev/xpuctrl:rwm")
        return ContainerAccess(devices=devices,
                               env={"XPU_VISIBLE_DEVICES": ",".join(str(a.index) for a in accs)})
