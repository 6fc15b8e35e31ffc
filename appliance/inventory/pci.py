"""PCI sysfs scanning (detection layer a) and pci.ids name lookup.

Reads ``/sys/bus/pci/devices/*/{vendor,device,class,subsystem_vendor,subsystem_device,
numa_node,driver}`` through a host view, so it works before any vendor driver or tool
is installed and identically on a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.inventory.hostview import HostView

PCI_DEVICES = "/sys/bus/pci/devices"
PCI_IDS_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids")


@dataclass(frozen=True)
class PciDevice:
    bdf: str               # 0000:00:06.0
    vendor: str            # 10de (lowercase hex, no 0x)
    device: str            # 2335
    pci_class: str         # 030200
    subsystem_vendor: str | None
    subsystem_device: str | None
    numa_node: int | None
    driver: str | None     # bound kernel driver name, e.g. nvidia

    @property
    def pci_id(self) -> str:
        return f"{self.vendor}:{self.device}"

    @property
    def class_prefix(self) -> str:
        """Base class + subclass, e.g. ``0302`` (3D controller), ``1200`` (processing accelerator)."""
        return self.pci_class[:4]


def _hex(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().lower()
    if value.startswith("0x"):
        value = value[2:]
    return value or None


def normalize_bdf(bdf: str) -> str:
    """``00000000:00:06.0`` / ``00:06.0`` / ``0000:00:06.0`` -> ``0000:00:06.0`` (lowercase)."""
    bdf = bdf.strip().lower()
    parts = bdf.split(":")
    if len(parts) == 2:
        parts = ["0000"] + parts
    if len(parts) == 3:
        domain = parts[0][-4:].rjust(4, "0")
        return f"{domain}:{parts[1].rjust(2, '0')}:{parts[2]}"
    return bdf


def scan_pci(host: HostView) -> list[PciDevice]:
    """All PCI functions of the node, sorted by address."""
    devices: list[PciDevice] = []
    for bdf in host.listdir(PCI_DEVICES):
        base = f"{PCI_DEVICES}/{bdf}"
        vendor = _hex(host.read_value(f"{base}/vendor"))
        device = _hex(host.read_value(f"{base}/device"))
        if not vendor or not device:
            continue
        pci_class = _hex(host.read_value(f"{base}/class")) or ""
        numa_raw = host.read_value(f"{base}/numa_node")
        try:
            numa = int(numa_raw) if numa_raw is not None else None
        except ValueError:
            numa = None
        if numa is not None and numa < 0:
            numa = None
        link = host.readlink(f"{base}/driver")
        driver = link.rstrip("/").rsplit("/", 1)[-1] if link else None
        devices.append(PciDevice(
            bdf=normalize_bdf(bdf), vendor=vendor, device=device, pci_class=pci_class.rjust(6, "0"),
            subsystem_vendor=_hex(host.read_value(f"{base}/subsystem_vendor")),
            subsystem_device=_hex(host.read_value(f"{base}/subsystem_device")),
            numa_node=numa, driver=driver,
        ))
    devices.sort(key=lambda d: d.bdf)
    return devices


def pci_ids_name(host: HostView, vendor: str, device: str) -> str | None:
    """The device name from the system's pci.ids, if installed (scans only the vendor's block)."""
    for path in PCI_IDS_PATHS:
        text = host.read_text(path, max_bytes=8 * 1024 * 1024)
        if text is None:
            continue
        in_vendor = False
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            if not line.startswith("\t"):
                if in_vendor:
                    return None
                in_vendor = line[:4].lower() == vendor
                continue
            if in_vendor and not line.startswith("\t\t") and line[1:5].lower() == device:
                return line[5:].strip()
        return None
    return None
