"""NVIDIA accelerators (backend ``cuda``).

Layer a: PCI ids from the product table below (name, memory as NVML/nvidia-smi report it,
compute capability), so an installer knows the cards before any driver exists.
Layer b: ``/proc/driver/nvidia/version``, ``/sys/module/nvidia/version``, per-GPU
``/proc/driver/nvidia/gpus/<bdf>/information`` (model, UUID, minor), ``/dev/nvidia*``; the CUDA
version the driver supports from the driver branch (``DRIVER_CUDA``) or, failing that, the
CUDA toolkit's version files.
Layer c: NVML through nvidia-ml-py when the host is this machine (``host.native``); else,
or when the NVML library cannot be loaded, ``nvidia-smi -q -x`` (also what a snapshot
replays). Tool devices are matched to PCI devices by normalized bus id; the tool's index wins.

Facts: ``../shared/reference/chips.md`` (PCI ids, /dev nodes, container access).
"""

from __future__ import annotations

import re
import time

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep, Runtime, Usage
from appliance.inventory.pci import normalize_bdf
from chip_drivers.base import (
    CLASS_3D,
    CLASS_VGA,
    ChipDriver,
    ContainerAccess,
    DriverState,
    ProbeFailure,
    Product,
    loaded_modules,
)

SMI_XML_ARGV = ("nvidia-smi", "-q", "-x")
CUDA_VERSION_FILES = ("/usr/local/cuda/version.json", "/usr/local/cuda/version.txt")

