"""Every engine command the planner can produce on a node, held to the engines' argument contracts.

Why: a plan picks one image per engine for *this* host, so a flag that a newer image refuses
shows up only on the box that gets that image. The audit renders each candidate the planner
enumerates (every model, engine, precision and tensor-parallel degree that fits) with *every*
image of its engine (another host's variant or driver would get the others), once alone and once sharing
its devices with another service, and checks each command (:func:`appliance.catalog.contract.check`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

from appliance.catalog.contract import Violation, check
from appliance.catalog.schema import Catalog
from appliance.inventory.models import Inventory
from appliance.planner.models import PlannedService


def rendered_services(inventory: Inventory, catalog: Catalog) -> Iterator[PlannedService]:
    """Each service the planner could render on this node, over every image of each candidate's engine."""
    from appliance.planner.candidates import Context, enumerate_model
    from appliance.planner.core import device_groups, render_service

    # driver and runtime left open: images this host's versions rule out are commands another host gets
    groups = [dataclasses.replace(g, driver_version=None, runtime_version=None)
              for g in device_groups(inventory, catalog)]
    by_key = {g.key: g for g in groups}
    prof = catalog.profiles["default"]
    ctx = Context(catalog=catalog, profile_name="default", profile=prof, groups=groups,
                  node_arch=inventory.node.arch, cpu_flags=list(inventory.node.cpu_flags),
                  has_accelerators=any(not g.is_cpu for g in groups),
                  license_reason={m: None for m, s in catalog.models.items() if s.closed})
    for mid in sorted(catalog.models):
        candidates, _ = enumerate_model(mid, ctx, cpu_allowed=True)
        model = catalog.models[mid]
        for cand in candidates:
            group = by_key[cand.group]
            eng = catalog.engines[cand.engine]
            for img in eng.images:  # every image: another host (variant, driver) gets the others
                if model.architecture in img.exclude_architectures:
                    continue
                variant = dataclasses.replace(cand, image=img)
                yield render_service(variant, list(range(cand.tp)), group, catalog, catalog.planner.base_port,
                                     Path("/var/lib/appliance/models"), threads=4)


def audit(inventory: Inventory, catalog: Catalog) -> list[Violation]:
    """Every contract violation of every command :func:`rendered_services` yields (empty: all accepted)."""
    from appliance.planner.command import add_shared_env, contract_command

    out: list[Violation] = []
    for svc in rendered_services(inventory, catalog):
        eng = catalog.engines[svc.engine]
        contract = catalog.contracts.get(eng.service)
        if contract is None:
            if not eng.demo:
                out.append(Violation(svc.name, "no_contract", f"engine {svc.engine} ({eng.service}) has no contract"))
            continue
        version = next(i.contract_version for i in eng.images if i.image == svc.image)
        alone = contract_command(svc)
        out += [dataclasses.replace(v, service=f"{svc.name} [{svc.image}]") for v in check(alone, contract, version)]
        if svc.devices:
            twin = svc.model_copy(update={"name": svc.name + "-twin"})
            shared = add_shared_env([svc, twin], catalog)
            cmd = contract_command(shared[0], shared)
            out += [dataclasses.replace(v, service=f"{svc.name} [{svc.image}, sharing its devices]")
                    for v in check(cmd, contract, version) if v.rule == "env_when_shared"]
    return out
