"""Each node's inventory, gathered through Ansible (``appliance cluster detect``), and kept.

Why Ansible: it is already the multi-host engine of provisioning -- the same inventory, SSH
settings and privilege escalation reach every node; there is no second remote protocol. The
playbook (``playbooks/cluster_detect.yml``) runs ``appliance detect --json`` on each host and
copies the JSON back; each is kept under ``<data dir>/cluster/nodes/<host>.json`` (atomic
writes), which is what ``appliance plan --inventory`` plans from. A host with
``appliance_snapshot`` is read from its snapshot directly when planning (no Ansible needed).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from appliance.cluster.models import ClusterInventory
from appliance.errors import ProvisionError, UsageError
from appliance.inventory.models import Inventory, inventory_from_dict

log = logging.getLogger("appliance.cluster.gather")
MAX_INVENTORY_BYTES = 8 << 20
TIMEOUT_S = 600


def nodes_dir() -> Path:
    from appliance.paths import data_dir

    return data_dir() / "cluster" / "nodes"


def _read(path: Path, host: str) -> Inventory:
    if path.stat().st_size > MAX_INVENTORY_BYTES:
        raise ProvisionError(f"{host} sent an inventory of {path.stat().st_size:,} bytes (at most "
                             f"{MAX_INVENTORY_BYTES:,})", where=str(path), fix="check `appliance detect --json` there")
    try:
        return inventory_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise ProvisionError(f"{host} sent no inventory: {exc}", where=str(path),
                             fix=f"run `appliance detect --json` on {host} and check its output") from None


def gather(cluster: ClusterInventory, *, progress=None) -> dict[str, Inventory]:
    """Run the detect playbook on every node; returns and keeps each node's inventory."""
    from appliance.atomic import write_atomic
    from appliance.paths import playbooks_dir
    from appliance.provision.runner import run_playbook

    with tempfile.TemporaryDirectory(prefix="appliance-cluster-") as tmp:
        report = run_playbook(inventory_file=cluster.source, extravars={"appliance_cluster_out": tmp},
                              playbook=playbooks_dir() / "cluster_detect.yml", progress=progress,
                              timeout_s=TIMEOUT_S)
        if report.status != "successful":
            first = report.failures[0] if report.failures else None
            raise ProvisionError(
                f"cluster detect failed on {first.host}: {first.message}" if first else
                f"cluster detect failed: {report.error}", where=f"ansible run {report.run_id}",
                fix=f"see the run's artifacts in {report.artifacts_dir}")
        out: dict[str, Inventory] = {}
        for node in cluster.nodes:
            got = Path(tmp) / f"{node.name}.json"
            if not got.is_file():
                raise ProvisionError(f"{node.name} returned no inventory", where=f"ansible run {report.run_id}",
                                     fix=f"see the run's artifacts in {report.artifacts_dir}")
            out[node.name] = _read(got, node.name)
    keep = nodes_dir()
    keep.mkdir(parents=True, exist_ok=True)
    for name, inv in out.items():
        write_atomic(keep / f"{name}.json", inv.model_dump_json(indent=2) + "\n")
    return out


def known_facts(cluster: ClusterInventory) -> dict[str, Inventory]:
    """Each node's inventory for planning: its snapshot's, else the one ``cluster detect`` kept."""
    from appliance.inventory.detect import detect

    out: dict[str, Inventory] = {}
    missing = []
    for node in cluster.nodes:
        if node.snapshot:
            out[node.name] = detect(snapshot=node.snapshot, usage=False)
            continue
        kept = nodes_dir() / f"{node.name}.json"
        if kept.is_file():
            out[node.name] = _read(kept, node.name)
        else:
            missing.append(node.name)
    if missing:
        raise UsageError(f"no inventory gathered for {', '.join(missing)}", where=cluster.source,
                         fix=f"run `appliance cluster detect --inventory {cluster.source}` first")
    return out