# Device id -> product. Names are what NVML/nvidia-smi print where known (else the pci.ids
# product name, prefixed "NVIDIA"); memory_mib is the total NVML reports for that product
# (H200: 150754820096 bytes = 143771 MiB, from the h200-1gpu capture; the H100 80GB value
# 81559 MiB is in the tool samples; the others are the values these products commonly report).
# NVML or nvidia-smi replaces name and memory whenever either runs. Where no NVML figure is
# known, memory is derived as the comment says (from the pci.ids name: N GB -> N x 1024 MiB),
# or left unknown (None) rather than invented. Ids: the project's pci.ids copy
# (tests/fixtures/pci/pci.ids, version 2026.08.22) unless a comment says otherwise;
# tests/detect/test_pci_ids_tables.py checks every row against it.
_HOPPER, _AMPERE, _ADA, _BLACKWELL = "hopper", "ampere", "ada", "blackwell"
PRODUCTS: dict[str, Product] = {
    "2330": Product("NVIDIA H100 80GB HBM3", 81559, _HOPPER, "h100", "9.0"),
    "2331": Product("NVIDIA H100 PCIe", 81559, _HOPPER, "h100", "9.0"),
    "2321": Product("NVIDIA H100 NVL", 95830, _HOPPER, "h100", "9.0"),   # pci.ids "H100L 94GB"
    # pci.ids "H100 SXM5 64GB" / "H100 SXM5 96GB" / "H100 96GB": memory from the name (64/96 x 1024)
    "2337": Product("NVIDIA H100 SXM5 64GB", 65536, _HOPPER, "h100", "9.0"),
    "2338": Product("NVIDIA H100 SXM5 96GB", 98304, _HOPPER, "h100", "9.0"),
    "233d": Product("NVIDIA H100 96GB", 98304, _HOPPER, "h100", "9.0"),
    # pci.ids "H100 SXM5 94GB": the 94 GB of the H100 NVL (2321), so its figure
    "2339": Product("NVIDIA H100 SXM5 94GB", 95830, _HOPPER, "h100", "9.0"),
    "2324": Product("NVIDIA H800", 81559, _HOPPER, "h800", "9.0"),
    # pci.ids "H800 PCIe": 80 GB like the H100 PCIe (2331), so its figure (unverified for the H800)
    "2322": Product("NVIDIA H800 PCIe", 81559, _HOPPER, "h800", "9.0"),
    # pci.ids "H800L 94GB": the 94 GB of the H100 NVL (2321), so its figure
    "233a": Product("NVIDIA H800L 94GB", 95830, _HOPPER, "h800", "9.0"),
    "2329": Product("NVIDIA H20", 97871, _HOPPER, "h20", "9.0"),
    # pci.ids "H20 HBM3e": the 141 GB H20 (issue 18). Its HBM3e stack is the H200's 141 GB, so the
    # H200's NVML figure (143771 MiB, h200-1gpu capture) is used; not verified on an H20 HBM3e.
    "232c": Product("NVIDIA H20 141GB HBM3e", 143771, _HOPPER, "h20", "9.0"),
    # pci.ids "H20 NVL16" (two ids): pci.ids gives no memory and the 96 GB and 141 GB H20 cannot
    # be told apart by name, so memory is unknown until NVML/nvidia-smi runs.
    "230c": Product("NVIDIA H20 NVL16", None, _HOPPER, "h20", "9.0"),
    "230e": Product("NVIDIA H20 NVL16", None, _HOPPER, "h20", "9.0"),
    "2335": Product("NVIDIA H200", 143771, _HOPPER, "h200", "9.0"),
    "233b": Product("NVIDIA H200 NVL", 143771, _HOPPER, "h200", "9.0"),
    "20b0": Product("NVIDIA A100-SXM4-40GB", 40960, _AMPERE, "a100", "8.0"),
    "20b2": Product("NVIDIA A100-SXM4-80GB", 81920, _AMPERE, "a100", "8.0"),
    "20b1": Product("NVIDIA A100-PCIE-40GB", 40960, _AMPERE, "a100", "8.0"),
    "20b5": Product("NVIDIA A100 80GB PCIe", 81920, _AMPERE, "a100", "8.0"),
    "20f3": Product("NVIDIA A800-SXM4-80GB", 81920, _AMPERE, "a800", "8.0"),
    # pci.ids "A800 SXM4 40GB" / "A800 80GB PCIe" / "A800 40GB PCIe": the A100 figures of the
    # same memory size (20b0, 20b5, 20b1)
    "20bd": Product("NVIDIA A800-SXM4-40GB", 40960, _AMPERE, "a800", "8.0"),
    "20f5": Product("NVIDIA A800 80GB PCIe", 81920, _AMPERE, "a800", "8.0"),
    "20f6": Product("NVIDIA A800 40GB PCIe", 40960, _AMPERE, "a800", "8.0"),
    "26b9": Product("NVIDIA L40S", 46068, _ADA, "l40s", "8.9"),
    "26b5": Product("NVIDIA L40", 46068, _ADA, "l40", "8.9"),
    "26b7": Product("NVIDIA L20", 46068, _ADA, "l20", "8.9"),
    "26ba": Product("NVIDIA L20", 46068, _ADA, "l20", "8.9"),
    "27b8": Product("NVIDIA L4", 23034, _ADA, "l4", "8.9"),
    # Blackwell. Compute capability: 10.0 for B200/GB200 (and the B100, same GB100 generation),
    # 10.3 for B300/GB300, 12.0 for RTX PRO Blackwell (CUDA programming guide's table).
    "2901": Product("NVIDIA B200", 183359, _BLACKWELL, "b200", "10.0"),
    # pci.ids "HGX B200 168GB": memory from the name (168 x 1024)
    "2909": Product("NVIDIA HGX B200 168GB", 172032, _BLACKWELL, "b200", "10.0"),
    # pci.ids "TS4 / B100" (GB100) and "B100" (GB102); "HGX GB200"; "B300 SXM6 AC"; "GB300" (two
    # ids): no memory figure in pci.ids or in a source this project holds -> unknown until NVML runs.
    "2920": Product("NVIDIA B100", None, _BLACKWELL, "b100", "10.0"),
    "29bc": Product("NVIDIA B100", None, _BLACKWELL, "b100", "10.0"),
    "2941": Product("NVIDIA GB200", None, _BLACKWELL, "gb200", "10.0"),
    "3182": Product("NVIDIA B300 SXM6 AC", None, _BLACKWELL, "b300", "10.3"),
    "31c2": Product("NVIDIA GB300", None, _BLACKWELL, "gb300", "10.3"),
    "31c3": Product("NVIDIA GB300", None, _BLACKWELL, "gb300", "10.3"),
    # pci.ids "RTX PRO 6000 Blackwell Server Edition": 97887 MiB total in a public nvidia-smi
    # host query of that board (96 GB GDDR7); the Workstation and Max-Q editions carry the same
    # 96 GB and are given the same figure (unverified for them).
    "2bb5": Product("NVIDIA RTX PRO 6000 Blackwell Server Edition", 97887, _BLACKWELL, "rtx-pro-6000", "12.0"),
    "2bb1": Product("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", 97887, _BLACKWELL, "rtx-pro-6000",
                    "12.0"),
    "2bb4": Product("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", 97887, _BLACKWELL,
                    "rtx-pro-6000", "12.0"),
    # pci.ids "RTX PRO 6000D Blackwell Workstation Edition" / "... Max-Q ..." / "RTX 6000D": the
    # China-market boards; their memory is not in a source this project holds -> unknown.
    "2bb2": Product("NVIDIA RTX PRO 6000D Blackwell Workstation Edition", None, _BLACKWELL, "rtx-pro-6000d",
                    "12.0"),
    "2bbc": Product("NVIDIA RTX PRO 6000D Blackwell Max-Q Workstation Edition", None, _BLACKWELL,
                    "rtx-pro-6000d", "12.0"),
    "2bb9": Product("NVIDIA RTX 6000D", None, _BLACKWELL, "rtx-pro-6000d", "12.0"),
}

