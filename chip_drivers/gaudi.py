"""Intel Gaudi accelerators (backend ``gaudi``).

Identity only so far: PCI ids, backend, kernel modules and tools. Product table,
driver/runtime state, tool parsing and container access are filled in by this module.
See ``../shared/reference/chips.md`` for the facts.
"""

from __future__ import annotations

from chip_drivers.base import (
    CLASS_3D, CLASS_COPROCESSOR, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_VGA,  # noqa: F401
    ChipDriver, Product,
)


class GaudiDriver(ChipDriver):
    vendor = "gaudi"
    display_name = "Intel Gaudi"
    backend = "gaudi"
    pci_vendor_ids = ('1da3',)
    accelerator_classes = (CLASS_PROCESSING_ACCEL,)
    kernel_modules = ('habanalabs',)
    tools = ('hl-smi',)
    provision_role = "gaudi"
    products: dict[str, Product] = {}
