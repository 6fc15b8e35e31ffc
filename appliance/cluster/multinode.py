"""One model across several nodes, the way each engine documents it (catalog ``multi_node``).

Why a module apart from the single-node planner: a single-node candidate is (engine, precision,
tensor parallel) on one device group; here it is that on ``k`` identical, entirely free nodes,
with the memory split of the engine's mode (:func:`appliance.planner.memory.pipeline_budget`)
and, per node, what runs there: the Ray head or a Ray worker plus the launcher on the head
(``ray-pipeline``: vLLM, vllm-ascend), or the launcher with its node rank on every node
(``native-tp``: SGLang). The launcher's own arguments come from the single-node renderer
(:func:`appliance.planner.core.render_service`), so both paths build the same command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.catalog.schema import Catalog
from appliance.cluster.models import ClusterNode, ClusterPlacement, NodePart
from appliance.planner import memory as M
from appliance.planner.candidates import Candidate, Context, DeviceGroup, _cc_ok, choose_image, heads_ok, rank_key
from appliance.planner.command import fill
from appliance.planner.models import Rejected


@dataclass(frozen=True)
class Spread:
    """A multi-node candidate: ``nodes`` nodes of ``per_node`` devices each."""

    candidate: Candidate
    nodes: int
    per_node: int
    pp: int
    mode: str


def candidates(model_id: str, ctx: Context, group: DeviceGroup, free_nodes: int,
               cat: Catalog) -> tuple[list[Spread], list[Rejected]]:
    """Every engine/precision that can serve ``model_id`` over ``2..free_nodes`` nodes like
    ``group``'s node; the fewest nodes first, then the single-node planner's ranking."""
    model = cat.models[model_id]
    found: list[Spread] = []
    rejected: list[Rejected] = []
    if free_nodes < 2:
        return [], [Rejected(model=model_id, code="nodes", reason=f"a model across nodes needs at least 2 free "
                             f"nodes with the same accelerators and driver ({group.label}, driver "
                             f"{group.driver_version or 'none'}); {free_nodes} such")]
    for eid in sorted(cat.engines):
        eng = cat.engines[eid]
        mn = eng.multi_node
        if mn is None or eng.backend != group.backend or eng.demo != model.demo:
            continue
        if model.role not in eng.roles or model.architecture not in eng.architectures:
            continue
        cons = eng.constraints
        if (cons.variants is not None and group.variant not in cons.variants) \
                or not _cc_ok(cons.compute_capability, group.compute_capability):
            continue
        img = choose_image(model_id, eid, eng, group, ctx, rejected)
        if img is None or model.architecture in img.exclude_architectures:
            continue
        fitting = [t for t in eng.tensor_parallel if t <= len(group.slots)]
        if not fitting:
            continue
        per_node = max(fitting)
        cap = group.slots[0].capacity_mib
        for precision, variant in cat.precisions_of(model):
            if precision not in eng.precisions or (variant.engines is not None and eid not in variant.engines):
                continue
            req = eng.precision_requirements.get(precision)
            if req is not None and (not _cc_ok(req.compute_capability, group.compute_capability)
                                    or (req.variants is not None and group.variant not in req.variants)):
                continue
            prec = cat.precisions[precision]
            last = None
            for k in range(2, min(mn.max_nodes, free_nodes) + 1):
                tp, pp = (per_node, k) if mn.mode == "ray-pipeline" else (per_node * k, 1)
                if not heads_ok(model, tp):
                    continue
                b = M.pipeline_budget(model, prec, eng, tp, pp, context_tokens=ctx.profile.context_tokens,
                                      concurrency=ctx.profile.concurrency, settings=cat.planner, usable_mib=cap)
                last = (k, tp, pp, b)
                if cap is not None and b.total_mib <= cap:
                    cand = Candidate(model=model_id, engine=eid, image=img, precision=precision, variant=variant,
                                     tp=tp, group=group.key, budget=b,
                                     rank=rank_key(ctx, eid, eng, img, precision, per_node, group))
                    found.append(Spread(candidate=cand, nodes=k, per_node=per_node, pp=pp, mode=mn.mode))
                    break
            else:
                if last is not None:
                    k, tp, pp, b = last
                    rejected.append(Rejected(
                        model=model_id, engine=eid, precision=precision, tensor_parallel=tp, code="memory",
                        image=img.image, reason=f"across {k} nodes (tp{tp} x pp{pp}) needs {M.describe(b)} > "
                                                f"{cap or 0:,} MiB usable per device on {group.label}"))
    found.sort(key=lambda s: (s.nodes, s.candidate.rank))
    return found, rejected


def placement(spread: Spread, nodes: list[ClusterNode], groups: list[DeviceGroup], cat: Catalog, port: int,
              models_dir: Path) -> ClusterPlacement:
    """Render ``spread`` on ``nodes`` (in rank order; the first is the runtime's head)."""
    from appliance.planner.core import render_service

    cand = spread.candidate
    eng = cat.engines[cand.engine]
    mn = eng.multi_node
    positions = list(range(spread.per_node))
    svc = render_service(cand, positions, groups[0], cat, port, models_dir, threads=4)
    head = nodes[0]
    parts: list[NodePart] = []
    for rank, (node, group) in enumerate(zip(nodes, groups)):
        values = {"head_address": head.address, "node_rank": str(rank), "nnodes": str(len(nodes)),
                  "pp": str(spread.pp), "tp": str(cand.tp), "world_size": str(spread.per_node * len(nodes)),
                  "node_ip": node.address, "devices_per_node": str(spread.per_node),
                  "runtime_port": str(mn.runtime_port or ""), "dist_port": str(mn.dist_port or "")}
        env = {**svc.env, **{k: fill(v, values) for k, v in sorted(mn.env.items())}}
        devices = [group.slots[p].ref for p in positions if group.slots[p].ref is not None]
        launcher = svc.command + [fill(a, values) for a in mn.launcher_args]
        if mn.mode == "ray-pipeline":
            is_head = rank == 0
            parts.append(NodePart(node=node.name, rank=rank, role="head" if is_head else "worker", devices=devices,
                                  runtime_command=[fill(a, values) for a in (mn.head_start if is_head
                                                                              else mn.worker_start)],
                                  entrypoint=svc.entrypoint if is_head else [],
                                  command=launcher if is_head else [], env=env))
        else:
            parts.append(NodePart(node=node.name, rank=rank, role="head" if rank == 0 else "worker", devices=devices,
                                  entrypoint=svc.entrypoint, command=launcher, env=env))
    between = {}
    if mn.runtime_port:
        between["ray"] = mn.runtime_port
    if mn.dist_port:
        between["dist-init"] = mn.dist_port
    return ClusterPlacement(model=cand.model, service=svc.name, engine=cand.engine, image=svc.image,
                            precision=cand.precision, mode=spread.mode, nodes=[n.name for n in nodes],
                            tensor_parallel=cand.tp, pipeline_parallel=spread.pp, devices_per_node=spread.per_node,
                            memory_mib_per_device=cand.need_mib, memory=cand.budget, port=port,
                            ports_between_nodes=between, parts=parts, source=mn.source)
