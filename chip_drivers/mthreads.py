"""Moore Threads GPUs (backend ``musa``).

Layer a: PCI vendor ``1ed5``; the product table comes from ``pci.ids`` (S80 ``0201``, S70
``0202``, X300 ``0211``, S3000 ``0222``, S4000 ``0323``/``0327``/``0328``, S90 ``0301``) with
public memory sizes, plus the other product ids of ``pci.ids`` (S10 to S2000, S60, S3000E,
X500) by name only. Moore Threads boards are graphics cards, so the VGA class is accepted;
their HDMI/DP audio functions (``01ff``/``02ff``/``03ff``, class 0x0403) are never claimed.

Layer b: kernel module ``mtgpu``, ``/sys/module/mtgpu/version`` when declared; ``/dev/mtgpu.N``
and each GPU's own DRM nodes (from its sysfs ``drm/`` directory); the MUSA toolkit version
from ``/usr/local/musa/version.json`` (``musa_toolkits.version``, which Moore Threads' docs
call the authoritative toolkit version), else the link ``/usr/local/musa -> musa-<ver>``.

Layer c: ``mthreads-gmi`` default listing (``mthreads-gmi:1.14.0  Driver Version:2.7.0``
banner; per GPU ``ID Name |PCIe |%GPU Mem`` then ``Device Type |Lane Width |Temp MPC`` lines).
"""

from __future__ import annotations

import re

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep
from appliance.inventory.pci import PciDevice
from chip_drivers import smi_table as st
from chip_drivers import vendor_files as vf
from chip_drivers.base import (
    CLASS_3D,
    CLASS_DISPLAY_OTHER,
    CLASS_VGA,
    ChipDriver,
    ContainerAccess,
    DriverState,
    ProbeFailure,
    Product,
)
from chip_drivers.tool_devices import merge_tool_listing

MUSA_HOME = "/usr/local/musa"
# "0    MTT S80        |00000000:04:00.0    |0%    2MiB(16384MiB)"
_GMI_DEVICE_RE = re.compile(
    r"^\s*(\d+)\s+(\S.*?)\s*\|\s*([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*\|"
    r"\s*(?:(\d+(?:\.\d+)?)%|N/A)?\s*(\d+)\s*MiB\s*\(\s*(\d+)\s*MiB\s*\)")

# any "<id>  <name> | ... | ..." line: a device row, which must then parse completely
_GMI_ROW_RE = re.compile(r"^\s*\d+\s+\S[^|]*\|[^|]*\|")


