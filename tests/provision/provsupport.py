"""Helpers for the provisioning tests (imported by name: conftest.py puts this folder on sys.path).

Fake roots, node snapshot roots, inventories, the CLI.

The playbooks run for real through ansible-runner against localhost (local connection) with
every path under a temporary root and ``appliance_manage_system: false``; only hardware is
faked, through node snapshots or PCI sysfs files written here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import NODES, REPO  # noqa: F401 - REPO re-exported to the provisioning tests


def snapshot_dir(name: str) -> Path:
    if (NODES / name).is_dir():
        return NODES / name
    raise FileNotFoundError(f"node snapshot {name} not found under {NODES}")


def copy_snapshot_root(name: str, dest: Path) -> Path:
    """A writable copy of a node snapshot's ``root/`` (playbooks never write into fixtures)."""
    shutil.copytree(snapshot_dir(name) / "root", dest, symlinks=True)
    for dirpath, _dirnames, filenames in os.walk(dest):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    return dest


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def add_pci(root: Path, bdf: str, vendor: str, device: str, pci_class: str) -> None:
    """One PCI function in sysfs under ``root`` (what layer a of detection and the fact read)."""
    base = f"/sys/bus/pci/devices/{bdf}"
    write(root, f"{base}/vendor", f"0x{vendor}\n")
    write(root, f"{base}/device", f"0x{device}\n")
    write(root, f"{base}/class", f"0x{pci_class}\n")
    write(root, f"{base}/subsystem_vendor", f"0x{vendor}\n")
    write(root, f"{base}/subsystem_device", "0x0000\n")
    write(root, f"{base}/numa_node", "-1\n")


def tree_state(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its type, mode and content hash: equal means untouched."""
    state: dict[str, tuple] = {}
    if not root.exists():
        return state
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
            state[str(p.relative_to(root))] = (st.st_mode, digest, st.st_mtime_ns if digest is None else None)
    return state


def inventory_file(path: Path, hosts: dict[str, dict]) -> Path:
    """An Ansible YAML inventory of local-connection hosts, each with its own root."""
    out = {}
    for name, hostvars in hosts.items():
        out[name] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "appliance_manage_system": False, **hostvars}
    path.write_text(yaml.safe_dump({"all": {"hosts": out}}, sort_keys=True))
    return path


def run_cli(*args: str, env: dict | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout_s)


@contextlib.contextmanager
def data_dir_env(path: Path):
    """APPLIANCE_DATA_DIR for module-scoped fixtures (the autouse fixture is per test)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APPLIANCE_DATA_DIR", str(path))
        yield path


def statuses(report, host: str, prefix: str) -> dict[str, str]:
    """task name -> status for one host's tasks whose name starts with ``prefix``."""
    return {t.task: t.status for t in report.tasks if t.host == host and t.task.startswith(prefix)}
