"""Iluvatar CoreX GPUs (backend ``corex``).

Layer a: PCI vendor ``1e3e``, class 0x1200. ``pci.ids`` lists no Iluvatar device. The one
public ``lspci`` we know shows ``1e3e:0002`` on an MR-V100 (32 GB, 150 W; ``ixsmi`` on the
same box names it) — kept as data. BI-V100/BI-V150 ids are not public (chips.md §8): such
devices are claimed by class and named by ``ixsmi``. (A BI-V150 board carries two chips;
ixsmi lists each as a 32 GB GPU.)

Layer b: kernel module ``iluvatar`` (older releases: ``bi_driver``), ``/sys/module/<mod>/version``
when declared; ``/dev/iluvatarN``, ``/dev/itrctl`` (control), ``/dev/itrlink`` and
``/dev/itr_peerm_dev*`` (IXLink peer memory) when present; the CoreX version from
``/usr/local/corex/version.txt`` when present, else the install link
``/usr/local/corex -> corex-<ver>`` (CoreX installs as ``/usr/local/corex-<ver>`` with
``/usr/local/corex`` pointing at it).

Layer c: ``ixsmi`` default listing, an nvidia-smi clone (``IX-ML: … Driver Version: …
CUDA Version: …`` banner; ``GPU Name | Bus-Id | Clock-SM Clock-Mem`` / ``Fan Temp Perf
Pwr:Usage/Cap | Memory-Usage | GPU-Util Compute M.`` blocks).
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

COREX_HOME = "/usr/local/corex"
CONTROL_NODE = "/dev/itrctl"
# IXLink nodes: passed through when the host has them (multi-GPU peer access).
LINK_NODES = ("/dev/itrlink",)


class IluvatarDriver(ChipDriver):
    vendor = "iluvatar"
    display_name = "Iluvatar CoreX"
    backend = "corex"
    pci_vendor_ids = ('1e3e',)
    accelerator_classes = (CLASS_3D, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL)
    kernel_modules = ('iluvatar', 'bi_driver')
    tools = ('ixsmi',)
    provision_role = "iluvatar"
    products: dict[str, Product] = {
        # Unverified beyond one public lspci + ixsmi capture on the same MR-V100 box.
        "0002": Product("Iluvatar MR-V100", 32768, "ivcore10", "mr-v100"),
    }

    # ---- layer b -------------------------------------------------------------------------
    def driver_state(self, host: HostView) -> DriverState:
        state = super().driver_state(host)
        shared = vf.existing(host, (CONTROL_NODE,) + LINK_NODES)
        shared += list(vf.numbered_dev_nodes(host, r"itr_peerm_dev(\d+)").values())
        state.dev_nodes = list(vf.numbered_dev_nodes(host, r"iluvatar(\d+)").values()) + shared
        state.runtime = vf.runtime("corex", vf.toolkit_version(host, COREX_HOME, "corex", "version.txt"))
        return state

    def apply_driver_state(self, accs: list[Accelerator], state: DriverState) -> None:
        super().apply_driver_state(accs, state)
        for acc in accs:
            acc.dev_nodes = device_nodes(acc.index, state.dev_nodes)

    # ---- layer c -------------------------------------------------------------------------
    def enrich(self, host: HostView, accs: list[Accelerator], *, usage: bool,
               steps: list[ProbeStep]) -> list[Accelerator]:
        parsed = self.run_listing(host, ["ixsmi"], steps, parse_ixsmi)
        if parsed is None:
            return accs
        state = self.state
        out = merge_tool_listing(self, host, accs, parsed, tool="ixsmi", usage=usage, steps=steps)
        nodes = state.dev_nodes if state is not None else []
        for acc in out:  # ixsmi's GPU number is the driver's /dev/iluvatarN numbering
            acc.dev_nodes = device_nodes(acc.index, nodes)
        return out

    # ---- containers ----------------------------------------------------------------------
    def container_access(self, accs: list[Accelerator]) -> ContainerAccess:
        """Plain device access (works with or without ix-container-toolkit).

        Each GPU's ``/dev/iluvatarN`` plus ``/dev/itrctl`` (and the IXLink nodes the host
        has), at the same paths. ``IX_VISIBLE_DEVICES`` (runtime level, host indices: what
        the ``iluvatar`` container runtime reads when it is the default runtime) and
        ``CUDA_VISIBLE_DEVICES`` as container ordinals for the application.
        """
        access = ContainerAccess()
        devices: list[str] = []
        ordered = sorted(accs, key=lambda a: a.index)
        for acc in ordered:
            for node in acc.dev_nodes or device_nodes(acc.index, None):
                if node not in devices:
                    devices.append(node)
        devices.sort(key=lambda d: (not d.startswith("/dev/iluvatar"), _node_number(d), d))
        access.devices = [f"{d}:{d}:rwm" for d in devices]
        access.env = {"IX_VISIBLE_DEVICES": ",".join(str(a.index) for a in ordered),
                      "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(accs)))}
        return access


def _node_number(path: str) -> int:
    digits = "".join(ch for ch in path.rsplit("/", 1)[-1] if ch.isdigit())
    return int(digits) if digits else -1


def device_nodes(index: int, present: list[str] | None) -> list[str]:
    """GPU ``index``'s node, the control node and the IXLink nodes (those present when known)."""
    if present is None:
        return [f"/dev/iluvatar{index}", CONTROL_NODE]
    own = f"/dev/iluvatar{index}"
    shared = [p for p in present if not p.startswith("/dev/iluvatar")]
    return ([own] if own in present else []) + shared


def parse_ixsmi(text: str) -> dict:
    """Parse ``ixsmi``'s default listing.

    Returns ``{"driver_version", "ixml_version", "cuda_version", "devices"}``; each device is
    ``{"index", "name", "bus_id", "memory_total_mib", "memory_used_mib", "utilization_pct",
    "temperature_c", "power_w", "power_limit_w"}``. Raises :class:`ProbeFailure` when the text
    is not an ixsmi listing.
    """
    if "IX-ML" not in text and "Driver Version" not in text:
        raise ProbeFailure(f"ixsmi output not recognised (no IX-ML banner): {st.first_line(text)!r}")
    devices = [{
        "index": b.index, "name": " ".join(b.words), "bus_id": b.bus_id,
        "memory_used_mib": b.memory_used_mib, "memory_total_mib": b.memory_total_mib,
        "utilization_pct": st.find_number(st.PCT_RE, b.cell(1, 2)),
        "temperature_c": b.temperature_c, "power_w": b.power_w, "power_limit_w": b.power_limit_w,
    } for b in st.device_blocks(text, "ixsmi", ("GPU", "Bus-Id"))]
    return {
        "driver_version": st.header_value(text, "Driver Version"),
        "ixml_version": st.header_value(text, "IX-ML"),
        "cuda_version": st.header_value(text, "CUDA Version"),
        "devices": devices,
    }
