"""Hygon DCU accelerators (backend ``dtk``).

Identity only so far: PCI ids, backend, kernel modules and tools. Product table,
driver/runtime state, tool parsing and container access are filled in by this module.
See ``../shared/reference/chips.md`` for the facts.
"""

from __future__ import annotations

from chip_drivers.base import (
    CLASS_3D, CLASS_COPROCESSOR, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_VGA,  # noqa: F401
    ChipDriver, Product,
)


class HygonDriver(ChipDriver):
    vendor = "hygon"
    display_name = "Hygon DCU"
    backend = "dtk"
    pci_vendor_ids = ('1d94',)
    accelerator_classes = (CLASS_3D, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_COPROCESSOR)
    kernel_modules = ('hydcu', 'hycu', 'amdgpu')
    tools = ('hy-smi', 'rocm-smi')
    provision_role = "hygon"
    products: dict[str, Product] = {}
