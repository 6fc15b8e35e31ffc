"""The cluster's nodes: the admin's Ansible inventory (INI or YAML), read by Ansible itself.

Why ``ansible-inventory --list``: the inventory is already how provisioning reaches every host
(groups, ``ansible_host``, variables in any of Ansible's formats); reading it with Ansible's own
parser means the cluster sees exactly the hosts ``provision --inventory`` reaches. The head is
the host with ``appliance_head: true``, or the only host of a group named ``head``; with
neither, the first host. ``appliance_snapshot`` plans a host from a node snapshot instead of
its live hardware (planning a rack before it is racked; tests); ``appliance_serve: false`` keeps
models off a host (a head that runs only the gateway, console and state).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from appliance.cluster.models import ClusterInventory, ClusterNode
from appliance.errors import UsageError

log = logging.getLogger("appliance.cluster.hosts")
MAX_NODES = 256
TIMEOUT_S = 60.0


def _tool() -> str:
    here = Path(sys.executable).parent / "ansible-inventory"
    return str(here) if here.exists() else "ansible-inventory"


def _true(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "1"))


def load_inventory(path: str | os.PathLike) -> ClusterInventory:
    """The nodes of the inventory file ``path`` (exit 2 with one line on anything wrong)."""
    from appliance import subproc

    path = Path(path)
    if not path.is_file():
        raise UsageError("inventory file does not exist", where=str(path),
                         fix="pass an Ansible inventory file (INI or YAML), see docs/cluster.md")
    res = subproc.run([_tool(), "-i", str(path), "--list"], timeout_s=TIMEOUT_S,
                      env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
                           "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true"})
    if res.not_found:
        raise UsageError("ansible-inventory is not installed", where="cluster",
                         fix="install appliance with its dependencies (ansible-core comes with ansible-runner)")
    if res.exit_code != 0:
        last = (res.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise UsageError(f"Ansible cannot read the inventory: {last[0][:300]}", where=str(path),
                         fix="check it with `ansible-inventory -i FILE --list`")
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        raise UsageError("ansible-inventory printed no JSON", where=str(path),
                         fix="check it with `ansible-inventory -i FILE --list`") from None
    hostvars = (doc.get("_meta") or {}).get("hostvars") or {}
    ordered: list[str] = []

    def walk(group: str, seen: set[str]) -> None:
        if group in seen:
            return
        seen.add(group)
        entry = doc.get(group) or {}
        for h in entry.get("hosts") or []:
            if h not in ordered:
                ordered.append(h)
        for child in entry.get("children") or []:
            walk(child, seen)

    walk("all", set())
    for h in hostvars:
        if h not in ordered:
            ordered.append(h)
    if not ordered:
        raise UsageError("the inventory lists no hosts", where=str(path), fix="add the cluster's nodes to it")
    if len(ordered) > MAX_NODES:
        raise UsageError(f"the inventory lists {len(ordered)} hosts; at most {MAX_NODES}", where=str(path),
                         fix="split the rack into clusters of at most 256 nodes")
    head_group = [h for h in (doc.get("head") or {}).get("hosts") or []]
    marked = [h for h in ordered if _true((hostvars.get(h) or {}).get("appliance_head"))]
    if len(marked) > 1 or (not marked and len(head_group) > 1):
        raise UsageError(f"more than one head: {', '.join(marked or head_group)}", where=str(path),
                         fix="mark exactly one host with appliance_head=true (or put one host in group head)")
    head = (marked or head_group or ordered[:1])[0]
    nodes = []
    for h in ordered:
        v = hostvars.get(h) or {}
        snap = v.get("appliance_snapshot")
        if snap is not None:
            snap_path = Path(str(snap))
            if not snap_path.is_absolute():
                snap_path = path.parent / snap_path
            if not snap_path.is_dir():
                raise UsageError(f"appliance_snapshot of {h} is not a directory: {snap}", where=str(path),
                                 fix="point it at a node snapshot (appliance snapshot create)")
            snap = str(snap_path.resolve())
        nodes.append(ClusterNode(name=h, head=h == head, address=str(v.get("ansible_host") or h), snapshot=snap,
                                 root=str(v["appliance_root"]) if v.get("appliance_root") else None,
                                 serve=not ("appliance_serve" in v and not _true(v["appliance_serve"])),
                                 data_dir=str(v["appliance_data_dir"]) if v.get("appliance_data_dir") else None))
    return ClusterInventory(source=str(path), nodes=nodes)