# Driver branch -> the CUDA version that driver supports (what nvidia-smi prints as
# "CUDA Version"). Used only when neither NVML nor nvidia-smi answers.
DRIVER_CUDA: dict[int, str] = {
    580: "13.0", 575: "12.9", 570: "12.8", 565: "12.7", 560: "12.6", 555: "12.5", 550: "12.4",
    545: "12.3", 535: "12.2", 530: "12.1", 525: "12.0", 520: "11.8", 515: "11.7", 510: "11.6",
    495: "11.5", 470: "11.4", 465: "11.3", 460: "11.2", 455: "11.1", 450: "11.0",
}

_PROC_VERSION_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)")
_VERSION_RE = re.compile(r"(\d+\.\d+(?:\.\d+)?)")


class NvmlUnavailable(Exception):
    """The NVML library cannot be loaded or initialised (no driver, not installed)."""


class NvidiaDriver(ChipDriver):
    vendor = "nvidia"
    display_name = "NVIDIA"
    backend = "cuda"
    pci_vendor_ids = ('10de',)
    accelerator_classes = (CLASS_3D, CLASS_VGA)
    kernel_modules = ('nvidia',)
    tools = ('nvidia-smi',)
    provision_role = "nvidia"
    products: dict[str, Product] = PRODUCTS
    snapshot_commands = (SMI_XML_ARGV, ("nvidia-smi", "-L"))
    snapshot_paths = ("/proc/driver/nvidia", "/sys/module/nvidia/version") + CUDA_VERSION_FILES
    tool_timeout_s = 10.0

    def allow_vga(self, dev) -> bool:
        return True

    # ---- layer b -------------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = DriverState()
        t0 = time.monotonic()
        loaded = loaded_modules(host)
        state.modules = [m for m in ("nvidia", "nvidia_uvm", "nvidia_drm", "nvidia_modeset") if m in loaded]
        proc_version = host.read_text("/proc/driver/nvidia/version")
        if proc_version:
            m = _PROC_VERSION_RE.search(proc_version) or _VERSION_RE.search(proc_version)
            if m:
                state.driver_version = m.group(1)
                state.driver_version_source = "/proc/driver/nvidia/version"
        if not state.driver_version:
            value = host.read_value("/sys/module/nvidia/version")
            if value and _VERSION_RE.fullmatch(value):
                state.driver_version = value
                state.driver_version_source = "/sys/module/nvidia/version"
        state.driver_loaded = "nvidia" in state.modules or proc_version is not None
        state.dev_nodes = [f"/dev/{n}" for n in host.listdir("/dev") if n.startswith("nvidia")]
        for bdf in host.listdir("/proc/driver/nvidia/gpus"):
            info = _parse_information(host.read_text(f"/proc/driver/nvidia/gpus/{bdf}/information") or "")
            if not info:
                continue
            key = normalize_bdf(info.get("Bus Location") or bdf)
            entry: dict = {"source": f"/proc/driver/nvidia/gpus/{bdf}/information"}
            if info.get("Model"):
                entry["model"] = info["Model"]
            uuid = info.get("GPU UUID")
            if uuid and uuid.startswith("GPU-"):
                entry["uuid"] = uuid
            minor = info.get("Device Minor")
            if minor and minor.isdigit():
                entry["minor"] = int(minor)
                if f"/dev/nvidia{minor}" in state.dev_nodes:
                    entry["dev_nodes"] = [f"/dev/nvidia{minor}"]
            state.devices[key] = entry
        state.runtime = self._runtime_from_files(host, state.driver_version)
        if not state.driver_loaded:
            state.hints.append(self.missing_driver_hint())
        state.steps.append(ProbeStep(
            name="proc-driver-nvidia", result="ok" if state.driver_loaded else "none",
            detail=(f"{len(state.devices)} GPU(s) in /proc/driver/nvidia/gpus, {len(state.dev_nodes)} /dev node(s)"
                    if state.driver_loaded else "nvidia kernel module not loaded"),
            seconds=round(time.monotonic() - t0, 4)))
        return state

    def _runtime_from_files(self, host: HostView, driver_version: str | None) -> Runtime | None:
        if driver_version:
            try:
                branch = int(driver_version.split(".")[0])
            except ValueError:
                branch = -1
            if branch in DRIVER_CUDA:
                return Runtime(name="cuda", version=DRIVER_CUDA[branch], source="driver-branch-table")
        text = host.read_text(CUDA_VERSION_FILES[0])
        if text:
            import json

            try:
                version = json.loads(text).get("cuda", {}).get("version")
            except (ValueError, AttributeError):
                version = None
            if version:
                return Runtime(name="cuda", version=_major_minor(version), source=CUDA_VERSION_FILES[0])
        text = host.read_text(CUDA_VERSION_FILES[1])
        if text:
            m = _VERSION_RE.search(text)
            if m:
                return Runtime(name="cuda", version=_major_minor(m.group(1)), source=CUDA_VERSION_FILES[1])
        return None

    def missing_driver_hint(self) -> str:
        return ("no NVIDIA driver is loaded: install it with `appliance provision` (role nvidia, "
                "driver and container toolkit from the offline bundle), then re-run `appliance detect`")

    # ---- layer c -------------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        if not any(a.driver_version for a in accs) and not _driver_present(host):
            steps.append(ProbeStep(name="nvml", result="skipped", detail="no NVIDIA driver loaded"))
            return accs
        report = None
        if host.native:
            t0 = time.monotonic()
            try:
                report = nvml_report(usage=usage)
                steps.append(ProbeStep(name="nvml", result="ok", detail=f"{len(report['gpus'])} GPU(s)",
                                       seconds=round(time.monotonic() - t0, 4)))
            except NvmlUnavailable as exc:
                steps.append(ProbeStep(name="nvml", result="none", detail=str(exc),
                                       seconds=round(time.monotonic() - t0, 4)))
            except Exception as exc:  # noqa: BLE001 - an NVML failure falls back to nvidia-smi
                steps.append(ProbeStep(name="nvml", result="error", detail=f"{type(exc).__name__}: {exc}",
                                       seconds=round(time.monotonic() - t0, 4)))
        else:
            steps.append(ProbeStep(name="nvml", result="skipped",
                                   detail="not this machine (snapshot or another root): using nvidia-smi"))
        if report is None:
            res = self.run_tool(host, list(SMI_XML_ARGV), steps)
            if res is None:
                return accs
            try:
                report = parse_smi_xml(res.stdout)
            except ValueError as exc:
                steps[-1].result = "error"
                steps[-1].detail = str(exc)
                raise ProbeFailure(f"'nvidia-smi -q -x' printed output that is not nvidia-smi XML: {exc}") from None
            steps[-1].detail = f"{len(report['gpus'])} GPU(s)"
        return self._merge(accs, report, usage)

    def _merge(self, accs: list[Accelerator], report: dict, usage: bool) -> list[Accelerator]:
        source = report["source"]
        by_bdf = {a.pci_bdf: a for a in accs if a.pci_bdf}
        seen: set[int] = set()
        out: list[Accelerator] = []
        runtime = (Runtime(name="cuda", version=report["cuda_version"], source=source)
                   if report.get("cuda_version") else None)
        for gpu in report["gpus"]:
            bdf = normalize_bdf(gpu["pci_bus_id"]) if gpu.get("pci_bus_id") else None
            acc = by_bdf.get(bdf) if bdf else None
            if acc is None:
                acc = Accelerator(vendor=self.vendor, model=gpu.get("name") or "NVIDIA GPU", index=gpu["index"],
                                  backend=self.backend, pci_bdf=bdf, sources={"pci_bdf": source})
                if gpu.get("pci_id"):
                    acc.pci_id = gpu["pci_id"]
                    acc.sources["pci_id"] = source
                    product = PRODUCTS.get(gpu["pci_id"].split(":")[1])
                    if product:
                        acc.arch, acc.variant = product.arch, product.variant
                        if product.compute_capability:
                            acc.compute_capability = product.compute_capability
                            acc.sources["compute_capability"] = "product-table"
            else:
                seen.add(id(acc))
            acc.index = gpu["index"]
            acc.sources["index"] = source
            for field in ("name", "uuid", "memory_mib", "compute_capability", "numa_node"):
                value = gpu.get(field)
                if value is None:
                    continue
                target = "model" if field == "name" else field
                setattr(acc, target, value)
                acc.sources[target] = source
            if report.get("driver_version"):
                acc.driver_version = report["driver_version"]
                acc.sources["driver_version"] = source
            if runtime:
                acc.runtime = runtime
            acc.health = gpu.get("health") or "ok"
            if usage and gpu.get("usage"):
                acc.usage = Usage(source=source, **gpu["usage"])
            out.append(acc)
        for acc in accs:
            if id(acc) not in seen:
                acc.health = "warning"
                hint = (f"{acc.pci_bdf} is on the PCI bus but {source} does not list it "
                        "(excluded, fallen off the bus, or bound to another driver such as vfio-pci)")
                if hint not in acc.hints:
                    acc.hints.append(hint)
                out.append(acc)
        out.sort(key=lambda a: (a.index, a.pci_bdf or ""))
        return out

    # ---- containers ----------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """GPUs by UUID (index when unknown) through the NVIDIA container toolkit; never privileged."""
        ids = [a.uuid or str(a.index) for a in accs]
        return ContainerAccess(
            device_requests=[{"driver": "nvidia", "device_ids": ids, "capabilities": [["gpu"]]}],
            env={"NVIDIA_VISIBLE_DEVICES": ",".join(ids), "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"},
        )


