"""Cambricon accelerators (backend ``neuware``).

Identity only so far: PCI ids, backend, kernel modules and tools. Product table,
driver/runtime state, tool parsing and container access are filled in by this module.
See ``../shared/reference/chips.md`` for the facts.
"""

from __future__ import annotations

from chip_drivers.base import (
    CLASS_3D, CLASS_COPROCESSOR, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_VGA,  # noqa: F401
    ChipDriver, Product,
)


class CambriconDriver(ChipDriver):
    vendor = "cambricon"
    display_name = "Cambricon"
    backend = "neuware"
    pci_vendor_ids = ('cabc',)
    accelerator_classes = (CLASS_PROCESSING_ACCEL, CLASS_3D, CLASS_DISPLAY_OTHER)
    kernel_modules = ('cambricon_drv', 'cambricon')
    tools = ('cnmon',)
    provision_role = "cambricon"
    products: dict[str, Product] = {}
