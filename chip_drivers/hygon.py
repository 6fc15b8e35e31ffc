"""Hygon DCUs (backend ``dtk``).

Layer a: PCI ``1d94`` functions of an accelerator class (``0302``/``0380``/``1200``/``0b40``).
WHY more than the class: ``1d94`` is also the vendor id of every Hygon CPU chipset function
(root complex ``1450``, IOMMU, PSP/CCP ``1456``, data fabric ``1460``-``1467``, dummy
functions, USB, SATA/SMBus/LPC ``79xx``, NICs ``14ab``/``200x``); those device ids are
refused whatever their class says.

Layer b: ``hycu``/``hydcu`` module and ``/sys/module/<m>/version`` (the driver version),
``/dev/kfd``, ``/dev/mkfd`` (Hygon-specific), ``/dev/dri/renderD*``; DTK version from
``/opt/dtk/.info/version`` (then ``rocm_version``, ``version-dev``, or the newest
``/opt/dtk-XX.YY[.Z]`` directory).

Layer c: ``hy-smi`` (default listing: count, usage; DCU or HCU naming), ``hy-smi --showbus``
(index -> bus id; without it devices cannot be matched to PCI), and DTK's ``rocm-smi ...
--json`` for VRAM (matched by bus id, or by card index = hy-smi index when it prints no bus).
"""

from __future__ import annotations

import re

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep, Runtime
from appliance.inventory.pci import PciDevice, normalize_bdf
from chip_drivers import vendor_files as vf
from chip_drivers.amd import ROCM_SMI_ARGS, RUNTIME_VERSION_RE, parse_rocm_smi_json, parse_smi_concise
from chip_drivers.base import (
    CLASS_3D,
    CLASS_COPROCESSOR,
    CLASS_DISPLAY_OTHER,
    CLASS_PROCESSING_ACCEL,
    ChipDriver,
    ContainerAccess,
    DriverState,
    ProbeFailure,
    Product,
    add_step_detail,
    resolve_tool,
)
from chip_drivers.tool_devices import ToolDevice, merge_listing

HYGON_BIN_DIRS = ("/opt/hyhal/bin", "/opt/dtk/bin")
DTK_VERSION_FILES = ("/opt/dtk/.info/version", "/opt/dtk/.info/rocm_version", "/opt/dtk/.info/version-dev")

# Hygon CPU/chipset device ids under 1d94 (from pci.ids): never accelerators.
_CHIPSET_RE = re.compile(r"^(14[0-9a-f]{2}|79[0-9a-f]{2}|200[0-9a-f])$")


