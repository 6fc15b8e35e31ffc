"""``appliance init --inventory FILE``: bring the cluster plan up, node by node, through Ansible.

Why this shape: every node already knows how to install and converge its own stack
(``appliance init``: preflight, images, blue/green behind health gates, a recorded release, an
agent that keeps it converged). The controller only decides what each node runs and starts the
nodes in dependency order with the multi-host engine provisioning already uses:

1. gather every node's inventory (``playbooks/cluster_detect.yml``) and plan across the nodes;
2. the **workers** (``playbooks/cluster_up.yml``): each runs ``appliance init`` for its models in
   worker mode -- no gateway, no apps; its engines published on the node's address, each behind
   a secret the controller chose (copied as a 0600 file, never in Ansible's output or artifacts);
3. the **head**: ``appliance init`` with the list of the workers' engines (address, served models,
   role; their secrets in 0600 files), so its gateway routes each model to the node serving it.

Each node's init is health-gated, so the head starts only after every worker's engines answer.
A model planned across nodes is not started yet (``init --inventory`` refuses it with one line):
see docs/cluster.md "Not yet".
"""

from __future__ import annotations

import json
import logging
import os
import secrets as _random
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from appliance.cluster.models import ClusterInventory, ClusterPlan
from appliance.errors import ProvisionError, UsageError

log = logging.getLogger("appliance.cluster.bringup")
DEFAULT_NODE_DATA_DIR = "/var/lib/appliance"
TIMEOUT_S = 3600
REMOTE_ENGINES_FILE = "remote_engines.json"
REMOTE_ENGINES_FORMAT = "appliance-remote-engines/1"


class NodeResult(BaseModel):
    node: str
    role: str = Field(description="head | worker")
    models: list[str]
    engines: dict[str, str] = Field(default_factory=dict, description="service -> URL the head's gateway uses")


class ClusterInitResult(BaseModel):
    head: str
    gateway: str | None = Field(default=None, description="the head's gateway base URL")
    nodes: list[NodeResult]
    plan: ClusterPlan


def remote_key(node: str, service: str) -> str:
    """How the head names a worker's engine (its secret, its route): ``<service>.<node>``."""
    return f"{service}.{node}"


def _node_data_dir(cluster: ClusterInventory, name: str) -> str:
    return cluster.node(name).data_dir or DEFAULT_NODE_DATA_DIR


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _common_args(*, demo: bool, profile: str, health_timeout_s: float | None) -> list[str]:
    args = ["init", "--yes", "--quiet", "--profile", profile, "--demo" if demo else "--no-demo"]
    if health_timeout_s:
        args += ["--health-timeout", f"{health_timeout_s:g}"]
    return args


def _run(cluster: ClusterInventory, hosts: list[str], parts: dict, *, say, phase: str) -> None:
    from appliance.paths import playbooks_dir
    from appliance.provision.runner import run_playbook

    def progress(kind, data) -> None:
        if kind == "result" and data.status in ("changed", "failed", "unreachable"):
            say(f"{phase}: {data.host}: {data.task} {data.status}")

    report = run_playbook(inventory_file=cluster.source, extravars={"appliance_cluster_parts": parts},
                          playbook=playbooks_dir() / "cluster_up.yml", limit=",".join(hosts), progress=progress,
                          timeout_s=TIMEOUT_S)
    if report.status != "successful":
        first = report.failures[0] if report.failures else None
        raise ProvisionError(f"{phase} failed on {first.host}: {first.message}" if first else
                             f"{phase} failed: {report.error}", where=f"ansible run {report.run_id}",
                             fix=f"see the node's output in {report.artifacts_dir}; fix it on the node and run "
                                 "the command again")


