"""Moore Threads accelerators (backend ``musa``).

Identity only so far: PCI ids, backend, kernel modules and tools. Product table,
driver/runtime state, tool parsing and container access are filled in by this module.
See ``../shared/reference/chips.md`` for the facts.
"""

from __future__ import annotations

from chip_drivers.base import (
    CLASS_3D, CLASS_COPROCESSOR, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_VGA,  # noqa: F401
    ChipDriver, Product,
)


class MthreadsDriver(ChipDriver):
    vendor = "mthreads"
    display_name = "Moore Threads"
    backend = "musa"
    pci_vendor_ids = ('1ed5',)
    accelerator_classes = (CLASS_3D, CLASS_VGA, CLASS_DISPLAY_OTHER)
    kernel_modules = ('mtgpu',)
    tools = ('mthreads-gmi',)
    provision_role = "mthreads"
    products: dict[str, Product] = {}