def _driver_present(host: HostView) -> bool:
    return host.exists("/proc/driver/nvidia/version") or "nvidia" in loaded_modules(host)


def _parse_information(text: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def _major_minor(version: str) -> str:
    parts = version.strip().split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else version.strip()


def _cuda_from_int(value: int) -> str:
    """NVML's 13000 -> '13.0', 12040 -> '12.4'."""
    return f"{value // 1000}.{(value % 1000) // 10}"


# ---- nvidia-smi -q -x ------------------------------------------------------------------------

def _num(text: str | None) -> float | None:
    if not text:
        return None
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", text)
    return float(m.group(1)) if m else None


def parse_smi_xml(text: str) -> dict:
    """``nvidia-smi -q -x`` -> the same report shape as :func:`nvml_report`. Raises ValueError."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError as exc:
        raise ValueError(f"XML parse error: {exc}") from None
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"root element is <{root.tag}>, expected <nvidia_smi_log>")
    driver = (root.findtext("driver_version") or "").strip() or None
    cuda = (root.findtext("cuda_version") or "").strip() or None
    if cuda and not _VERSION_RE.fullmatch(cuda):
        cuda = None
    gpus = []
    for i, gpu in enumerate(root.findall("gpu")):
        bus = gpu.get("id") or gpu.findtext("pci/pci_bus_id")
        dev_id = (gpu.findtext("pci/pci_device_id") or "").strip().lower()
        pci_id = None
        if dev_id.startswith("0x"):
            dev_id = dev_id[2:]
        if len(dev_id) == 8:
            pci_id = f"{dev_id[4:]}:{dev_id[:4]}"
        memory = _num(gpu.findtext("fb_memory_usage/total"))
        numa = _num(gpu.findtext("numa_node") or gpu.findtext("pci/numa_node") or "")
        entry = {
            "index": i,
            "name": (gpu.findtext("product_name") or "").strip() or None,
            "uuid": (gpu.findtext("uuid") or "").strip() or None,
            "pci_bus_id": bus,
            "pci_id": pci_id,
            "memory_mib": int(memory) if memory is not None else None,
            "compute_capability": None,
            "numa_node": int(numa) if numa is not None and numa >= 0 else None,
            "health": "ok",
        }
        recovery = (gpu.findtext("gpu_recovery_action") or "").strip()
        if recovery and recovery not in ("None", "N/A"):
            entry["health"] = "warning"
        used = _num(gpu.findtext("fb_memory_usage/used"))
        power = _num(gpu.findtext("gpu_power_readings/instant_power_draw")) or _num(
            gpu.findtext("gpu_power_readings/power_draw")) or _num(gpu.findtext("power_readings/power_draw"))
        limit = _num(gpu.findtext("gpu_power_readings/current_power_limit")) or _num(
            gpu.findtext("power_readings/power_limit"))
        entry["usage"] = {
            "utilization_pct": _num(gpu.findtext("utilization/gpu_util")),
            "memory_used_mib": int(used) if used is not None else None,
            "temperature_c": _num(gpu.findtext("temperature/gpu_temp")),
            "power_w": power,
            "power_limit_w": limit,
        }
        gpus.append(entry)
    if not gpus and root.findtext("attached_gpus", "0").strip() not in ("", "0"):
        raise ValueError("attached_gpus > 0 but no <gpu> elements")
    # -q -x carries no compute capability: it stays from the product table (layer a).
    return {"source": "nvidia-smi -q -x", "driver_version": driver, "cuda_version": cuda, "gpus": gpus}


# ---- NVML (live, this machine only) -----------------------------------------------------------

def nvml_report(*, usage: bool) -> dict:
    """Devices through NVML (nvidia-ml-py). Raises NvmlUnavailable when NVML cannot start."""
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailable(f"nvidia-ml-py is not installed: {exc}") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML cannot start: {exc}") from None
    try:
        return _nvml_collect(pynvml, usage)
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_collect(nv, usage: bool) -> dict:
    def opt(fn, *args):
        try:
            return fn(*args)
        except nv.NVMLError:
            return None

    driver = _str(nv.nvmlSystemGetDriverVersion())
    cuda_int = opt(nv.nvmlSystemGetCudaDriverVersion_v2) or opt(nv.nvmlSystemGetCudaDriverVersion)
    gpus = []
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        pci = nv.nvmlDeviceGetPciInfo(h)
        dev_id = f"{pci.pciDeviceId:08x}"
        mem = opt(nv.nvmlDeviceGetMemoryInfo, h)
        cc = opt(nv.nvmlDeviceGetCudaComputeCapability, h)
        numa = opt(getattr(nv, "nvmlDeviceGetNumaNodeId", lambda _h: None), h)
        entry = {
            "index": i,
            "name": _str(nv.nvmlDeviceGetName(h)),
            "uuid": _str(nv.nvmlDeviceGetUUID(h)),
            "pci_bus_id": _str(pci.busId),
            "pci_id": f"{dev_id[4:]}:{dev_id[:4]}",
            "memory_mib": mem.total // (1024 * 1024) if mem else None,
            "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
            "numa_node": numa if isinstance(numa, int) and numa >= 0 else None,
            "health": "ok",
        }
        if usage:
            util = opt(nv.nvmlDeviceGetUtilizationRates, h)
            temp = opt(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
            power = opt(nv.nvmlDeviceGetPowerUsage, h)
            limit = opt(nv.nvmlDeviceGetEnforcedPowerLimit, h)
            entry["usage"] = {
                "utilization_pct": float(util.gpu) if util else None,
                "memory_used_mib": mem.used // (1024 * 1024) if mem else None,
                "temperature_c": float(temp) if temp is not None else None,
                "power_w": round(power / 1000, 2) if power is not None else None,
                "power_limit_w": round(limit / 1000, 2) if limit is not None else None,
            }
        gpus.append(entry)
    return {"source": "nvml", "driver_version": driver,
            "cuda_version": _cuda_from_int(cuda_int) if cuda_int else None, "gpus": gpus}