def init_cluster(inventory_file: str, *, models: list[str] | None = None, demo: bool = False,
                 policy: str = "binpack", replicas: int = 1, profile: str = "default", bind_ip: str | None = None,
                 insecure_http: bool = False, health_timeout_s: float | None = None, bundle: str | None = None,
                 say=None) -> ClusterInitResult:
    from appliance.catalog import load_catalog
    from appliance.cluster.gather import gather
    from appliance.cluster.hosts import load_inventory
    from appliance.cluster.planner import plan_cluster
    from appliance.runtime.compose import worker_engine_ports
    from appliance.runtime.models import DEFAULT_ENGINE_PORT_BASE, DEFAULT_GATEWAY_PORT

    say = say or (lambda message: None)
    if bundle is not None and not Path(bundle).is_file():
        raise UsageError("the bundle file does not exist", where=str(bundle), fix="pass the offline bundle's path")
    cluster = load_inventory(inventory_file)

    def with_bundle(name: str, files: list[dict], argv: list[str]) -> dict:
        """A node's part, installed from the bundle (copied to the node) when one is given."""
        if bundle is None:
            return {"files": files, "argv": argv}
        more, dest = _bundle_files(cluster, name, Path(bundle))
        return {"files": files + more, "argv": [*argv, "--bundle", dest]}

    say(f"gathering the inventories of {len(cluster.nodes)} node(s) through Ansible")
    facts = gather(cluster)
    say("planning across the nodes")
    plan = plan_cluster(cluster, facts, load_catalog(), models, policy=policy, profile=profile, demo=demo,
                        replicas=replicas)
    spans = [p.model for p in plan.placements if p.mode != "node"]
    if spans:
        raise UsageError(f"{', '.join(spans)} is planned across nodes; `init --inventory` does not start a model "
                         "across nodes yet", where="init --inventory",
                         fix="serve models that fit one node (--models), or see docs/cluster.md \"Not yet\"")
    errors = [f for f in plan.preflight if f.severity == "error"]
    if errors:
        raise UsageError(f"cluster preflight: {errors[0].subject}: {errors[0].message}", where="init --inventory",
                         fix=errors[0].fix)
    head = cluster.head.name
    common = _common_args(demo=demo, profile=profile, health_timeout_s=health_timeout_s)
    results: list[NodeResult] = []
    remotes: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="appliance-cluster-up-") as tmp:
        os.chmod(tmp, 0o700)
        workers = [n.name for n in cluster.nodes if n.name != head and plan.node_plans.get(n.name)]
        parts: dict[str, dict] = {}
        for w in workers:
            node = cluster.node(w)
            services = [s for s in plan.node_plans[w].services]
            ports = worker_engine_ports([s.name for s in services])  # what the worker's compose assigns
            files = []
            engines = {}
            for s in services:
                secret = _random.token_urlsafe(32)
                src = Path(tmp) / w / "secrets" / s.name
                _write_secret(src, secret + "\n")
                files.append({"src": str(src), "dest": f"{_node_data_dir(cluster, w)}/cluster/secrets/{s.name}"})
                url = f"http://{node.address}:{ports[s.name]}"
                engines[s.name] = url
                remotes.append({"node": w, "service": s.name, "key": remote_key(w, s.name), "url": url,
                                "served_models": [s.served_model_name], "role": s.role, "secret": secret})
            parts[w] = with_bundle(w, files, [
                *common, "--models", ",".join(s.model for s in services), "--cluster-worker", node.address,
                "--engine-port-base", str(DEFAULT_ENGINE_PORT_BASE),
                "--cluster-secrets", f"{_node_data_dir(cluster, w)}/cluster/secrets"])
            results.append(NodeResult(node=w, role="worker", models=[s.model for s in services], engines=engines))
        if workers:
            say(f"starting the workers: {', '.join(workers)}")
            _run(cluster, workers, parts, say=say, phase="workers")
        head_models = [s.model for s in plan.node_plans[head].services] if head in plan.node_plans else []
        src = Path(tmp) / head / REMOTE_ENGINES_FILE
        _write_secret(src, json.dumps({"format": REMOTE_ENGINES_FORMAT, "engines": remotes}, indent=1) + "\n")
        argv = [*common, "--models", ",".join(head_models) or "none",
                "--cluster-head", f"{_node_data_dir(cluster, head)}/cluster/{REMOTE_ENGINES_FILE}",
                "--bind", bind_ip or cluster.head.address]
        if insecure_http:
            argv.append("--insecure-http")
        say(f"starting the head: {head}")
        _run(cluster, [head], {head: with_bundle(head, [{"src": str(src), "dest": argv[argv.index("--cluster-head")
                                                                                          + 1]}], argv)},
             say=say, phase="head")
    results.insert(0, NodeResult(node=head, role="head", models=head_models))
    host = bind_ip or cluster.head.address
    gw_port = DEFAULT_GATEWAY_PORT
    gateway = f"{'http' if insecure_http else 'https'}://{host}:{gw_port}/v1"
    return ClusterInitResult(head=head, gateway=gateway, nodes=results, plan=plan)


