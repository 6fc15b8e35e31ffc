"""AMD Instinct / Radeon GPUs (backend ``rocm``).

Layer a: PCI ``1002`` functions of class ``0302``/``0380``/``1200`` (Instinct parts show up as
display controller or processing accelerator), and the ROCm-capable Radeon parts in the product
table even with class ``0300`` (VGA). AMD's CPU and chipset functions use vendor ``1022`` and
are never looked at; ``1002`` audio functions (class ``0403``) are filtered by class. The DRM
nodes of each GPU come from ``/sys/bus/pci/devices/<bdf>/drm/`` (``cardN``, ``renderDN``).

Layer b: ``amdgpu`` module and ``/sys/module/amdgpu/version`` (the DKMS driver; an in-tree
driver has none and reports the kernel release), ``/dev/kfd`` and ``/dev/dri/renderD*``, ROCm
from ``/opt/rocm/.info/version`` (build suffix ``-NN`` dropped) or the newest ``/opt/rocm-X.Y.Z``.

Layer c: ``amd-smi list`` (index, bus id, UUID), ``amd-smi static --asic`` only for products the
table does not know, and ``rocm-smi ... --json`` (names, VRAM, bus, usage) when amd-smi is
missing or usage is requested. The whitespace "concise" tables of ``rocm-smi`` (both layouts)
and Hygon's ``hy-smi`` share :func:`parse_smi_concise`.
"""

from __future__ import annotations

import json
import re

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep, Runtime, Usage
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
    resolve_tool,
)
from chip_drivers.smi_table import first_number
from chip_drivers.tool_devices import ToolDevice, merge_listing

ROCM_BIN_DIRS = ("/opt/rocm/bin",)
ROCM_VERSION_FILES = ("/opt/rocm/.info/version", "/opt/rocm/.info/version-dev")
# ROCm and DTK version files hold "6.2.4-120" / "24.04.3": major.minor[.patch], build dropped.
RUNTIME_VERSION_RE = re.compile(r"(\d+\.\d+(?:\.\d+)?)")
# One rocm-smi call gives names, bus ids, VRAM and usage (usage fields are read only on request).
ROCM_SMI_ARGS = ("--showproductname", "--showbus", "--showmeminfo", "vram", "--showuse",
                 "--showtemp", "--showpower", "--json")

_GFX_RE = re.compile(r"^gfx[0-9a-f]{3,4}$")


# ---- parsers ------------------------------------------------------------------------------

def _indented_blocks(text: str, head: str) -> list[tuple[int, dict[str, str]]]:
    """``GPU: N`` blocks of amd-smi text output -> (N, {"KEY": value, "SECTION.KEY": value})."""
    blocks: list[tuple[int, dict[str, str]]] = []
    current: dict[str, str] | None = None
    section: list[tuple[int, str]] = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        m = re.match(rf"^{head}:\s*(\d+)\s*$", raw)
        if m:
            current = {}
            section = []
            blocks.append((int(m.group(1)), current))
            continue
        if current is None:
            continue
        m = re.match(r"^(\s+)([A-Za-z0-9_ ]+?):\s*(.*)$", raw)
        if not m:
            continue
        indent, key, value = len(m.group(1)), m.group(2).strip(), m.group(3).strip()
        while section and section[-1][0] >= indent:
            section.pop()
        if not value:
            section.append((indent, key))
            continue
        path = ".".join([s for _, s in section] + [key])
        current.setdefault(path, value)
        current.setdefault(key, value)
    return blocks


