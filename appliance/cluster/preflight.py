"""Rules between nodes that a single node's preflight cannot see.

For every model across nodes: the same accelerator model and driver on each of its nodes (the
engines' collective libraries -- NCCL, HCCL -- need it), RDMA/RoCE NICs on each node where the
engine's mode needs them (read from PCI sysfs under the node's root, so it runs the same on a
snapshot), and time sync (read from the node's root: chrony, systemd-timesyncd or ntpd
configured). For the cluster: exactly one head, distinct node addresses.
"""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.catalog.schema import Catalog
from appliance.cluster.models import ClusterInventory, ClusterPlan, PreflightFinding
from appliance.inventory.models import Inventory

log = logging.getLogger("appliance.cluster.preflight")

MELLANOX = "0x15b3"
RDMA_CLASSES = ("0x0207",)  # InfiniBand controller; Ethernet (0x0200) counts when the vendor is Mellanox
TIME_SYNC_FILES = ("etc/chrony/chrony.conf", "etc/chrony.conf", "etc/systemd/timesyncd.conf", "etc/ntp.conf",
                   "etc/ntpsec/ntp.conf")


def node_root(inv: Inventory, fallback: str | None) -> Path | None:
    """The file-system root detection read: a snapshot's ``root/``, or the node's own."""
    if inv.source.startswith("snapshot:"):
        return Path(inv.source.split(":", 1)[1]) / "root"
    return Path(fallback or "/")


def rdma_nics(root: Path) -> list[str]:
    """PCI addresses of RDMA-capable NICs (InfiniBand/RoCE) under ``root``'s sysfs."""
    found = []
    devices = root / "sys" / "bus" / "pci" / "devices"
    try:
        entries = sorted(devices.iterdir())
    except OSError:
        return []
    for dev in entries:
        try:
            cls = (dev / "class").read_text().strip()[:6]
            vendor = (dev / "vendor").read_text().strip()
        except OSError:
            continue
        if cls in RDMA_CLASSES or (vendor == MELLANOX and cls == "0x0200"):
            found.append(dev.name)
    return found


def time_sync(root: Path) -> str | None:
    return next((f for f in TIME_SYNC_FILES if (root / f).is_file()), None)


def check(cluster: ClusterInventory, facts: dict[str, Inventory], plan: ClusterPlan,
          cat: Catalog) -> list[PreflightFinding]:
    out: list[PreflightFinding] = []
    heads = [n.name for n in cluster.nodes if n.head]
    if len(heads) != 1:
        out.append(PreflightFinding(rule="one_head", severity="error", subject="cluster",
                                    message=f"{len(heads)} nodes are marked as the head ({', '.join(heads)})",
                                    fix="mark exactly one host with appliance_head=true (or put it in group head)"))
    seen: dict[str, str] = {}
    for n in cluster.nodes:
        if n.address in seen:
            out.append(PreflightFinding(rule="distinct_addresses", severity="error", subject=n.name,
                                        message=f"{n.name} and {seen[n.address]} share the address {n.address}",
                                        fix="set ansible_host to each node's own address"))
        seen.setdefault(n.address, n.name)
    for p in plan.placements:
        if p.mode == "node":
            continue
        for rule, what, value, fix in (
                ("same_accelerators", "have different accelerators", lambda a: a.model or "?",
                 "span only nodes with the same accelerator model"),
                ("same_driver", "run different drivers", lambda a: a.driver_version or "unknown",
                 "install the same driver version on every node (appliance provision --inventory FILE)")):
            seen_values = {n: sorted({value(a) for a in facts[n].accelerators}) for n in p.nodes}
            if len({tuple(v) for v in seen_values.values()}) > 1:
                out.append(PreflightFinding(rule=rule, severity="error", subject=p.service, fix=fix,
                                            message=f"its nodes {what}: " + "; ".join(
                                                f"{n}: {', '.join(v)}" for n, v in seen_values.items())))
        eng = cat.engines[p.engine]
        for n in p.nodes:
            root = node_root(facts[n], cluster.node(n).root)
            if eng.multi_node and eng.multi_node.needs_rdma and eng.backend != "cann" and root is not None:
                if not rdma_nics(root):
                    out.append(PreflightFinding(
                        rule="rdma", severity="error", subject=n,
                        message=f"{p.service} spans nodes with {p.engine}, but {n} has no RDMA/RoCE NIC "
                                "(no InfiniBand or Mellanox device in PCI)",
                        fix="install RDMA NICs (InfiniBand/RoCE) on every node it spans, or serve a model that "
                            "fits one node"))
            if root is not None and time_sync(root) is None:
                out.append(PreflightFinding(
                    rule="time_sync", severity="warning", subject=n,
                    message=f"{n} has no time synchronisation configured (chrony, timesyncd or ntpd)",
                    fix="configure chrony against the site's time server on every node"))
    return out
