"""``provision()``: prepare this node (or every node of an Ansible inventory) with site.yml.

This module turns appliance's own models into Ansible inputs and hands them to the runner
adapter (:mod:`appliance.provision.runner`):

- the inventory: this node by default (``localhost``, local connection, our own Python),
  with its chips from the detected :class:`Inventory`; or the admin's Ansible inventory file
  for several nodes (each host sets its own ``appliance_root``/``appliance_chips`` there);
- extra vars: the chip table from the driver registry, the compatibility matrix and the
  package chosen for each component, and the plan's model directories.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

import yaml

from appliance.errors import UsageError
from appliance.provision.models import ProvisionReport
from appliance.provision.runner import Progress, new_run_id, run_playbook, runs_dir

LOCAL_HOST = "localhost"


def chip_table() -> list[dict]:
    """Rows for the ``appliance_host_facts`` module, from the one chip driver registry."""
    from chip_drivers import DRIVERS

    rows = []
    for cls in DRIVERS:
        if not cls.provision_role:
            continue
        rows.append({"role": cls.provision_role, "vendor": cls.vendor,
                     "vendor_ids": [v.lower() for v in cls.pci_vendor_ids],
                     "classes": sorted(set(cls.accelerator_classes))})
    return rows


def chips_of(inventory) -> list[str]:
    """Provision roles for the accelerators in a detected inventory, in registry order."""
    from chip_drivers import DRIVERS

    vendors = {a.vendor for a in inventory.accelerators}
    return [cls.provision_role for cls in DRIVERS if cls.vendor in vendors and cls.provision_role]


def plan_vars(plan) -> dict:
    """What the playbooks need from a plan: model directories and the plan's fingerprint."""
    if plan is None:
        return {}
    dirs = sorted({s.model_path for s in plan.services if s.model_path and s.model_path.startswith("/")})
    return {"appliance_model_dirs": dirs,
            "appliance_plan_hash": plan.plan_hash or plan.compute_hash()}


def _executable() -> str:
    found = shutil.which("appliance")
    return os.path.abspath(found) if found else "/usr/local/bin/appliance"


def local_inventory(run_dir: Path, *, root: str, manage_system: bool, chips: list[str] | None) -> Path:
    """An Ansible inventory with just this node, written into the run's private data dir."""
    from appliance.paths import data_dir

    host: dict = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "appliance_root": root,
        "appliance_manage_system": manage_system,
        "appliance_executable": _executable(),
    }
    if root == "/":
        # the agent must use the same data dir (state database) as this command
        host["appliance_data_dir"] = str(data_dir())
    if chips is not None:
        host["appliance_chips"] = chips
    path = run_dir / "inventory" / "hosts.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"all": {"hosts": {LOCAL_HOST: host}}}, sort_keys=True))
    return path


# Test and CI machines set this: a real run against "/" would change the machine itself (users,
# sysctl, Docker's daemon.json). Runs into a --root directory and check mode are unaffected.
NO_LIVE_ENV = "APPLIANCE_NO_LIVE_PROVISION"


def provision(*, inventory=None, plan=None, inventory_file: str | Path | None = None,
              root: str | Path | None = None, packages_dir: str | Path | None = None,
              check: bool = False, tags: Sequence[str] = (), skip_tags: Sequence[str] = (),
              limit: str | None = None, manage_system: bool | None = None,
              extra_vars: dict | None = None, progress: Progress | None = None,
              playbooks_dir: str | Path | None = None) -> ProvisionReport:
    """Run site.yml and return its report (never raises for a failed task: see the report).

    ``root``: provision into this directory instead of ``/`` (this node only); system-wide
    effects are then off unless ``manage_system=True``. ``inventory``: the detected node,
    whose chips select the chip roles (else each host's PCI sysfs decides).
    ``playbooks_dir``: run ``site.yml`` from this directory instead of the installed playbooks
    (an upgrade provisions with the playbooks its bundle carries).
    """
    from appliance.provision.compat import components_extravars
    from chip_drivers import VENDOR_IDS

    if inventory_file is not None and root is not None:
        raise UsageError("--root applies to this node only; with --inventory set appliance_root per host",
                         where="--root", fix="add appliance_root=<dir> to each host in the inventory file")
    if inventory_file is not None:
        inventory_file = Path(inventory_file)
        if not inventory_file.exists():
            raise UsageError("inventory file does not exist", where=str(inventory_file),
                             fix="pass an Ansible inventory file (INI or YAML), see docs/provisioning.md")
    pkg = Path(packages_dir).resolve() if packages_dir else None
    if pkg is not None and not pkg.is_dir():
        raise UsageError("package directory does not exist", where=str(packages_dir),
                         fix="pass the directory holding <vendor>/<component>/<version>/ packages")
    extravars = {
        "appliance_chip_table": chip_table(),
        "appliance_packages_dir": str(pkg) if pkg else "",
        "appliance_components": components_extravars(pkg, list(VENDOR_IDS)),
        **plan_vars(plan),
        **(extra_vars or {}),
    }
    run_id = new_run_id()
    if inventory_file is None:
        root_s = str(Path(root).resolve()) if root is not None else "/"
        if root_s == "/" and not check and os.environ.get(NO_LIVE_ENV) == "1":
            raise UsageError(f"provisioning this machine itself is switched off here ({NO_LIVE_ENV}=1)",
                             where="provision",
                             fix="use --root DIR or check mode, or unset the variable on a real node")
        if manage_system is None:
            manage_system = root_s == "/"
        run_dir = runs_dir() / run_id
        inventory_file = local_inventory(run_dir, root=root_s, manage_system=manage_system,
                                         chips=chips_of(inventory) if inventory is not None else None)
    elif manage_system is not None:
        extravars["appliance_manage_system"] = manage_system
    playbook = None
    if playbooks_dir is not None:
        playbook = Path(playbooks_dir).resolve() / "site.yml"
        if not playbook.is_file():
            raise UsageError("no site.yml in the playbooks directory", where=str(playbooks_dir),
                             fix="pass a directory laid out like the shipped playbooks/")
    return run_playbook(inventory_file=inventory_file, extravars=extravars, run_id=run_id, check=check,
                        playbook=playbook,
                        tags=list(tags), skip_tags=list(skip_tags), limit=limit, progress=progress)