def parse_amd_smi_list(text: str) -> list[ToolDevice]:
    """``amd-smi list``: ``GPU: N`` then ``BDF``, ``UUID`` (and KFD_ID/NODE_ID/PARTITION_ID).
    The UUID embeds the PCI device id (``afff74a1-...`` -> ``74a1``)."""
    blocks = _indented_blocks(text, "GPU")
    if not blocks:
        raise ProbeFailure("amd-smi list: output not recognised (no 'GPU: N' entries)")
    out = []
    for index, fields in blocks:
        uuid = fields.get("UUID")
        td = ToolDevice(index=index, bus_id=fields.get("BDF"), uuid=uuid)
        if uuid and re.match(r"^[0-9a-f]{8}-", uuid):
            td.extra["device_id"] = uuid[4:8]
        for key in ("KFD_ID", "NODE_ID", "PARTITION_ID"):
            if key in fields:
                td.extra[key.lower()] = fields[key]
        out.append(td)
    return out


def parse_amd_smi_static(text: str) -> dict[int, dict[str, str]]:
    """``amd-smi static --asic [--vram]``: per GPU index, MARKET_NAME, DEVICE_ID, VRAM size."""
    blocks = _indented_blocks(text, "GPU")
    if not blocks:
        raise ProbeFailure("amd-smi static: output not recognised (no 'GPU: N' entries)")
    out: dict[int, dict[str, str]] = {}
    for index, fields in blocks:
        info = {}
        if fields.get("MARKET_NAME"):
            info["name"] = fields["MARKET_NAME"]
        if fields.get("DEVICE_ID"):
            info["device_id"] = fields["DEVICE_ID"].lower().removeprefix("0x")
        size = fields.get("VRAM.SIZE")
        if size:
            mib = first_number(size)
            if mib is not None:
                info["memory_mib"] = str(int(mib * 1024) if "GB" in size.upper() else int(mib))
        out[index] = info
    return out


def _percent(value) -> float | None:
    return first_number(str(value)) if value not in (None, "", "N/A") else None


