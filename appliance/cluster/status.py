"""``appliance status --inventory FILE``: the cluster at a glance, from every node's own status.

Why each node's ``appliance status --json`` through Ansible: the node's report is already the
one definition of its health (services, problems with fixes, exit codes); the cluster view only
gathers them (``playbooks/cluster_status.yml``) and names the node in front of each problem. A
node that does not answer (unreachable, no report) is a problem of its own. Exit codes as
``status``: 0 every node healthy, 1 degraded (a node is not healthy: the problems name it), 2
the head cannot tell (its Docker engine is down, or nothing is installed there).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from appliance.cluster.hosts import load_inventory

log = logging.getLogger("appliance.cluster.status")
CLUSTER_STATUS_FORMAT = "appliance-cluster-status/1"
MAX_REPORT_BYTES = 4 << 20
TIMEOUT_S = 300


class NodeProblem(BaseModel):
    node: str
    severity: str
    code: str
    subject: str
    message: str
    fix: str


class NodeStatus(BaseModel):
    node: str
    head: bool
    address: str
    status: str = Field(description="the node's own status: healthy, degraded, unknown, not_installed; "
                        "unreachable when it gave no report")
    summary: str
    services: list[dict] = Field(default_factory=list, description="name, kind, state, health of each service")
    models: list[str] = Field(default_factory=list)


class ClusterStatus(BaseModel):
    format: str = CLUSTER_STATUS_FORMAT
    status: str = Field(description="healthy | degraded | unknown")
    exit_code: int
    summary: str
    head: str
    nodes: list[NodeStatus]
    problems: list[NodeProblem] = Field(default_factory=list)


def _read(path: Path) -> dict | None:
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "status" in doc else None


def cluster_status(inventory_file: str) -> ClusterStatus:
    from appliance.paths import playbooks_dir
    from appliance.provision.runner import run_playbook

    cluster = load_inventory(inventory_file)
    with tempfile.TemporaryDirectory(prefix="appliance-cluster-status-") as tmp:
        report = run_playbook(inventory_file=cluster.source, extravars={"appliance_cluster_out": tmp},
                              playbook=playbooks_dir() / "cluster_status.yml", timeout_s=TIMEOUT_S)
        docs = {n.name: _read(Path(tmp) / f"{n.name}.json") for n in cluster.nodes}
    failed = {t.host: t.message for t in report.failures}
    nodes: list[NodeStatus] = []
    problems: list[NodeProblem] = []
    for n in cluster.nodes:
        doc = docs[n.name]
        if doc is None:
            why = failed.get(n.name) or "it gave no status report"
            nodes.append(NodeStatus(node=n.name, head=n.head, address=n.address, status="unreachable",
                                    summary=f"no report: {why}"[:300]))
            problems.append(NodeProblem(node=n.name, severity="error", code="node_unreachable", subject=n.name,
                                        message=f"{n.name} ({n.address}) did not report its status: {why}"[:500],
                                        fix=f"check that {n.name} is up and reachable by Ansible "
                                            f"(ansible -i {inventory_file} {n.name} -m ping)"))
            continue
        nodes.append(NodeStatus(
            node=n.name, head=n.head, address=n.address, status=str(doc["status"]),
            summary=str(doc.get("summary") or ""),
            services=[{k: s.get(k) for k in ("name", "kind", "state", "health")} for s in doc.get("services") or []
                      if isinstance(s, dict)],
            models=sorted({str(m.get("model")) for m in doc.get("models") or [] if isinstance(m, dict)})))
        for p in doc.get("problems") or []:
            if isinstance(p, dict):
                problems.append(NodeProblem(node=n.name, severity=str(p.get("severity") or "error"),
                                            code=str(p.get("code") or ""), subject=f"{n.name}: {p.get('subject')}",
                                            message=f"{n.name}: {p.get('message')}", fix=str(p.get("fix") or "")))
        if doc["status"] != "healthy" and not any(p.node == n.name and p.severity == "error" for p in problems):
            problems.append(NodeProblem(node=n.name, severity="error", code=f"node_{doc['status']}", subject=n.name,
                                        message=f"{n.name}: {doc.get('summary') or doc['status']}",
                                        fix=f"run `appliance status` on {n.name}"))
    head = next(x for x in nodes if x.head)
    bad = [x.node for x in nodes if x.status != "healthy"]
    if head.status in ("unreachable", "unknown", "not_installed"):
        status, code = "unknown", 2
        summary = f"the head {head.node} cannot tell: {head.summary}"
    elif bad:
        status, code = "degraded", 1
        summary = f"degraded: {', '.join(bad)} not healthy ({len(nodes) - len(bad)}/{len(nodes)} nodes healthy)"
    else:
        status, code = "healthy", 0
        summary = f"all {len(nodes)} nodes healthy"
    return ClusterStatus(status=status, exit_code=code, summary=summary, head=head.node, nodes=nodes,
                         problems=problems)
