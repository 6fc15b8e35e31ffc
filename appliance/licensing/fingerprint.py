"""A node fingerprint for node-locked licenses, computed from the inventory.

It hashes what identifies the hardware and survives reboots and re-installs: each
accelerator's vendor, PCI id and UUID (or PCI address when the vendor has no UUID). A node
without accelerators uses its hostname, CPU model and memory in GiB instead. The vendor
asks the customer for ``appliance license fingerprint`` and issues with ``--fingerprint``.
"""

from __future__ import annotations

import hashlib

PREFIX = "nfp1-"


def node_fingerprint(inventory) -> str:
    accs = sorted(inventory.accelerators, key=lambda a: (a.vendor, a.pci_bdf or "", a.index))
    if accs:
        parts = [f"{a.vendor}|{a.pci_id or ''}|{a.uuid or a.pci_bdf or a.index}" for a in accs]
    else:
        node = inventory.node
        parts = [f"host|{node.hostname or ''}|{node.cpu_model or ''}|{(node.memory_mib or 0) // 1024}"]
    return PREFIX + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
