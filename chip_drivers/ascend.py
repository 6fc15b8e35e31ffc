"""Huawei Ascend accelerators (backend ``cann``).

Identity only so far: PCI ids, backend, kernel modules and tools. Product table,
driver/runtime state, tool parsing and container access are filled in by this module.
See ``../shared/reference/chips.md`` for the facts.
"""

from __future__ import annotations

from chip_drivers.base import (
    CLASS_3D, CLASS_COPROCESSOR, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_VGA,  # noqa: F401
    ChipDriver, Product,
)


class AscendDriver(ChipDriver):
    vendor = "ascend"
    display_name = "Huawei Ascend"
    backend = "cann"
    pci_vendor_ids = ('19e5',)
    accelerator_classes = (CLASS_PROCESSING_ACCEL,)
    kernel_modules = ('drv_davinci_intf', 'drv_devmm', 'drv_pcie_host')
    tools = ('npu-smi',)
    provision_role = "ascend"
    products: dict[str, Product] = {}
