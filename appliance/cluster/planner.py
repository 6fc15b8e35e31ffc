"""One plan across the cluster's nodes.

Why built on the single-node planner: a model that fits one node is planned there exactly as
``appliance plan`` plans that node (same candidates, ranking, commands), so a cluster of one is
the single-node plan. On top: *where* each model goes (``binpack``: the fullest node it still
fits, so whole nodes stay free for big models; ``spread``: the emptiest), and a model that fits
no node alone is served across entirely free identical nodes in its engine's documented
multi-node mode (:mod:`appliance.cluster.multinode`). Every node tried and every option
rejected is kept with its numbers; the plan is a pure function of its inputs (byte-identical
reruns), and identical nodes share their results (a 32-node plan stays well under a second).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from pathlib import Path

from appliance.catalog.schema import Catalog
from appliance.cluster.models import ClusterInventory, ClusterPlacement, ClusterPlan, NodePart, NodeSummary, Policy
from appliance.errors import NoFitError, UsageError
from appliance.inventory.models import Inventory
from appliance.planner.models import Plan, Rejected

log = logging.getLogger("appliance.cluster.planner")
POLICIES = ("binpack", "spread")


def _fingerprint(inv: Inventory) -> str:
    """Nodes with the same hardware and software plan the same: everything but the name."""
    data = inv.model_dump()
    data["node"] = {k: v for k, v in data["node"].items() if k not in ("hostname", "disks")}
    data.pop("source", None)
    data.pop("probes", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _devices_used(plan: Plan) -> int:
    return len({(d.vendor, d.index) for s in plan.services for d in s.devices})


class _NodePlanner:
    """Single-node plans with a cache shared by identical nodes."""

    def __init__(self, cat: Catalog, profile: str, licenses, now, models_dir, demo: bool = False):
        self.cat, self.profile, self.licenses, self.now, self.models_dir = cat, profile, licenses, now, models_dir
        self.demo = demo
        self.cache: dict[tuple, Plan | NoFitError] = {}

    def try_plan(self, fp: str, inv: Inventory, models: list[str]) -> Plan | NoFitError:
        from appliance.planner.core import plan

        key = (fp, tuple(models))
        if key not in self.cache:
            try:
                self.cache[key] = plan(inv, self.cat, models=models, profile=self.profile, demo=self.demo,
                                       licenses=self.licenses, now=self.now, models_dir=self.models_dir)
            except NoFitError as exc:
                self.cache[key] = exc
        return self.cache[key]


def accelerators_label(inv: Inventory) -> str:
    """'8 x Ascend 910B3 (65,536 MiB)': a node's accelerators in one line (plan and detect tables)."""
    acc = inv.accelerators
    if not acc:
        return "CPU only"
    models: dict[str, int] = {}
    for a in acc:
        label = f"{a.model or a.vendor} ({a.memory_mib:,} MiB)" if a.memory_mib else (a.model or a.vendor)
        models[label] = models.get(label, 0) + 1
    return ", ".join(f"{n} x {label}" for label, n in models.items())


def drivers_label(inv: Inventory) -> str | None:
    found = sorted({a.driver_version for a in inv.accelerators if getattr(a, "driver_version", None)})
    return ", ".join(found) or None


