"""Iluvatar CoreX accelerators (backend ``corex``).

Identity only so far: PCI ids, backend, kernel modules and tools. Product table,
driver/runtime state, tool parsing and container access are filled in by this module.
See ``../shared/reference/chips.md`` for the facts.
"""

from __future__ import annotations

from chip_drivers.base import (
    CLASS_3D, CLASS_COPROCESSOR, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_VGA,  # noqa: F401
    ChipDriver, Product,
)


class IluvatarDriver(ChipDriver):
    vendor = "iluvatar"
    display_name = "Iluvatar CoreX"
    backend = "corex"
    pci_vendor_ids = ('1e3e',)
    accelerator_classes = (CLASS_3D, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL)
    kernel_modules = ('iluvatar', 'bi_driver')
    tools = ('ixsmi',)
    provision_role = "iluvatar"
    products: dict[str, Product] = {}