class NodeUpgrade(BaseModel):
    node: str
    state: str = Field(description="upgraded | failed | rolled back | not reached")
    detail: str = ""


class ClusterUpgradeResult(BaseModel):
    ok: bool
    bundle: str
    nodes: list[NodeUpgrade]


def _bundle_files(cluster: ClusterInventory, name: str, bundle: Path) -> tuple[list[dict], str]:
    dest = f"{_node_data_dir(cluster, name)}/cluster/bundles/{bundle.name}"
    return [{"src": str(bundle), "dest": dest}], dest


def upgrade_cluster(inventory_file: str, bundle: str, *, allow_downgrade: bool = False, say=None,
                    ) -> ClusterUpgradeResult:
    """``appliance upgrade --inventory FILE BUNDLE``: every node to the bundle's one release
    version, node by node -- the workers first, one at a time, then the head -- each node's own
    ``appliance upgrade`` (verified, journaled, blue/green behind its health gates, rolled back
    on its own failure). When a node fails, the nodes already upgraded are rolled back
    (``appliance rollback --yes``), the later ones are not touched, and the command fails naming
    the node.
    """
    from appliance.cluster.hosts import load_inventory

    say = say or (lambda message: None)
    path = Path(bundle)
    if not path.is_file():
        raise UsageError("the bundle file does not exist", where=str(path), fix="pass the offline bundle's path")
    cluster = load_inventory(inventory_file)
    order = [n.name for n in cluster.nodes if not n.head] + [cluster.head.name]
    done: list[str] = []
    results = {n: NodeUpgrade(node=n, state="not reached") for n in order}
    for name in order:
        files, dest = _bundle_files(cluster, name, path)
        argv = ["upgrade", dest, "--yes", "--quiet"] + (["--allow-downgrade"] if allow_downgrade else [])
        say(f"upgrading {name}")
        try:
            _run(cluster, [name], {name: {"files": files, "argv": argv}}, say=say, phase=f"upgrade of {name}")
        except ProvisionError as exc:
            results[name] = NodeUpgrade(node=name, state="failed", detail=exc.one_line()[:500])
            for back in reversed(done):
                say(f"rolling {back} back")
                try:
                    _run(cluster, [back], {back: {"files": [], "argv": ["rollback", "--yes", "--quiet"]}}, say=say,
                         phase=f"rollback of {back}")
                    results[back] = NodeUpgrade(node=back, state="rolled back")
                except ProvisionError as again:
                    results[back] = NodeUpgrade(node=back, state="failed", detail=f"rollback: {again.one_line()}"[:500])
            return ClusterUpgradeResult(ok=False, bundle=str(path), nodes=[results[n] for n in order])
        results[name] = NodeUpgrade(node=name, state="upgraded")
        done.append(name)
    return ClusterUpgradeResult(ok=True, bundle=str(path), nodes=[results[n] for n in order])