def plan_cluster(cluster: ClusterInventory, facts: dict[str, Inventory], catalog: Catalog | None = None,
                 models: list[str] | None = None, *, policy: Policy = "binpack", profile: str = "default",
                 demo: bool = False, replicas: int = 1, licenses=None, now: datetime | None = None,
                 models_dir: str | Path | None = None) -> ClusterPlan:
    """Place ``models`` (default: the single-node default set of the node with the most device
    memory) on the cluster's nodes, each on up to ``replicas`` different nodes (the gateway takes
    turns between them and skips one that is gone); see the module docstring for the rules."""
    from appliance.catalog import load_catalog
    from appliance.catalog.loader import unknown_name_error
    from appliance.cluster import multinode
    from appliance.cluster.preflight import check
    from appliance.paths import data_dir
    from appliance.planner.core import node_context

    cat = catalog or load_catalog()
    if policy not in POLICIES:
        raise UsageError(f"unknown placement policy {policy!r}", where="--policy", fix="use binpack or spread")
    if profile not in cat.profiles:
        raise unknown_name_error("profile", profile, cat.profiles, where="--profile")
    missing = [n.name for n in cluster.nodes if n.name not in facts]
    if missing:
        raise UsageError(f"no inventory gathered for {', '.join(missing)}", where="cluster",
                         fix="run `appliance cluster detect --inventory FILE` first")
    root = Path(models_dir) if models_dir else Path(cat.planner.models_dir or (data_dir() / "models"))
    names = [n.name for n in cluster.nodes]
    fps = {n: _fingerprint(facts[n]) for n in names}
    planner = _NodePlanner(cat, profile, licenses, now, root, demo)
    serving = [n for n in names if cluster.node(n).serve]
    if not serving:
        raise UsageError("no node may serve models (appliance_serve is false on every host)", where=cluster.source,
                         fix="leave appliance_serve unset (true) on the nodes that should serve models")
    explain = [f"cluster of {len(names)} node(s), head {cluster.head.name}, policy {policy}, profile {profile}"]
    if models is None:
        def total_memory(n: str) -> int:
            return sum(a.memory_mib or 0 for a in facts[n].accelerators)
        biggest = max(serving, key=lambda n: (total_memory(n), -names.index(n)))
        from appliance.planner.core import plan as single

        try:
            models = [s.model for s in single(facts[biggest], cat, profile=profile, demo=demo, licenses=licenses,
                                              now=now, models_dir=root).services]
        except NoFitError as exc:
            models = [s.model for s in exc.plan.services] if getattr(exc, "plan", None) else []
        explain.append(f"models: the default set of {biggest} (the most device memory): {', '.join(models)}")
    else:
        models = list(dict.fromkeys(m.strip() for m in models if m.strip()))
        for mid in models:
            cat.model(mid)

    assigned: dict[str, list[str]] = {n: [] for n in names}
    used: dict[str, int] = {n: 0 for n in names}
    whole: dict[str, str] = {}  # node -> the model across nodes that owns it
    spreads: list[tuple[str, multinode.Spread, list[str]]] = []
    rejected: list[Rejected] = []

    def alone_need(mid: str) -> int:
        best = None
        for n in serving:
            res = planner.try_plan(fps[n], facts[n], [mid])
            if isinstance(res, Plan):
                s = res.services[0]
                need = (s.memory_mib_per_device or 0) * max(1, len(s.devices))
                best = need if best is None else min(best, need)
        return best if best is not None else 1 << 60

    if not 1 <= replicas <= len(names):
        raise UsageError(f"--replicas {replicas}: the cluster has {len(names)} node(s)", where="--replicas",
                         fix=f"use 1 to {len(names)}")
    order = sorted(models, key=lambda m: (-alone_need(m), models.index(m))) * replicas
    rank_rules = list(cat.profiles[profile].rank)
    quality_first = "precision_quality" in rank_rules and (
        "fewer_devices" not in rank_rules or rank_rules.index("precision_quality") < rank_rules.index("fewer_devices"))

    def span(mid: str) -> tuple[tuple | None, list[Rejected], int]:
        """The best way across entirely free identical nodes: ((spread, nodes) or None, reasons, free)."""
        free = [n for n in serving if not assigned[n] and n not in whole]
        best = None
        reasons: list[Rejected] = []
        for kind in dict.fromkeys(fps[n] for n in free):
            same = [n for n in free if fps[n] == kind]
            ctx = node_context(facts[same[0]], cat, profile, [mid], licenses=licenses, now=now)
            for group in (g for g in ctx.groups if not g.is_cpu):
                found, rej = multinode.candidates(mid, ctx, group, len(same), cat)
                reasons.extend(rej)
                if found and (best is None or (found[0].nodes, found[0].candidate.rank)
                              < (best[0].nodes, best[0].candidate.rank)):
                    best = (found[0], same[:found[0].nodes])
        return best, reasons, len(free)

    def take(mid: str, spread, on: list[str], why: str) -> None:
        for n in on:
            whole[n] = mid
        spreads.append((mid, spread, on))
        c = spread.candidate
        explain.append(f"{mid}: {why}; across {', '.join(on)} with {c.engine} {c.precision} "
                       f"({spread.mode}: tp{c.tp} x pp{spread.pp}), {c.need_mib:,} MiB per device")

    for mid in order:
        tried: list[str] = []
        open_nodes = [n for n in serving if n not in whole and mid not in assigned[n]]
        if any(whole.get(n) == mid for n in names):
            continue  # a model across nodes is one replica
        if policy == "binpack":  # devices in use, then services (CPU services hold no device)
            candidates = sorted(open_nodes, key=lambda n: (-used[n], -len(assigned[n]), names.index(n)))
        else:
            candidates = sorted(open_nodes, key=lambda n: (used[n], len(assigned[n]), names.index(n)))
        placed = None
        for n in candidates:
            res = planner.try_plan(fps[n], facts[n], assigned[n] + [mid])
            if isinstance(res, Plan):
                placed = (n, res)
                break
            tried.append(f"{n}: {res.message}")
        have = sum(mid in assigned[n] for n in names)
        if have:  # a further replica: on another node, or not at all
            if placed is None:
                explain.append(f"{mid}: {have} replica(s); no other node has room for one more")
                continue
        if placed is not None:
            n, res = placed
            single_prec = next(s.precision for s in res.services if s.model == mid)
            top = max(cat.precisions[p].quality for p, _ in cat.precisions_of(cat.models[mid]))
            if not have and quality_first and cat.precisions[single_prec].quality < top:
                alt, _, _ = span(mid)
                if alt is not None and cat.precisions[alt[0].candidate.precision].quality \
                        > cat.precisions[single_prec].quality:
                    take(mid, alt[0], alt[1], f"one node serves it at {single_prec} only; spanning nodes serves "
                         f"{alt[0].candidate.precision} (profile {profile} ranks precision quality first)")
                    continue
            assigned[n].append(mid)
            used[n] = _devices_used(res)
            explain.append(f"{mid}: on {n} ({policy}: {'fullest' if policy == 'binpack' else 'emptiest'} node "
                           f"it fits; {used[n]} device(s) in use there)")
            continue
        best, reasons, free = span(mid)
        if best is not None:
            take(mid, best[0], best[1], "fits no node alone")
            continue
        for line in tried:
            rejected.append(Rejected(model=mid, code="node", reason=line))
        rejected.extend(reasons)
        if not reasons:
            rejected.append(Rejected(model=mid, code="nodes", reason="no engine of the catalog serves it across "
                                     "nodes on these accelerators"))
        explain.append(f"{mid}: fits no node and cannot span the free nodes ({free} free)")

    node_plans: dict[str, Plan] = {}
    placements: list[ClusterPlacement] = []
    for n in names:
        if not assigned[n]:
            continue
        res = planner.try_plan(fps[n], facts[n], assigned[n])
        p = res.model_copy(deep=True)
        if n != cluster.head.name:
            p.apps = []  # the apps run on the head, beside the gateway
        node_plans[n] = p
        for s in p.services:
            placements.append(ClusterPlacement(
                model=s.model, service=s.name, engine=s.engine, image=s.image, precision=s.precision, mode="node",
                nodes=[n], tensor_parallel=s.tensor_parallel, devices_per_node=len(s.devices),
                memory_mib_per_device=s.memory_mib_per_device or 0, memory=s.memory, port=s.port,
                parts=[NodePart(node=n, rank=0, role="single", devices=s.devices, entrypoint=s.entrypoint,
                                command=s.command, env=s.env)]))
    port = cat.planner.base_port + 64
    for mid, spread, on in spreads:
        groups = []
        for n in on:
            g = next(g for g in node_context(facts[n], cat, profile, [mid], licenses=licenses, now=now).groups
                     if g.key == spread.candidate.group)
            groups.append(g)
        placements.append(multinode.placement(spread, [cluster.node(n) for n in on], groups, cat, port, root))
        port += 1
    rank = {m: i for i, m in enumerate(models)}
    placements.sort(key=lambda p: (rank.get(p.model, len(rank)), p.model))
    nodes = [NodeSummary(name=n, head=cluster.node(n).head, address=cluster.node(n).address,
                         accelerators=accelerators_label(facts[n]), devices=len(facts[n].accelerators),
                         devices_used=len(facts[n].accelerators) if n in whole else used[n],
                         driver=drivers_label(facts[n])) for n in names]
    out = ClusterPlan(policy=policy, head=cluster.head.name, nodes=nodes, placements=placements,
                      node_plans=node_plans, rejected=rejected, explain=explain)
    out.preflight = check(cluster, facts, out, cat)
    unplaced = [m for m in models if not any(p.model == m for p in placements)]
    if unplaced:
        err = NoFitError(f"{', '.join(unplaced)} fits on no node of the cluster and cannot span its free nodes",
                         where="plan --inventory", fix="see `appliance plan --inventory FILE --explain` for the "
                         "numbers of each node and engine; add nodes or choose a smaller precision")
        err.plan = out
        raise err
    return out
