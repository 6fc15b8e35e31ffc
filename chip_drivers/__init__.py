"""The one registry of chip drivers.

Order matters only for output: devices are reported vendor by vendor in this order.
Vendor ids here are the ids used in every output (inventory, plans, catalog constraints).
"""

from __future__ import annotations

from chip_drivers.amd import AmdDriver
from chip_drivers.ascend import AscendDriver
from chip_drivers.base import ChipDriver
from chip_drivers.cambricon import CambriconDriver
from chip_drivers.gaudi import GaudiDriver
from chip_drivers.hygon import HygonDriver
from chip_drivers.iluvatar import IluvatarDriver
from chip_drivers.kunlunxin import KunlunxinDriver
from chip_drivers.metax import MetaxDriver
from chip_drivers.mthreads import MthreadsDriver
from chip_drivers.nvidia import NvidiaDriver

DRIVERS: tuple[type[ChipDriver], ...] = (
    NvidiaDriver, AmdDriver, AscendDriver, KunlunxinDriver, HygonDriver,
    CambriconDriver, MetaxDriver, MthreadsDriver, IluvatarDriver, GaudiDriver,
)

VENDOR_IDS: tuple[str, ...] = tuple(d.vendor for d in DRIVERS)

BACKENDS: tuple[str, ...] = tuple(d.backend for d in DRIVERS) + ("cpu",)


def all_drivers() -> list[ChipDriver]:
    return [cls() for cls in DRIVERS]


def get_driver(vendor: str) -> ChipDriver:
    for cls in DRIVERS:
        if cls.vendor == vendor:
            return cls()
    raise KeyError(vendor)


def backend_of(vendor: str) -> str:
    if vendor == "cpu":
        return "cpu"
    return get_driver(vendor).backend