def parse_hy_smi_showbus(text: str) -> dict[int, str]:
    """``hy-smi --showbus``: ``HCU[0] : PCI Bus: 0000:05:00.0 --> SN: ...`` -> {0: bdf}."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:HCU|DCU|GPU)\[(\d+)\]\s*:\s*PCI Bus:\s*([0-9A-Fa-f:.]+)", line)
        if m:
            out[int(m.group(1))] = normalize_bdf(m.group(2))
    if not out:
        raise ProbeFailure("hy-smi --showbus: output not recognised (no 'HCU[N] : PCI Bus:' lines)")
    return out


class HygonDriver(ChipDriver):
    vendor = "hygon"
    display_name = "Hygon DCU"
    backend = "dtk"
    pci_vendor_ids = ('1d94',)
    accelerator_classes = (CLASS_3D, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_COPROCESSOR)
    kernel_modules = ('hycu', 'hydcu', 'amdgpu')
    tools = ('hy-smi', 'rocm-smi')
    provision_role = "hygon"
    drm_devices = True
    snapshot_commands = (("hy-smi",), ("hy-smi", "--showbus"), ("rocm-smi", *ROCM_SMI_ARGS))
    snapshot_paths = DTK_VERSION_FILES + ("/sys/module/hycu/version", "/sys/module/hydcu/version")
    # K100_AI is 6211 in pci.ids, 6210 in Hygon's docs and a real rocm-smi capture: both kept.
    # Z100/Z100L/BW ids: Hygon's hydcu kernel driver header (DEVICE_Z100 0x54b7, DEVICE_Z100L
    # 0x55b7, 0x6320, 0x6430); none of them is in pci.ids (2026.08.22). 6320 = BW1000 (BW150/
    # BW1000) and 6430 = BW1100 come from issue 18 only: the header's own names are DEVICE_BW3000
    # and DEVICE_NMZ_8378. rocm-smi's VRAM replaces every memory figure here.
    products: dict[str, Product] = {
        "6210": Product("Hygon K100_AI", 65536, "gfx928", compute_capability="gfx928"),
        "6211": Product("Hygon K100_AI", 65536, "gfx928", compute_capability="gfx928"),
        "62b7": Product("Hygon K100", 65536, "gfx926", compute_capability="gfx926"),
        # Z100 and Z100L: 32 GB HBM2, gfx906 (public Z100/Z100L specs; some Z100 listings say 16 GB)
        "54b7": Product("Hygon Z100", 32768, "gfx906", compute_capability="gfx906"),
        "55b7": Product("Hygon Z100L", 32768, "gfx906", compute_capability="gfx906"),
        # BW1000: 64 GB and gfx936 in public BW1000 deployment notes (8 x 64 GB per node,
        # PYTORCH_ROCM_ARCH=gfx936); Hygon publishes no specification (unverified).
        "6320": Product("Hygon BW1000", 65536, "gfx936", compute_capability="gfx936"),
        # BW1100: gfx938 in public DCU profiling notes; memory: one model table says 144 GB, not
        # enough to rely on -> unknown until rocm-smi runs.
        "6430": Product("Hygon BW1100", None, "gfx938", compute_capability="gfx938"),
        "6370": Product("Hygon BW100", None, None),
    }

    # ---- layer a ---------------------------------------------------------------------
    def claims(self, dev: PciDevice) -> bool:
        if dev.vendor not in self.pci_vendor_ids or _CHIPSET_RE.match(dev.device):
            return False
        return dev.class_prefix in self.accelerator_classes

    # ---- layer b ---------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = super().driver_state(host)
        hygon_module = any(m in state.modules for m in ("hycu", "hydcu"))
        if hygon_module or host.exists("/dev/mkfd"):
            state.dev_nodes = vf.existing(host, ("/dev/kfd", "/dev/mkfd")) + vf.render_nodes(host)
        state.runtime = self.dtk_version(host)
        return state

    @staticmethod
    def dtk_version(host: HostView) -> Runtime | None:
        return vf.runtime("dtk", vf.version_from_files(host, DTK_VERSION_FILES, RUNTIME_VERSION_RE)
                          or vf.newest_versioned_dir(host, "/opt", "dtk"))

    # ---- layer c ---------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        hy_smi = resolve_tool(host, "hy-smi", HYGON_BIN_DIRS)
        listed = self.run_listing(host, [hy_smi], steps, lambda text: parse_smi_concise(text, "hy-smi"))
        if listed is None:
            return accs
        add_step_detail(steps, f"{len(listed)} DCU(s)")
        buses = self.run_listing(host, [hy_smi, "--showbus"], steps, parse_hy_smi_showbus, required=False) or {}
        for td in listed:
            td.bus_id = buses.get(td.index if td.index is not None else -1)
        rocm_smi = resolve_tool(host, "rocm-smi", HYGON_BIN_DIRS)
        parsed = self.run_listing(host, [rocm_smi, *ROCM_SMI_ARGS], steps, parse_rocm_smi_json, required=False)
        if parsed is not None:
            cards = parsed[0]
            by_bus = {c.bus_id: c for c in cards if c.bus_id}
            by_index = {c.index: c for c in cards}
            for td in listed:
                card = by_bus.get(td.bus_id) if td.bus_id else None
                card = card or (by_index.get(td.index) if not by_bus else None)
                if card:
                    td.memory_mib = card.memory_mib
                    td.name = card.name
                    td.extra.update({k: v for k, v in card.extra.items() if k in ("device_id", "gfx")})
                    if td.usage and card.usage:
                        td.usage.memory_used_mib = card.usage.memory_used_mib
        for td in listed:
            if td.usage and td.usage.memory_used_mib is None and td.memory_mib and "vram_pct" in td.extra:
                pct = float(td.extra["vram_pct"].rstrip("%") or 0)
                td.usage.memory_used_mib = int(td.memory_mib * pct / 100)

        def make_acc(td: ToolDevice, index: int) -> Accelerator:
            product = self.products.get(td.extra.get("device_id", ""))
            acc = Accelerator(vendor=self.vendor, model=product.name if product else (td.name or "Hygon DCU"),
                              index=index, backend=self.backend,
                              sources={"model": "product-table" if product else "rocm-smi"})
            if product:
                acc.memory_mib, acc.arch = product.memory_mib, product.arch
                acc.compute_capability = product.compute_capability
            return acc

        def apply(acc: Accelerator, td: ToolDevice) -> None:
            if td.name and acc.sources.get("model") != "product-table":
                acc.model = td.name if td.name.lower().startswith("hygon") else f"Hygon {td.name}"
                acc.sources["model"] = "rocm-smi"
            if td.memory_mib:
                acc.memory_mib = td.memory_mib
                acc.sources["memory_mib"] = "rocm-smi"
            if td.extra.get("gfx") and not acc.arch:
                acc.arch = acc.compute_capability = td.extra["gfx"]
            acc.health = "ok"

        return merge_listing(self, host, accs, listed, tool="hy-smi", usage=usage, steps=steps,
                             make_acc=make_acc, apply=apply)

    # ---- containers ------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """``/dev/kfd``, ``/dev/mkfd`` and all of ``/dev/dri`` with ``HIP_VISIBLE_DEVICES``
        selecting the DCUs by hy-smi index (the common DTK practice; whether hyhal hides DCUs
        whose render node is absent is not documented), group ``video``, and ``/opt/hyhal``
        read-only (DTK images load ``libhsa-runtime64.so`` from it)."""
        return ContainerAccess(
            devices=["/dev/kfd:/dev/kfd:rwm", "/dev/mkfd:/dev/mkfd:rwm", "/dev/dri:/dev/dri:rwm"],
            env={"HIP_VISIBLE_DEVICES": ",".join(str(a.index) for a in accs)},
            volumes={"/opt/hyhal": "/opt/hyhal"},
            group_add=["video"],
        )
