"""Kunlunxin accelerators (backend ``xpu``).

Identity only so far: PCI ids, backend, kernel modules and tools. Product table,
driver/runtime state, tool parsing and container access are filled in by this module.
See ``../shared/reference/chips.md`` for the facts.
"""

from __future__ import annotations

from chip_drivers.base import (
    CLASS_3D, CLASS_COPROCESSOR, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_VGA,  # noqa: F401
    ChipDriver, Product,
)


class KunlunxinDriver(ChipDriver):
    vendor = "kunlunxin"
    display_name = "Kunlunxin"
    backend = "xpu"
    pci_vendor_ids = ('1d22',)
    accelerator_classes = (CLASS_PROCESSING_ACCEL, CLASS_3D, CLASS_DISPLAY_OTHER)
    kernel_modules = ('kunlun', 'xpu')
    tools = ('xpu-smi',)
    provision_role = "kunlunxin"
    products: dict[str, Product] = {}
