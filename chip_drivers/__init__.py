"""The one registry of chip drivers.

Order matters only for output: devices are reported vendor by vendor in this order.
Vendor ids here are the ids used in every output (inventory, plans, catalog constraints).

Vendor modules are imported lazily: ``appliance detect`` imports only the drivers whose
PCI vendor id is on the node (see :func:`drivers_for_pci`), which keeps the command fast.
``DRIVERS`` still works (``from chip_drivers import DRIVERS`` imports every module).
The identity columns below (vendor, backend, PCI vendor ids) must equal the class
attributes; ``tests/detect/test_framework.py`` checks that.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from chip_drivers.base import ChipDriver

# vendor id, module, class, backend, PCI vendor ids
REGISTRY: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("nvidia", "chip_drivers.nvidia", "NvidiaDriver", "cuda", ("10de",)),
    ("amd", "chip_drivers.amd", "AmdDriver", "rocm", ("1002",)),
    ("ascend", "chip_drivers.ascend", "AscendDriver", "cann", ("19e5",)),
    ("kunlunxin", "chip_drivers.kunlunxin", "KunlunxinDriver", "xpu", ("1d22",)),
    ("hygon", "chip_drivers.hygon", "HygonDriver", "dtk", ("1d94",)),
    ("cambricon", "chip_drivers.cambricon", "CambriconDriver", "neuware", ("cabc",)),
    ("metax", "chip_drivers.metax", "MetaxDriver", "maca", ("9999",)),
    ("mthreads", "chip_drivers.mthreads", "MthreadsDriver", "musa", ("1ed5",)),
    ("iluvatar", "chip_drivers.iluvatar", "IluvatarDriver", "corex", ("1e3e",)),
    ("gaudi", "chip_drivers.gaudi", "GaudiDriver", "gaudi", ("1da3",)),
)

VENDOR_IDS: tuple[str, ...] = tuple(row[0] for row in REGISTRY)

BACKENDS: tuple[str, ...] = tuple(row[3] for row in REGISTRY) + ("cpu",)

PCI_VENDORS: dict[str, tuple[str, ...]] = {row[0]: row[4] for row in REGISTRY}

_ROWS = {row[0]: row for row in REGISTRY}


def driver_class(vendor: str) -> type[ChipDriver]:
    """The driver class for ``vendor`` (imports its module). KeyError for an unknown vendor."""
    _, module, cls, _, _ = _ROWS[vendor]
    return getattr(importlib.import_module(module), cls)


def __getattr__(name: str):
    # PEP 562: DRIVERS imports every vendor module only when someone asks for it.
    if name == "DRIVERS":
        return tuple(driver_class(v) for v in VENDOR_IDS)
    if name == "ChipDriver":
        from chip_drivers.base import ChipDriver

        return ChipDriver
    raise AttributeError(f"module 'chip_drivers' has no attribute {name!r}")


def all_drivers() -> list[ChipDriver]:
    return [driver_class(v)() for v in VENDOR_IDS]


def drivers_for_pci(pci_vendor_ids: set[str] | None) -> list[str]:
    """Vendors worth probing on a node whose PCI functions have these vendor ids.

    ``None`` (PCI sysfs missing or empty, e.g. a container without /sys) means all of them.
    A vendor none of whose ids is present cannot have an accelerator on the node.
    """
    if not pci_vendor_ids:
        return list(VENDOR_IDS)
    return [v for v in VENDOR_IDS if set(PCI_VENDORS[v]) & pci_vendor_ids]


def get_driver(vendor: str) -> ChipDriver:
    if vendor not in _ROWS:
        raise KeyError(vendor)
    return driver_class(vendor)()


def backend_of(vendor: str) -> str:
    if vendor == "cpu":
        return "cpu"
    if vendor not in _ROWS:
        raise KeyError(vendor)
    return _ROWS[vendor][3]
