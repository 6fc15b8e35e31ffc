"""Cluster inventories over the node snapshots (hardware faked only through snapshots)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NODES = Path(__file__).resolve().parents[1] / "fixtures" / "nodes"
ASCEND8 = NODES / "ascend-910b-8npu"
H100X8 = NODES / "nvidia-h100-8gpu-nodriver"
CPU = NODES / "cpu-only"


def write_inventory(path: Path, hosts: dict[str, dict]) -> Path:
    """A YAML Ansible inventory: host -> variables."""
    import yaml

    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
    return path


def snapshot_copy(tmp: Path, source: Path, name: str) -> Path:
    """A node snapshot to change (a different driver, no NICs): the changed hardware is a snapshot."""
    dest = tmp / name
    shutil.copytree(source, dest, symlinks=True)
    return dest


@pytest.fixture
def two_ascend(tmp_path) -> Path:
    return write_inventory(tmp_path / "hosts.yml", {
        "npu1": {"ansible_host": "10.0.0.1", "appliance_head": True, "appliance_snapshot": str(ASCEND8)},
        "npu2": {"ansible_host": "10.0.0.2", "appliance_snapshot": str(ASCEND8)}})


@pytest.fixture
def two_h100(tmp_path) -> Path:
    return write_inventory(tmp_path / "hosts.yml", {
        "gpu1": {"ansible_host": "10.1.0.1", "appliance_head": True, "appliance_snapshot": str(H100X8)},
        "gpu2": {"ansible_host": "10.1.0.2", "appliance_snapshot": str(H100X8)}})
