"""Huawei Ascend NPUs (backend ``cann``).

Layer a: PCI ``19e5`` functions of class ``1200`` whose device id is an Ascend NPU id
(``d100`` 310, ``d500`` 310P, ``d801`` 910, ``d802`` 910B, ``d803`` 910_93/A3). WHY the id
check on top of the class: Huawei uses ``19e5`` for the iBMC VGA (``1711``), NICs, RAID and
the Kunpeng on-chip engines, and the Kunpeng ZIP engine (``a250``) also has class ``1200``.
Unknown ``19e5`` ``dxxx`` functions of class ``1200`` are still reported (future NPUs).

Layer b: Ascend kernel modules, ``/dev/davinciN`` (numbered by PHYSICAL id),
``davinci_manager``/``devmm_svm``/``hisi_hdc``, the driver's ``version.info`` and the CANN
toolkit's ``ascend_toolkit_install.info`` (``ascend-toolkit/latest/<arch>-linux/``, or the
CANN >= 8.5 layout ``/usr/local/Ascend/cann[-<ver>]/<arch>-linux/``).

Layer c: ``npu-smi info`` (the default listing: name, health, bus id, memory, usage; the
layouts of 310, 310P, 910 and 910B all parse) and ``npu-smi info -m`` (chip logic ids,
full chip name, and the ``Chip Phy-ID`` column where the tool prints one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep, Runtime, Usage
from appliance.inventory.pci import PciDevice
from chip_drivers import vendor_files as vf
from chip_drivers.base import (
    CLASS_PROCESSING_ACCEL,
    ChipDriver,
    ContainerAccess,
    DriverState,
    ProbeFailure,
    Product,
    add_step_detail,
)
from chip_drivers.smi_table import cells as table_cells
from chip_drivers.smi_table import find_bdf, usage_pairs
from chip_drivers.tool_devices import ToolDevice, merge_listing

ASCEND_ROOT = "/usr/local/Ascend"
DRIVER_VERSION_FILE = f"{ASCEND_ROOT}/driver/version.info"
# Where CANN records its version, newest layout last; <arch>-linux is found by listing.
CANN_DIRS = (f"{ASCEND_ROOT}/ascend-toolkit/latest", f"{ASCEND_ROOT}/cann")
CANN_INFO = "ascend_toolkit_install.info"
CONTROL_NODES = ("davinci_manager", "devmm_svm", "hisi_hdc")
DRIVER_MOUNTS = (
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    f"{ASCEND_ROOT}/driver/lib64",
    DRIVER_VERSION_FILE,
    "/etc/ascend_install.info",
)

_HEALTH = {"ok": "ok", "warning": "warning", "alarm": "error", "critical": "error", "error": "error"}


def variant_from_name(name: str | None) -> str | None:
    """Image variant key from a chip name (used when the PCI id is not known)."""
    if not name:
        return None
    n = name.replace("Ascend", "").strip().upper()
    if re.match(r"^910B\d", n):
        return "910b"
    if n.startswith("910_93") or n.startswith("910C"):
        return "a3"
    if n.startswith("310P"):
        return "310p"
    if re.match(r"^910(A|B|PROA|PROB|PREMIUMA)?$", n):
        return "910"
    if n == "310":
        return "310"
    return None


def display_name(name: str) -> str:
    """``910B3`` -> ``Ascend 910B3`` (npu-smi prints the bare chip name)."""
    name = name.strip()
    return name if name.lower().startswith("ascend") else f"Ascend {name}"


def _looks_like_chip(name: str | None) -> bool:
    # gpustack anonymised one sample's names as "xxx"; older 310 drivers say "MiniD" in -m.
    return bool(name) and any(ch.isdigit() for ch in name)


@dataclass
class NpuChip:
    """One chip row of ``npu-smi info`` (an NPU card holds one or more chips)."""

    npu_id: int
    chip_id: int
    name: str | None
    health: str | None
    bus_id: str | None
    device_id: int | None = None      # "Device" column (310/310P layouts): the logic id
    phy_id: int | None = None         # "Phy-ID" column (A3 layouts)
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    memory_kind: str | None = None    # "HBM" or "DDR"
    power_w: float | None = None
    temperature_c: float | None = None
    aicore_pct: float | None = None


@dataclass
class NpuSmiInfo:
    version: str | None
    chips: list[NpuChip]


def _num(token: str | None) -> float | None:
    try:
        return float(token) if token is not None else None
    except ValueError:
        return None


def parse_npu_smi_info(text: str) -> NpuSmiInfo:
    """Parse ``npu-smi info``. Each NPU is a row ``NPU Name | Health | Power Temp ...``
    followed by one row per chip ``Chip [Device|Phy-ID] | Bus-Id | AICore Memory [HBM]``.
    The process table after the device table is ignored."""
    version = None
    chip_header: list[str] | None = None
    hbm_column = False
    saw_npu_header = False
    chips: list[NpuChip] = []
    npu: dict | None = None
    for line in text.splitlines():
        if "Process id" in line or "Process name" in line:
            break
        cells = table_cells(line, complete=True)
        if cells is None:
            continue
        if len(cells) == 1:
            m = re.search(r"Version:\s*(\S+)", cells[0])
            if m and cells[0].lower().startswith("npu-smi"):
                version = m.group(1)
            continue
        first = cells[0]
        if first.startswith("NPU") and "Name" in first:
            saw_npu_header = True
            continue
        if first.startswith("Chip"):
            chip_header = first.split()
            hbm_column = len(cells) > 2 and "HBM" in cells[2]
            continue
        if chip_header is None or len(cells) < 3:
            continue
        tokens = first.split()
        if not tokens or not tokens[0].isdigit():
            continue
        bus = find_bdf(cells[1])
        if bus is None:
            nums = cells[2].split()
            npu = {
                "id": int(tokens[0]),
                "name": " ".join(tokens[1:]) or None,
                "health": _HEALTH.get(cells[1].strip().lower()),
                "power": _num(nums[0]) if nums else None,
                "temp": _num(nums[1]) if len(nums) > 1 else None,
            }
            continue
        if npu is None:
            continue
        chip = NpuChip(npu_id=npu["id"], chip_id=int(tokens[0]), name=npu["name"],
                       health=npu["health"], bus_id=bus, power_w=npu["power"],
                       temperature_c=npu["temp"])
        for pos, col in enumerate(chip_header[1:], start=1):
            if pos < len(tokens) and tokens[pos].isdigit():
                if col.lower() == "device":
                    chip.device_id = int(tokens[pos])
                elif col.lower().startswith("phy"):
                    chip.phy_id = int(tokens[pos])
        pairs = usage_pairs(cells[2])
        aicore = cells[2].split()
        chip.aicore_pct = _num(aicore[0]) if aicore else None
        if pairs:
            if hbm_column and pairs[-1][1] > 0:
                chip.memory_used_mib, chip.memory_total_mib = pairs[-1]
                chip.memory_kind = "HBM"
            else:
                used, total = pairs[0] if hbm_column else pairs[-1]
                if total > 0:
                    chip.memory_used_mib, chip.memory_total_mib = used, total
                    chip.memory_kind = "DDR"
        chips.append(chip)
    if not saw_npu_header and not chips:
        raise ProbeFailure("npu-smi info: output not recognised (no NPU table)")
    return NpuSmiInfo(version=version, chips=chips)


@dataclass
class NpuMapRow:
    npu_id: int
    chip_id: int
    logic_id: int | None
    phy_id: int | None
    name: str | None


def parse_npu_smi_mapping(text: str) -> list[NpuMapRow]:
    """Parse ``npu-smi info -m``: columns ``NPU ID, Chip ID, Chip Logic ID, [Chip Phy-ID],
    Chip Name`` separated by runs of spaces. Rows whose logic id is ``-`` (the MCU) are
    dropped."""
    columns: list[str] | None = None
    rows: list[NpuMapRow] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = re.split(r"\s{2,}", line.strip())
        if columns is None:
            if parts and parts[0] == "NPU ID":
                columns = [p.lower() for p in parts]
            continue
        if len(parts) < len(columns) - 1 or not parts[0].isdigit():
            continue
        values = dict(zip(columns, parts))

        def as_int(key: str) -> int | None:
            v = values.get(key)
            return int(v) if v is not None and v.isdigit() else None

        logic = as_int("chip logic id")
        if logic is None:
            continue
        phy_key = next((c for c in columns if "phy" in c), None)
        rows.append(NpuMapRow(npu_id=int(parts[0]), chip_id=as_int("chip id") or 0, logic_id=logic,
                              phy_id=as_int(phy_key) if phy_key else None,
                              name=values.get("chip name")))
    if columns is None:
        raise ProbeFailure("npu-smi info -m: output not recognised (no 'NPU ID' header)")
    return rows


def cann_version(host: HostView) -> Runtime | None:
    """CANN toolkit version from ``ascend_toolkit_install.info`` (``version=8.0.RC2``)."""
    candidates = list(CANN_DIRS)
    versioned = [d for d in host.listdir(ASCEND_ROOT) if re.fullmatch(r"cann-[\d.]+\w*", d)]
    candidates += [f"{ASCEND_ROOT}/{d}" for d in sorted(versioned, reverse=True)]
    for base in candidates:
        for entry in host.listdir(base):
            if not entry.endswith("-linux"):
                continue
            path = f"{base}/{entry}/{CANN_INFO}"
            text = host.read_text(path)
            if text:
                version = vf.key_values(text).get("version")
                if version:
                    return Runtime(name="cann", version=version, source=path)
    return None


class AscendDriver(ChipDriver):
    vendor = "ascend"
    display_name = "Huawei Ascend"
    backend = "cann"
    pci_vendor_ids = ('19e5',)
    accelerator_classes = (CLASS_PROCESSING_ACCEL,)
    kernel_modules = ('drv_davinci_intf_host', 'drv_devmm_host', 'drv_pcie_host', 'drv_devdrv_host',
                      'drv_pcie_hdc_host', 'drv_davinci_intf', 'drv_devmm')
    tools = ('npu-smi',)
    provision_role = "ascend"
    snapshot_commands = (("npu-smi", "info"), ("npu-smi", "info", "-m"))
    snapshot_paths = (
        DRIVER_VERSION_FILE,
        f"{ASCEND_ROOT}/ascend-toolkit/latest/aarch64-linux/{CANN_INFO}",
        f"{ASCEND_ROOT}/ascend-toolkit/latest/x86_64-linux/{CANN_INFO}",
        f"{ASCEND_ROOT}/cann/aarch64-linux/{CANN_INFO}",
        f"{ASCEND_ROOT}/cann/x86_64-linux/{CANN_INFO}",
        "/etc/ascend_install.info",
    )
    # Memory per chip from public specs; npu-smi's figure replaces it when the tool runs.
    # 910B: 64 GB HBM on 910B1/B2/B3 (910B4 has 32 GB: only npu-smi tells them apart).
    # 310P: 24 GB per chip (Atlas 300I Pro). Atlas 300I Duo (96 GB card, two 310P3 chips of
    # 48 GB): 44280 MiB per chip, the memory GPUStack's runtime reports for the two chips of its
    # 310P3 sample (gpustack/runtime detector samples: 44280 and 43693 MiB; the larger is used).
    products: dict[str, Product] = {
        "d100": Product("Ascend 310", 8192, "ascend310", "310"),
        "d500": Product("Ascend 310P", 24576, "ascend310p", "310p"),
        "d500:0200:0100": Product("Ascend 310P (Atlas 300I Pro)", 24576, "ascend310p", "310p"),
        "d500:0200:0110": Product("Ascend 310P (Atlas 300I Duo)", 44280, "ascend310p", "310p"),
        "d801": Product("Ascend 910", 32768, "ascend910", "910"),
        "d802": Product("Ascend 910B", 65536, "ascend910b", "910b"),
        "d803": Product("Ascend 910_93 (910C)", 65536, "ascend910_93", "a3"),
    }

    # ---- layer a ---------------------------------------------------------------------
    def claims(self, dev: PciDevice) -> bool:
        if dev.vendor not in self.pci_vendor_ids or dev.class_prefix != CLASS_PROCESSING_ACCEL:
            return False
        return self.lookup_product(dev) is not None or dev.device.startswith("d")

    # ---- layer b ---------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = super().driver_state(host)
        text = host.read_text(DRIVER_VERSION_FILE)
        if text:
            kv = vf.key_values(text)
            version = kv.get("Version") or kv.get("package_version")
            if version:
                state.driver_version = version
                state.driver_version_source = DRIVER_VERSION_FILE
        davinci = list(vf.numbered_dev_nodes(host, r"davinci(\d+)").values())
        state.dev_nodes = davinci + vf.existing(host, [f"/dev/{c}" for c in CONTROL_NODES])
        if davinci:
            state.driver_loaded = True
        state.runtime = cann_version(host)
        if state.driver_version and not state.driver_loaded:
            state.hints.append(
                f"Ascend driver {state.driver_version} is installed but its kernel modules are not "
                "loaded and no /dev/davinci* exists: reboot or reinstall the driver package")
        return state

    def apply_driver_state(self, accs: list[Accelerator], state: DriverState) -> None:
        super().apply_driver_state(accs, state)
        if state.driver_version and not state.driver_loaded:
            for acc in accs:
                acc.health = "warning"
                for hint in state.hints:
                    if hint not in acc.hints:
                        acc.hints.append(hint)

    # ---- layer c ---------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        info = self.run_listing(host, ["npu-smi", "info"], steps, parse_npu_smi_info)
        if info is None:
            return accs
        add_step_detail(steps, f"{len(info.chips)} chip(s)")
        rows = self.run_listing(host, ["npu-smi", "info", "-m"], steps, parse_npu_smi_mapping, required=False)
        mapping = {(r.npu_id, r.chip_id): r for r in rows or []}
        listed = [self._tool_device(chip, mapping.get((chip.npu_id, chip.chip_id)), usage, i)
                  for i, chip in enumerate(info.chips)]
        driver_version = info.version

        def make_acc(td: ToolDevice, index: int) -> Accelerator:
            return Accelerator(vendor=self.vendor, model=td.name or "Ascend NPU", index=index,
                               backend=self.backend, variant=variant_from_name(td.name),
                               sources={"model": "npu-smi info"})

        def apply(acc: Accelerator, td: ToolDevice) -> None:
            if td.name:
                acc.model = td.name
                acc.sources["model"] = td.extra.get("name_source", "npu-smi info")
                acc.variant = acc.variant or variant_from_name(td.name)
            if td.memory_mib:
                acc.memory_mib = td.memory_mib
                acc.sources["memory_mib"] = "npu-smi info"
            if td.physical_id is not None:
                acc.physical_id = td.physical_id
                acc.sources["physical_id"] = td.extra["physical_id_source"]
                acc.dev_nodes = [f"/dev/davinci{td.physical_id}"]
            if not acc.driver_version and driver_version:
                acc.driver_version = driver_version
                acc.sources["driver_version"] = "npu-smi info"

        return merge_listing(self, host, accs, listed, tool="npu-smi info", usage=usage, steps=steps,
                             make_acc=make_acc, apply=apply)

    @staticmethod
    def _tool_device(chip: NpuChip, row: NpuMapRow | None, usage: bool, position: int) -> ToolDevice:
        logic = row.logic_id if row else chip.device_id
        if row and row.phy_id is not None:
            phy, phy_source = row.phy_id, "npu-smi info -m (Chip Phy-ID)"
        elif chip.phy_id is not None:
            phy, phy_source = chip.phy_id, "npu-smi info (Phy-ID)"
        elif logic is not None:
            phy, phy_source = logic, "npu-smi logic id (no Phy-ID column: assumed equal)"
        else:
            phy, phy_source = None, ""
        name, name_source = None, "npu-smi info"
        if _looks_like_chip(chip.name):
            name = display_name(chip.name or "")
        elif row and _looks_like_chip(row.name):
            name, name_source = display_name(row.name or ""), "npu-smi info -m"
        td = ToolDevice(index=logic if logic is not None else position, bus_id=chip.bus_id, name=name,
                        memory_mib=chip.memory_total_mib, health=chip.health, physical_id=phy,
                        extra={"physical_id_source": phy_source, "name_source": name_source})
        if usage:
            td.usage = Usage(utilization_pct=chip.aicore_pct, memory_used_mib=chip.memory_used_mib,
                             temperature_c=chip.temperature_c, power_w=chip.power_w, source="npu-smi info")
        return td

    # ---- containers ------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """``/dev/davinci<physical id>`` per NPU plus the control nodes and the driver files
        vllm-ascend/MindIE expect (read-only). ``ASCEND_VISIBLE_DEVICES`` carries physical ids
        (what the Ascend Docker Runtime reads, if installed); inside the container the NPUs
        are numbered from 0."""
        ids: list[int] = []
        for acc in accs:
            pid = acc.physical_id if acc.physical_id is not None else acc.index
            if pid not in ids:
                ids.append(pid)
        devices = [f"/dev/davinci{i}:/dev/davinci{i}:rwm" for i in ids]
        devices += [f"/dev/{n}:/dev/{n}:rwm" for n in CONTROL_NODES]
        return ContainerAccess(
            devices=devices,
            env={"ASCEND_VISIBLE_DEVICES": ",".join(str(i) for i in ids)},
            volumes={p: p for p in DRIVER_MOUNTS},
        )