class MthreadsDriver(ChipDriver):
    vendor = "mthreads"
    display_name = "Moore Threads"
    backend = "musa"
    pci_vendor_ids = ('1ed5',)
    accelerator_classes = (CLASS_3D, CLASS_VGA, CLASS_DISPLAY_OTHER)
    kernel_modules = ('mtgpu',)
    tools = ('mthreads-gmi',)
    provision_role = "mthreads"
    drm_devices = True
    products: dict[str, Product] = {
        # ids: pci.ids; memory: public specs.
        "0201": Product("MTT S80", 16384, "chunxiao", "s80"),
        "0202": Product("MTT S70", 7168, "chunxiao", "s70"),
        "0211": Product("MTT X300", 16384, "chunxiao", "x300"),
        "0222": Product("MTT S3000", 32768, "chunxiao", "s3000"),
        "0323": Product("MTT S4000", 49152, "quyuan", "s4000"),
        "0327": Product("MTT S4000", 49152, "quyuan", "s4000"),
        "0328": Product("MTT S4000", 49152, "quyuan", "s4000"),
        "0301": Product("MTT S90", None, None, "s90"),
        # pci.ids names only (memory not in pci.ids nor in a source this project holds -> unknown;
        # mthreads-gmi gives it; architecture not asserted): S10 to S100, S1000M/S1000/S2000, the
        # second S60 id (0203), S3000E, X500.
        "0100": Product("MTT S10", None, None, "s10"),
        "0101": Product("MTT S10", None, None, "s10"),
        "0102": Product("MTT S30", None, None, "s30"),
        "0105": Product("MTT S50", None, None, "s50"),
        "0106": Product("MTT S60", None, None, "s60"),
        "0111": Product("MTT S100", None, None, "s100"),
        "0121": Product("MTT S1000M", None, None, "s1000m"),
        "0122": Product("MTT S1000", None, None, "s1000"),
        "0123": Product("MTT S2000", None, None, "s2000"),
        "0203": Product("MTT S60", None, None, "s60"),
        "0225": Product("MTT S3000E", None, None, "s3000e"),
        "0313": Product("MTT X500", None, None, "x500"),
    }

    def allow_vga(self, dev: PciDevice) -> bool:
        return True

    # ---- layer b -------------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = super().driver_state(host)
        state.dev_nodes = list(vf.numbered_dev_nodes(host, r"mtgpu\.(\d+)").values())
        found = vf.toolkit_version(host, MUSA_HOME, "musa", "version.json", ("musa_toolkits", "version"))
        state.runtime = vf.runtime("musa", found)
        return state

    def apply_driver_state(self, accs: list[Accelerator], state: DriverState) -> None:
        super().apply_driver_state(accs, state)
        for acc in accs:
            acc.dev_nodes = device_nodes(acc, state.dev_nodes)

    # ---- layer c -------------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        parsed = self.run_listing(host, ["mthreads-gmi"], steps, parse_mthreads_gmi)
        if parsed is None:
            return accs
        state = self.state
        out = merge_tool_listing(self, host, accs, parsed, tool="mthreads-gmi", usage=usage, steps=steps)
        nodes = state.dev_nodes if state is not None else []
        for acc in out:  # mthreads-gmi's ID is the driver's /dev/mtgpu.N numbering
            acc.dev_nodes = device_nodes(acc, nodes)
        return out

    # ---- containers ----------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """Plain device access (works with or without the MT container toolkit).

        Each GPU's ``/dev/mtgpu.N`` and its own DRM nodes (the whole ``/dev/dri`` when
        unknown), group ``video``. ``MTHREADS_VISIBLE_DEVICES`` (runtime level, host
        indices: what the ``mthreads`` container runtime reads when it is the default
        runtime) and ``MTHREADS_DRIVER_CAPABILITIES``; ``MUSA_VISIBLE_DEVICES`` as container
        ordinals for the application.
        """
        access = ContainerAccess(group_add=["video"])
        devices: list[str] = []
        ordered = sorted(accs, key=lambda a: a.index)
        for acc in ordered:
            nodes = acc.dev_nodes or [f"/dev/mtgpu.{acc.index}"]
            if not any(n.startswith("/dev/dri/") for n in nodes):
                nodes = nodes + ["/dev/dri"]
            for node in nodes:
                if node not in devices:
                    devices.append(node)
        if "/dev/dri" in devices:
            devices = [d for d in devices if not d.startswith("/dev/dri/")]
        access.devices = [f"{d}:{d}:rwm" for d in devices]
        access.env = {
            "MTHREADS_VISIBLE_DEVICES": ",".join(str(a.index) for a in ordered),
            "MTHREADS_DRIVER_CAPABILITIES": "compute,utility",
            "MUSA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(accs))),
        }
        return access


def device_nodes(acc: Accelerator, present: list[str]) -> list[str]:
    """``/dev/mtgpu.<index>`` (when present) followed by the GPU's DRM nodes."""
    own = f"/dev/mtgpu.{acc.index}"
    drm = [n for n in acc.dev_nodes if n.startswith("/dev/dri/")]
    return ([own] if own in present else []) + drm


def parse_mthreads_gmi(text: str) -> dict:
    """Parse ``mthreads-gmi``'s default listing.

    Returns ``{"driver_version", "gmi_version", "devices"}``; each device is ``{"index",
    "name", "bus_id", "memory_total_mib", "memory_used_mib", "utilization_pct",
    "temperature_c", "device_type"}``. Raises :class:`ProbeFailure` when the text is not an
    mthreads-gmi listing.
    """
    if "mthreads-gmi" not in text.lower():
        raise ProbeFailure(f"mthreads-gmi output not recognised (no banner): {st.first_line(text)!r}")
    lines = text.splitlines()
    devices = []
    for i, line in enumerate(lines):
        m = _GMI_DEVICE_RE.match(line)
        if not m:
            if _GMI_ROW_RE.match(line):
                raise ProbeFailure(f"mthreads-gmi output not recognised: unexpected device row {line.strip()!r}")
            continue
        follow = lines[i + 1] if i + 1 < len(lines) else ""
        follow_cells = follow.split("|")
        devices.append({
            "index": int(m.group(1)), "name": m.group(2).strip(),
            "bus_id": st.find_bdf(m.group(3)),
            "utilization_pct": float(m.group(4)) if m.group(4) is not None else None,
            "memory_used_mib": int(m.group(5)), "memory_total_mib": int(m.group(6)),
            "temperature_c": st.find_number(st.TEMP_RE, follow_cells[-1] if len(follow_cells) > 1 else ""),
            "device_type": follow_cells[0].strip() or None,
        })
    if not devices and not re.search(r"^\s*ID\s+Name\b", text, re.M):
        raise ProbeFailure(f"mthreads-gmi output not recognised (no device table): {st.first_line(text)!r}")
    return {
        "driver_version": st.header_value(text, "Driver Version"),
        "gmi_version": st.header_value(text, "mthreads-gmi"),
        "devices": devices,
    }
