"""Typed models of a cluster: its nodes, what each node's part of a placement runs, the plan."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from appliance.planner.models import DeviceRef, MemoryBudget, Plan, Rejected

CLUSTER_PLAN_FORMAT = "appliance.cluster-plan/1"
Policy = Literal["binpack", "spread"]


class ClusterNode(BaseModel):
    """One host of the Ansible inventory."""

    name: str = Field(description="the inventory host name")
    head: bool = Field(default=False, description="runs the gateway, the console and the state")
    address: str = Field(description="how the other nodes reach it (ansible_host, else the name)")
    snapshot: str | None = Field(default=None, description="appliance_snapshot: detect from this node snapshot "
                                 "(planning ahead, tests) instead of the live node")
    root: str | None = Field(default=None, description="appliance_root: the node's file-system root")
    serve: bool = Field(default=True, description="appliance_serve: false keeps models off this node (a head that "
                        "runs only the gateway, the console and the state)")
    data_dir: str | None = Field(default=None, description="appliance_data_dir: the node's data directory")


class ClusterInventory(BaseModel):
    source: str = Field(description="the inventory file")
    nodes: list[ClusterNode]

    @property
    def head(self) -> ClusterNode:
        return next(n for n in self.nodes if n.head)

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == name)


class NodePart(BaseModel):
    """What one node runs for a placement: for a model across nodes, the distributed runtime's
    head or worker (``runtime_command``) and, where the engine's mode says so, the launcher."""

    node: str
    rank: int = Field(description="0 on the placement's first node")
    role: Literal["single", "head", "worker"]
    devices: list[DeviceRef] = Field(default_factory=list)
    runtime_command: list[str] = Field(default_factory=list, description="ray start ... (ray-pipeline mode)")
    entrypoint: list[str] = Field(default_factory=list)
    command: list[str] = Field(default_factory=list, description="the engine's launcher; empty on a Ray worker")
    env: dict[str, str] = Field(default_factory=dict)


class ClusterPlacement(BaseModel):
    model: str
    service: str
    engine: str
    image: str
    precision: str
    mode: Literal["node", "ray-pipeline", "native-tp"] = Field(description="node: on one node; otherwise the "
                                                                "engine's multi-node mode")
    nodes: list[str]
    tensor_parallel: int = Field(description="what the engine is given as tensor parallel")
    pipeline_parallel: int = 1
    devices_per_node: int
    memory_mib_per_device: int
    memory: MemoryBudget | None = None
    port: int
    ports_between_nodes: dict[str, int] = Field(default_factory=dict, description="ray / dist-init -> port")
    parts: list[NodePart]
    source: str | None = Field(default=None, description="the engine's multi-node documentation")


class PreflightFinding(BaseModel):
    rule: str
    severity: Literal["error", "warning"]
    subject: str
    message: str
    fix: str


class NodeSummary(BaseModel):
    name: str
    head: bool
    address: str
    accelerators: str = Field(description="e.g. '8 x Ascend 910B3 (65,536 MiB)'")
    devices: int
    devices_used: int
    driver: str | None = None


class ClusterPlan(BaseModel):
    format: str = CLUSTER_PLAN_FORMAT
    policy: Policy
    head: str
    nodes: list[NodeSummary]
    placements: list[ClusterPlacement] = Field(default_factory=list)
    node_plans: dict[str, Plan] = Field(default_factory=dict, description="each node's single-node plan (what "
                                        "runs only there)")
    rejected: list[Rejected] = Field(default_factory=list)
    preflight: list[PreflightFinding] = Field(default_factory=list)
    explain: list[str] = Field(default_factory=list)
