#!/usr/bin/env python3
"""Benchmark: planning a cluster of 2, 8 and 32 nodes for 20 models, against one node's plan.

Nodes are the committed snapshots (Ascend 910B 8-NPU, H100 8-GPU, H200 1-GPU, CPU-only, MI300X
8-GPU) cycled, each its own inventory host; their inventories are detected once (as
``plan --inventory`` reads kept or snapshot inventories, not hardware). Timed per run: the
whole :func:`appliance.cluster.planner.plan_cluster` call on a fresh catalog object, and as the
baseline in the same loop the single-node :func:`appliance.planner.plan` of the first node for
the same models (what a one-node "cluster" would cost without the cluster logic). Goal (issue
"A rack of boxes as one appliance"): at most 1 s for 32 nodes. Prints median and max; asserts
nothing.

    python3 benchmarks/bench_cluster_plan.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SNAPSHOTS = ["ascend-910b-8npu", "nvidia-h100-8gpu-nodriver", "h200-1gpu", "amd-mi300x-8gpu-epyc", "cpu-only"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from appliance.catalog import load_catalog
    from appliance.cluster.models import ClusterInventory, ClusterNode
    from appliance.cluster.planner import plan_cluster
    from appliance.errors import NoFitError
    from appliance.inventory.detect import detect
    from appliance.planner import plan

    cat = load_catalog()
    models = sorted(m for m, spec in cat.models.items() if not spec.demo)[:20]  # every catalog model (19)
    facts_by_snap = {s: detect(snapshot=str(REPO / "tests" / "fixtures" / "nodes" / s), usage=False)
                     for s in SNAPSHOTS}
    print(f"{len(models)} models: {', '.join(models)}")
    print(f"{'nodes':>5} {'cluster median s':>17} {'max s':>7} {'placed':>7} {'1-node plan median s':>21}")
    for count in (2, 8, 32):
        nodes = [ClusterNode(name=f"n{i:02d}", head=i == 0, address=f"10.0.{i // 250}.{i % 250 + 1}")
                 for i in range(count)]
        cluster = ClusterInventory(source="bench", nodes=nodes)
        facts = {n.name: facts_by_snap[SNAPSHOTS[i % len(SNAPSHOTS)]] for i, n in enumerate(nodes)}
        times, base, placed = [], [], 0
        for _ in range(args.runs):
            fresh = load_catalog()
            t = time.perf_counter()
            try:
                p = plan_cluster(cluster, facts, fresh, models)
            except NoFitError as exc:
                p = exc.plan
            times.append(time.perf_counter() - t)
            placed = len({pl.model for pl in p.placements})
            t = time.perf_counter()
            try:
                plan(facts["n00"], fresh, models=models)
            except NoFitError:
                pass
            base.append(time.perf_counter() - t)
        print(f"{count:>5} {statistics.median(times):>17.3f} {max(times):>7.3f} {placed:>4}/{len(models)} "
              f"{statistics.median(base):>21.3f}")


if __name__ == "__main__":
    main()
