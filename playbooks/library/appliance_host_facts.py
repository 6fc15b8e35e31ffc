#!/usr/bin/python
"""Ansible module: host facts the playbooks need: chip roles (PCI sysfs) and systemd, under a root.

Why a module and not a shell pipeline: it runs the same on every managed host (Ansible copies
it there, no appliance install needed), reads only files (so a node snapshot's ``root/`` works
as a fake host), and takes its vendor/class table from the appliance's chip driver registry
(passed in as ``table``), so the playbooks never keep a second copy of the PCI ids. This is
the DeepOps ``gpus.fact`` / ascend-deployer ``npu_info`` idea, for every vendor at once.

``systemd`` is sd_booted(): ``<root>/run/systemd/system`` exists. Without it (a container, a
non-systemd init) the roles do not call systemctl and say what to start by hand.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: appliance_host_facts
short_description: Accelerator chip roles (PCI sysfs scan) and systemd presence under a root
options:
  root: {type: str, default: /, description: filesystem root to read sys/bus/pci/devices under}
  table:
    type: list
    elements: dict
    description: rows {role, vendor_ids (hex, no 0x), classes (4-hex base+sub class prefixes)}
"""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(4096).strip()
    except OSError:
        return None


def _hex(value: str | None) -> str:
    value = (value or "").strip().lower()
    return value[2:] if value.startswith("0x") else value


def scan(root: str, table: list[dict]) -> tuple[list[str], dict[str, int]]:
    base = os.path.join(root, "sys/bus/pci/devices")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        names = []
    counts: dict[str, int] = {}
    for name in names:
        vendor = _hex(_read(os.path.join(base, name, "vendor")))
        pci_class = _hex(_read(os.path.join(base, name, "class")))
        prefix = pci_class[:4]
        for row in table:
            if vendor in row.get("vendor_ids", []) and prefix in row.get("classes", []):
                counts[row["role"]] = counts.get(row["role"], 0) + 1
                break
    chips = [row["role"] for row in table if row["role"] in counts]
    # keep table order, drop duplicates (two drivers may share a role)
    seen: list[str] = []
    for chip in chips:
        if chip not in seen:
            seen.append(chip)
    return seen, counts


def main() -> None:
    module = AnsibleModule(
        argument_spec={"root": {"type": "str", "default": "/"},
                       "table": {"type": "list", "elements": "dict", "default": []}},
        supports_check_mode=True,
    )
    root = module.params["root"]
    chips, counts = scan(root, module.params["table"])
    systemd = os.path.isdir(os.path.join(root, "run/systemd/system"))
    module.exit_json(changed=False, chips=chips, device_counts=counts, systemd=systemd)


if __name__ == "__main__":
    main()
