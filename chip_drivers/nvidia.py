"""NVIDIA accelerators (backend ``cuda``).

Identity only so far: PCI ids, backend, kernel modules and tools. Product table,
driver/runtime state, tool parsing and container access are filled in by this module.
See ``../shared/reference/chips.md`` for the facts.
"""

from __future__ import annotations

from chip_drivers.base import (
    CLASS_3D, CLASS_COPROCESSOR, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL, CLASS_VGA,  # noqa: F401
    ChipDriver, Product,
)


class NvidiaDriver(ChipDriver):
    vendor = "nvidia"
    display_name = "NVIDIA"
    backend = "cuda"
    pci_vendor_ids = ('10de',)
    accelerator_classes = (CLASS_3D, CLASS_VGA)
    kernel_modules = ('nvidia',)
    tools = ('nvidia-smi',)
    provision_role = "nvidia"
    products: dict[str, Product] = {}