def parse_rocm_smi_json(text: str) -> tuple[list[ToolDevice], str | None]:
    """``rocm-smi ... --json`` (ROCm, and DTK's rocm-smi on Hygon): ``{"cardN": {...}}``.

    Returns devices (index N, name, bus, VRAM total, usage) and the driver version when the
    ``system`` entry carries one."""
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else None
    except ValueError as exc:
        raise ProbeFailure(f"rocm-smi --json: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ProbeFailure("rocm-smi --json: output not recognised (no JSON object)")
    devices: list[ToolDevice] = []
    driver = None
    for key, fields in data.items():
        if not isinstance(fields, dict):
            continue
        if key == "system":
            driver = fields.get("Driver version") or driver
            continue
        m = re.fullmatch(r"card(\d+)", key)
        if not m:
            continue
        td = ToolDevice(index=int(m.group(1)))
        td.name = fields.get("Card Series") or fields.get("Device Name")
        dev_id = fields.get("Device ID") or fields.get("Card Model")
        if dev_id:
            td.extra["device_id"] = str(dev_id).lower().removeprefix("0x")
        if _GFX_RE.match(str(fields.get("GFX Version", ""))):
            td.extra["gfx"] = fields["GFX Version"]
        if fields.get("Card Vendor"):
            td.extra["vendor"] = fields["Card Vendor"]
        if fields.get("PCI Bus"):
            td.bus_id = normalize_bdf(fields["PCI Bus"])
        total_b, used_b = fields.get("VRAM Total Memory (B)"), fields.get("VRAM Total Used Memory (B)")
        total_m, used_m = fields.get("vram Total Memory (MiB)"), fields.get("vram Total Used Memory (MiB)")
        used = None
        if total_b not in (None, "N/A"):
            td.memory_mib = int(int(total_b) // 2**20)
            used = int(int(used_b) // 2**20) if used_b not in (None, "N/A") else None
        elif total_m not in (None, "N/A"):
            td.memory_mib = int(float(total_m))
            used = int(float(used_m)) if used_m not in (None, "N/A") else None
        util = next((fields[k] for k in ("GPU use (%)", "DCU use (%)", "HCU use (%)") if k in fields), None)
        temp = next((fields[k] for k in fields if k.startswith("Temperature (Sensor edge)")),
                    next((fields[k] for k in fields if k.startswith("Temperature (Sensor junction)")), None))
        power = next((fields[k] for k in ("Average Graphics Package Power (W)",
                                          "Current Socket Graphics Package Power (W)") if k in fields), None)
        td.usage = Usage(utilization_pct=_percent(util), memory_used_mib=used,
                         temperature_c=_percent(temp), power_w=_percent(power), source="rocm-smi")
        devices.append(td)
    if not devices and driver is None:
        raise ProbeFailure("rocm-smi --json: no 'cardN' entries")
    return devices, driver


def parse_smi_concise(text: str, tool: str) -> list[ToolDevice]:
    """The whitespace tables of ``rocm-smi`` (legacy ``GPU Temp AvgPwr ...`` and ROCm 6.4
    ``Device Node IDs ...``) and ``hy-smi`` (``DCU``/``HCU Temp AvgPwr ... VRAM% HCU%``).

    Header names are matched to data tokens; parenthesised sub-headers are dropped and
    comma-continued values (``0x66a1,   29182``) are re-joined. Usage goes in ``usage``;
    ``VRAM%`` is kept in ``extra`` (MiB need the total)."""
    header: list[str] | None = None
    out: list[ToolDevice] = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or set(line.strip()) <= set("="):
            continue
        if header is None:
            if tokens[0] in ("GPU", "Device", "DCU", "HCU") and len(tokens) > 3:
                header = [t for t in tokens if not (t.startswith("(") or t.endswith(")"))]
            continue
        if not tokens[0].isdigit():
            continue
        values: list[str] = []
        for tok in tokens:
            if values and values[-1].endswith(","):
                values[-1] = f"{values[-1]} {tok}"
            else:
                values.append(tok)
        if len(values) != len(header):
            continue
        row = dict(zip(header, values))
        td = ToolDevice(index=int(values[0]))
        ids = row.get("IDs")
        if ids and ids.lower().startswith("0x"):
            td.extra["device_id"] = ids.split(",")[0].lower().removeprefix("0x")
        util = next((row[k] for k in ("GPU%", "HCU%", "DCU%") if k in row), None)
        power = row.get("AvgPwr") or row.get("Power")
        if row.get("VRAM%") is not None:
            td.extra["vram_pct"] = row["VRAM%"]
        td.usage = Usage(utilization_pct=first_number(util), temperature_c=first_number(row.get("Temp")),
                         power_w=first_number(power), power_limit_w=first_number(row.get("PwrCap")),
                         source=tool)
        out.append(td)
    if header is None:
        raise ProbeFailure(f"{tool}: output not recognised (no device table header)")
    return out


class AmdDriver(ChipDriver):
    vendor = "amd"
    display_name = "AMD"
    backend = "rocm"
    pci_vendor_ids = ('1002',)
    accelerator_classes = (CLASS_3D, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL)
    kernel_modules = ('amdgpu',)
    tools = ('amd-smi', 'rocm-smi')
    provision_role = "amd"
    drm_devices = True
    snapshot_commands = (("amd-smi", "list"), ("amd-smi", "static", "--asic"), ("rocm-smi", *ROCM_SMI_ARGS))
    snapshot_paths = ("/opt/rocm/.info/version", "/sys/module/amdgpu/version")
    # Memory per device (per GCD for MI250/MI250X/MI210, which show one PCI function per GCD).
    products: dict[str, Product] = {
        "74a0": Product("AMD Instinct MI300A", 131072, "gfx942", compute_capability="gfx942"),
        "74a1": Product("AMD Instinct MI300X", 196608, "gfx942", compute_capability="gfx942"),
        "74a2": Product("AMD Instinct MI308X", 196608, "gfx942", compute_capability="gfx942"),
        "74a5": Product("AMD Instinct MI325X", 262144, "gfx942", compute_capability="gfx942"),
        "74a9": Product("AMD Instinct MI300X HF", 196608, "gfx942", compute_capability="gfx942"),
        "74bd": Product("AMD Instinct MI300X HF", 196608, "gfx942", compute_capability="gfx942"),
        "74b5": Product("AMD Instinct MI300X VF", 196608, "gfx942", compute_capability="gfx942"),
        "74b9": Product("AMD Instinct MI325X VF", 262144, "gfx942", compute_capability="gfx942"),
        "75a0": Product("AMD Instinct MI350X", 294912, "gfx950", compute_capability="gfx950"),
        "75a3": Product("AMD Instinct MI355X", 294912, "gfx950", compute_capability="gfx950"),
        "7408": Product("AMD Instinct MI250X", 65536, "gfx90a", compute_capability="gfx90a"),
        "740c": Product("AMD Instinct MI250X/MI250", 65536, "gfx90a", compute_capability="gfx90a"),
        "740f": Product("AMD Instinct MI210", 65536, "gfx90a", compute_capability="gfx90a"),
        "738c": Product("AMD Instinct MI100", 32768, "gfx908", compute_capability="gfx908"),
        "738e": Product("AMD Instinct MI100", 32768, "gfx908", compute_capability="gfx908"),
        # MI50 ships with 16 or 32 GB: memory comes from the tool.
        "66a1": Product("AMD Instinct MI50 / Radeon Pro VII", None, "gfx906", compute_capability="gfx906"),
        # ROCm-supported Radeon boards (class VGA): reported because they are in this table.
        "7448": Product("AMD Radeon PRO W7900", 49152, "gfx1100", compute_capability="gfx1100"),
        "744c": Product("AMD Radeon RX 7900 XTX/XT", None, "gfx1100", compute_capability="gfx1100"),
        "747e": Product("AMD Radeon RX 7700 XT / 7800 XT", None, "gfx1101", compute_capability="gfx1101"),
    }

    def allow_vga(self, dev: PciDevice) -> bool:
        return True   # only reached for devices in the product table (see ChipDriver.claims)

    # ---- layer b ---------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = super().driver_state(host)
        if state.driver_loaded and not state.driver_version:
            kernel = host.read_value("/proc/sys/kernel/osrelease")
            if kernel:
                state.driver_version = kernel
                state.driver_version_source = "in-tree amdgpu (kernel release)"
        if state.driver_loaded:
            state.dev_nodes = vf.existing(host, ("/dev/kfd",)) + vf.render_nodes(host)
            if not host.exists("/dev/kfd"):
                state.hints.append("amdgpu is loaded but /dev/kfd is missing: ROCm cannot use the GPUs")
        state.runtime = self.rocm_version(host)
        return state

    @staticmethod
    def rocm_version(host: HostView) -> Runtime | None:
        return vf.runtime("rocm", vf.version_from_files(host, ROCM_VERSION_FILES, RUNTIME_VERSION_RE)
                          or vf.newest_versioned_dir(host, "/opt", "rocm"))

    # ---- layer c ---------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        tool = "amd-smi list"
        amd_smi = resolve_tool(host, "amd-smi", ROCM_BIN_DIRS)
        listed = self.run_listing(host, [amd_smi, "list"], steps, parse_amd_smi_list)
        if listed is not None:
            add_step_detail(steps, f"{len(listed)} GPU(s)")
            known = {a.pci_bdf for a in accs if a.sources.get("model") == "product-table"}
            if any(td.bus_id and normalize_bdf(td.bus_id) not in known for td in listed):
                self._static_names(host, amd_smi, listed, steps)
        rocm: list[ToolDevice] | None = None
        if listed is None or usage:
            rocm_smi = resolve_tool(host, "rocm-smi", ROCM_BIN_DIRS)
            parsed = self.run_listing(host, [rocm_smi, *ROCM_SMI_ARGS], steps, parse_rocm_smi_json,
                                      required=listed is None)
            rocm = parsed[0] if parsed is not None else None
        if listed is None and rocm is None:
            return accs
        if listed is None:
            tool = "rocm-smi"
            listed = [td for td in rocm or [] if self._looks_amd(td)]
        elif rocm:
            by_bus = {td.bus_id: td for td in rocm if td.bus_id}
            for td in listed:
                other = by_bus.get(normalize_bdf(td.bus_id)) if td.bus_id else None
                if other:
                    td.usage = other.usage
                    if not td.memory_mib and other.memory_mib:
                        td.memory_mib = other.memory_mib
                        td.extra["memory_source"] = "rocm-smi"
                    td.name = td.name or other.name

        def make_acc(td: ToolDevice, index: int) -> Accelerator:
            product = self.products.get(td.extra.get("device_id", ""))
            acc = Accelerator(vendor=self.vendor, model=product.name if product else (td.name or "AMD GPU"),
                              index=index, backend=self.backend,
                              sources={"model": "product-table" if product else tool})
            if product:
                acc.memory_mib, acc.arch = product.memory_mib, product.arch
                acc.compute_capability = product.compute_capability
                acc.pci_id = f"1002:{td.extra['device_id']}"
            return acc

        def apply(acc: Accelerator, td: ToolDevice) -> None:
            if td.name and acc.sources.get("model") != "product-table":
                acc.model = td.name if td.name.upper().startswith("AMD") else f"AMD {td.name}"
                acc.sources["model"] = tool
            if td.memory_mib:
                acc.memory_mib = td.memory_mib
                acc.sources["memory_mib"] = td.extra.get("memory_source", tool)
            if td.uuid:
                acc.uuid = td.uuid
                acc.sources["uuid"] = tool
            if td.extra.get("gfx") and not acc.arch:
                acc.arch = acc.compute_capability = td.extra["gfx"]
            acc.health = "ok"

        return merge_listing(self, host, accs, listed, tool=tool, usage=usage, steps=steps,
                             make_acc=make_acc, apply=apply)

    def _static_names(self, host: HostView, amd_smi: str, listed: list[ToolDevice],
                      steps: list[ProbeStep]) -> None:
        """Names (and VRAM) from ``amd-smi static --asic`` for GPUs the table lacks."""
        static = self.run_listing(host, [amd_smi, "static", "--asic"], steps, parse_amd_smi_static,
                                  required=False)
        if static is None:
            return
        for td in listed:
            info = static.get(td.index if td.index is not None else -1, {})
            td.name = td.name or info.get("name")
            if info.get("memory_mib"):
                td.memory_mib = int(info["memory_mib"])
                td.extra["memory_source"] = "amd-smi static"
            if info.get("device_id"):
                td.extra.setdefault("device_id", info["device_id"])

    def _looks_amd(self, td: ToolDevice) -> bool:
        vendor = td.extra.get("vendor", "")
        if vendor:
            return "advanced micro devices" in vendor.lower() or vendor.upper().startswith("AMD")
        return td.extra.get("device_id", "") in self.products

    # ---- containers ------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """``/dev/kfd`` plus each GPU's own ``cardN``/``renderDN`` (ROCm only uses GPUs whose
        render node it can open, so nothing else is visible and no env is needed). When a
        GPU's DRM nodes are unknown, all of ``/dev/dri`` is passed and ``HIP_VISIBLE_DEVICES``
        selects by index. Group ``video`` only: naming ``render`` makes Docker fail on images
        that lack that group, and containers run as root."""
        devices = ["/dev/kfd:/dev/kfd:rwm"]
        env: dict[str, str] = {}
        if accs and all(acc.dev_nodes for acc in accs):
            for acc in accs:
                devices += [f"{n}:{n}:rwm" for n in acc.dev_nodes]
        else:
            devices.append("/dev/dri:/dev/dri:rwm")
            env["HIP_VISIBLE_DEVICES"] = ",".join(str(a.index) for a in accs)
        return ContainerAccess(devices=devices, env=env, group_add=["video"])
