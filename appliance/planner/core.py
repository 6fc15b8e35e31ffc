"""plan(): (inventory, catalog, request) -> a deterministic Plan with its explanation.

Steps: group the node's devices; pick the models (requested, or the default set: the best
chat model that fits plus the embedding model); enumerate each model's candidates and the
rejected alternatives (appliance.planner.candidates); bin-pack (appliance.planner.packing);
render each chosen candidate into a PlannedService (command, env, port, health); bind the
sample apps whose roles are served. Nothing here reads the clock or the machine except
through its arguments (licenses are checked against ``now``), so the same inputs give
byte-identical JSON.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from appliance.catalog.schema import Catalog
from appliance.errors import NoFitError
from appliance.inventory.models import Inventory
from appliance.planner import memory as M
from appliance.planner.candidates import Candidate, Context, DeviceGroup, Slot, enumerate_model
from appliance.planner.command import (
    add_shared_env,
    build_args,
    config_edits,
    config_script,
    fill,
    plan_conversion,
)
from appliance.planner.models import (
    DeviceRef,
    HealthCheck,
    Plan,
    PlannedApp,
    PlannedImage,
    PlannedService,
    Rejected,
)
from appliance.planner.packing import Placement, pack

ROLE_PREFIX = {"chat": "llm", "completion": "llm", "embedding": "embed", "rerank": "rerank"}


def service_name(role: str, model_id: str) -> str:
    return f"{ROLE_PREFIX.get(role, 'llm')}-{model_id.replace('.', '-')}"


# --------------------------------------------------------------------------- device groups


def device_groups(inventory: Inventory, catalog: Catalog) -> list[DeviceGroup]:
    from appliance.catalog import host_runtime

    settings = catalog.planner
    buckets: dict[tuple, list] = {}
    for acc in inventory.accelerators:
        key = (acc.vendor, acc.model, acc.variant or "", acc.memory_mib or 0)
        buckets.setdefault(key, []).append(acc)
    groups: list[DeviceGroup] = []
    for (vendor, model, variant, mem), accs in sorted(buckets.items(),
                                                      key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        accs = sorted(accs, key=lambda a: a.index)
        first = accs[0]
        rt = first.runtime.version if first.runtime else None
        version, how = host_runtime(first.backend, rt, first.driver_version, catalog)
        if version is None:
            compat = catalog.compat.get(first.backend)
            if compat and compat.recommended_runtime:
                version, how = compat.recommended_runtime, "not installed yet: planned for what provisioning installs"
        cap = M.usable(first.memory_mib, settings.device_memory_utilization) if first.memory_mib else None
        slots = [Slot(position=i, memory_mib=a.memory_mib, capacity_mib=cap,
                      ref=DeviceRef(vendor=a.vendor, index=a.index, pci_bdf=a.pci_bdf, uuid=a.uuid,
                                    physical_id=a.physical_id, model=a.model, memory_mib=a.memory_mib))
                 for i, a in enumerate(accs)]
        label = f"{len(accs)} x {model}"
        groups.append(DeviceGroup(key=f"{vendor}:{model}:{variant}:{mem}", vendor=vendor, backend=first.backend,
                                  label=label, variant=first.variant, compute_capability=first.compute_capability,
                                  driver_version=first.driver_version, runtime_version=version, runtime_how=how,
                                  slots=slots, memory_mib=first.memory_mib))
    node = inventory.node
    mem = node.memory_mib
    cap = M.usable(mem, settings.cpu_memory_fraction) if mem else None
    groups.append(DeviceGroup(key="cpu", vendor="cpu", backend="cpu", label=f"host CPU ({node.cpu_count or '?'} cores)",
                              variant=None, compute_capability=None, driver_version=None, runtime_version=None,
                              runtime_how="n/a", slots=[Slot(position=0, ref=None, memory_mib=mem, capacity_mib=cap)],
                              is_cpu=True, memory_mib=mem))
    return groups


def node_summary(inventory: Inventory, groups: list[DeviceGroup]) -> dict:
    node = inventory.node
    accs = []
    for g in groups:
        if g.is_cpu:
            continue
        first = g.slots[0].ref
        accs.append({"vendor": g.vendor, "model": first.model if first else None, "count": len(g.slots),
                     "backend": g.backend, "memory_mib": g.memory_mib, "variant": g.variant,
                     "compute_capability": g.compute_capability, "driver_version": g.driver_version,
                     "runtime_version": g.runtime_version, "runtime_source": g.runtime_how})
    return {"hostname": node.hostname, "arch": node.arch, "cpu_count": node.cpu_count,
            "memory_mib": node.memory_mib, "accelerators": accs}


# --------------------------------------------------------------------------- rendering


def _fraction(need_mib: int, memory_mib: int | None) -> str:
    if not memory_mib:
        return "0.9"
    return f"{math.ceil(need_mib / memory_mib * 1000) / 1000:.3f}"


_ROLE_SHARE = {"chat": 0, "completion": 1, "embedding": 2, "rerank": 3}


def split_cores(count: int, cpu_models: list[str], catalog: Catalog) -> dict[str, list[int]]:
    """Disjoint CPU cores per CPU-served model, so two models on a small box do not fight over the
    same cores (a chat model's token rate halves when an embedding request lands on its cores).
    Each gets ``count // n``; the rest go to chat models first. With fewer cores than models they
    share them all (cpusets need at least one core each). A fine-tuned model served beside its
    base model shares the base's cores, so serving one (``appliance serve``) leaves the running
    services' cpusets -- and so their containers -- as they are."""
    if not cpu_models:
        return {}

    def root(mid: str) -> str:  # the model whose cores ``mid`` runs on (its base's, for a fine-tune)
        seen = {mid}
        while (ft := catalog.models[mid].fine_tune) is not None and ft.base_model in cpu_models \
                and ft.base_model not in seen:
            mid = ft.base_model
            seen.add(mid)
        return mid

    fine_tunes = {mid: r for mid in cpu_models if (r := root(mid)) != mid and root(r) == r}
    own = [mid for mid in cpu_models if mid not in fine_tunes]
    if count < len(own):
        return {mid: list(range(count)) for mid in cpu_models}
    order = sorted(own, key=lambda m: (_ROLE_SHARE.get(catalog.models[m].role, 9), own.index(m)))
    base, extra = divmod(count, len(order))
    out, start = {}, 0
    for i, mid in enumerate(order):
        n = base + (1 if i < extra else 0)
        out[mid] = list(range(start, start + n))
        start += n
    for mid, base_model in fine_tunes.items():
        out[mid] = out[base_model]
    return out


def _cpuset(cores: list[int] | None) -> str | None:
    if not cores:
        return None
    return str(cores[0]) if len(cores) == 1 else f"{cores[0]}-{cores[-1]}"


def render_service(cand: Candidate, positions: list[int], group: DeviceGroup, catalog: Catalog, port: int,
                   models_dir: Path, threads: int, cpuset: str | None = None) -> PlannedService:
    eng = catalog.engines[cand.engine]
    model = catalog.models[cand.model]
    devices = [group.slots[p].ref for p in positions if group.slots[p].ref is not None]
    model_path = None if model.demo else str(models_dir / cand.model / cand.variant.precision)
    container_path = model_path
    if model_path and cand.variant.file:
        container_path = f"{model_path}/{cand.variant.file}"
    conversion = None
    if model_path and eng.weights_conversion is not None:
        conversion = plan_conversion(eng.weights_conversion, model_path, models_dir, cand)
        container_path = conversion.output_path
    served = cand.model if eng.served_name == "arg" or container_path is None else container_path
    values = {
        "model_path": container_path or "", "served_model_name": served, "port": str(port), "tp": str(cand.tp),
        "context": str(cand.budget.context_tokens),
        "context_total": str((cand.budget.context_tokens or 0) * (cand.budget.concurrency or 1)),
        "concurrency": str(cand.budget.concurrency), "mem_fraction": _fraction(cand.need_mib, group.memory_mib),
        "devices": ",".join(str(i) for i in range(cand.tp)), "threads": str(threads), "role": model.role,
        "precision": cand.precision,
    }
    start = eng.start
    values["context_input"] = str(max(1, (cand.budget.context_tokens or 1) - 1))
    args = build_args(eng, cand.image, catalog, model.role, cand.precision, model.trust_remote_code)
    command = [fill(a, values) for a in args]
    entrypoint = [fill(a, values) for a in start.entrypoint]
    config = None
    if start.config is not None:
        config = config_edits(start.config, values)
        command = [config_script(start.config, config)] + command
    weights_gib = cand.budget.weights_mib * cand.tp / 1024
    start_period = 60.0 if model.demo else float(min(3600, 300 + math.ceil(weights_gib) * 5))
    return PlannedService(
        name=service_name(model.role, cand.model), role=model.role, model=cand.model, served_model_name=served,
        engine=cand.engine, backend=eng.backend, image=cand.image.image, image_version=cand.image.version,
        precision=cand.precision, tensor_parallel=cand.tp, devices=devices, memory_mib_per_device=cand.need_mib,
        memory=cand.budget, entrypoint=entrypoint, command=command, env=dict(sorted(start.env.items())),
        config=config, port=port,
        health=HealthCheck(path=eng.health, port=port, start_period_s=start_period,
                           probe=HealthCheck.probe_for(cand.image.probe, cand.image.build or eng.build)),
        model_path=model_path, model_container_path=container_path, model_source=cand.variant.source,
        model_file=cand.variant.file, cpuset=cpuset if group.is_cpu else None, evaluation=model.builtin,
        weights_files=[] if model.demo else ([cand.variant.file] if cand.variant.file
                                             else ["config.json", "*.safetensors", "tokenizer files"]),
        exclusive_devices=eng.exclusive_devices, build=cand.image.build or eng.build, recipe=cand.image.recipe,
        conversion=conversion,
        license_required=model.closed, demo=model.demo)


def bind_apps(catalog: Catalog, services: list[PlannedService]) -> tuple[list[PlannedApp], list[str]]:
    apps: list[PlannedApp] = []
    notes: list[str] = []
    for aid in sorted(catalog.apps):
        app = catalog.apps[aid]
        bindings: dict[str, str] = {}
        served: dict[str, str] = {}
        missing = []
        for need in app.roles:
            options = [s for s in services if s.role == need.role]
            if app.prefer_tags and need.role == "chat":
                tagged = [s for s in options if set(app.prefer_tags) & set(catalog.models[s.model].tags)]
                options = tagged or options
            if options:
                bindings[need.role] = options[0].name
                served[need.role] = options[0].served_model_name
            elif need.required:
                missing.append(need.role)
        if missing:
            notes.append(f"app {aid}: not included (no planned {', '.join(missing)} model)")
            continue
        apps.append(PlannedApp(name=aid, image=app.image, build=app.build, port=app.port, health_path=app.health,
                               bindings=bindings, models=served, env=dict(sorted(app.env.items()))))
        notes.append(f"app {aid}: " + ", ".join(f"{r} -> {n}" for r, n in bindings.items()))
    return apps, notes


# --------------------------------------------------------------------------- plan


def plan(inventory: Inventory, catalog: Catalog | None = None, models: list[str] | None = None,
         profile: str = "default", demo: bool = False, *, licenses=None, now: datetime | None = None,
         models_dir: str | Path | None = None, available: set[str] | None = None) -> Plan:
    """See :mod:`appliance.planner` for the contract.

    ``available``: the ``model@precision`` whose weights are in the model store. When given, a
    model some of whose precisions are stored is planned at a stored one (the others are rejected
    with code ``weights_absent``), and the default set prefers models that are stored -- saying
    which better model would fit if imported. The plan stays a pure function of its inputs.
    """
    from appliance.catalog import load_catalog
    from appliance.catalog.loader import unknown_name_error
    from appliance.planner.selection import choose_default_set

    cat = catalog or load_catalog()
    if profile not in cat.profiles:
        raise unknown_name_error("profile", profile, cat.profiles, where="--profile")
    if models is not None:
        models = list(dict.fromkeys(m.strip() for m in models if m.strip()))
        for mid in models:
            cat.model(mid)
    ctx = node_context(inventory, cat, profile, models, licenses=licenses, now=now,
                       available=None if demo else available)
    groups = ctx.groups
    by_key = {g.key: g for g in groups}
    has_acc = ctx.has_accelerators
    explain = _explain_header(cat, profile, groups, inventory)
    cache: dict[str, tuple[list[Candidate], list[Rejected]]] = {}

    def cands(mid: str) -> tuple[list[Candidate], list[Rejected]]:
        if mid not in cache:
            role = cat.models[mid].role
            cpu_ok = demo or cat.models[mid].demo or not has_acc or role in cat.planner.cpu_fallback_roles
            cache[mid] = _prefer_stored(mid, *enumerate_model(mid, ctx, cpu_ok), ctx.available)
        return cache[mid]

    extra_rejected: list[Rejected] = []
    if models is None:
        requested, placements, extra_rejected, notes = choose_default_set(cat, ctx, cands, by_key, demo)
        explain += notes
        if not demo and not any(cat.models[m].role == "chat" for m in requested):
            partial = _assemble(cat, inventory, profile, groups, by_key, requested, placements, cands,
                                extra_rejected, explain, models_dir, strict=False)
            err = NoFitError("no chat model of the catalog fits this node", where="plan",
                             fix="see `appliance plan --explain` for why each model was rejected")
            err.plan = partial
            raise err
    else:
        requested = models
        placements = _pack(requested, cands, by_key, cat)
    return _assemble(cat, inventory, profile, groups, by_key, requested, placements, cands, extra_rejected,
                     explain, models_dir, strict=True)


def node_context(inventory: Inventory, cat: Catalog, profile: str, models: list[str] | None, *, licenses=None,
                 now: datetime | None = None, available: set[str] | None = None) -> Context:
    """What the candidates of one node are enumerated against (its device groups, CPU, licenses);
    the cluster planner builds the same per node."""
    from appliance.planner.selection import license_reasons

    groups = device_groups(inventory, cat)
    return Context(catalog=cat, profile_name=profile, profile=cat.profiles[profile], groups=groups,
                   node_arch=inventory.node.arch, cpu_flags=list(inventory.node.cpu_flags),
                   has_accelerators=any(not g.is_cpu for g in groups),
                   license_reason=license_reasons(cat, inventory, models, licenses, now), available=available)


def _prefer_stored(mid: str, found: list[Candidate], rejected: list[Rejected],
                   available: set[str] | None) -> tuple[list[Candidate], list[Rejected]]:
    """With some of ``mid``'s precisions in the model store, plan only those."""
    if available is None:
        return found, rejected
    stored = [c for c in found if f"{mid}@{c.precision}" in available]
    if not stored or len(stored) == len(found):
        return found, rejected
    have = ", ".join(sorted({c.precision for c in stored}))
    dropped = [Rejected(model=mid, engine=c.engine, precision=c.precision, tensor_parallel=c.tp, code="weights_absent",
                        image=c.image.image, reason=f"its {c.precision} weights are not in the model store "
                                                    f"(it has {have}; import them with `appliance models import`)")
               for c in found if c not in stored]
    return stored, rejected + dropped


def _pack(requested: list[str], cands, by_key: dict[str, DeviceGroup], cat: Catalog) -> dict[str, Placement]:
    placeable = [m for m in requested if cands(m)[0]]

    def footprint(mid: str) -> tuple:
        best = cands(mid)[0][0]
        return (-best.need_mib * best.tp, requested.index(mid))

    order = sorted(placeable, key=footprint)
    exclusive = {eid for eid, e in cat.engines.items() if e.exclusive_devices}
    placements, _ = pack(order, {m: cands(m)[0] for m in order}, by_key, exclusive, cat.planner.search_budget)
    return placements


def _first_difference(ctx_rank: list[str], a: Candidate, b: Candidate) -> str:
    for rule, x, y in zip(ctx_rank, a.rank, b.rank):
        if x != y:
            return rule
    return "tie-break (engine, precision, tp ids)"


def _assemble(cat: Catalog, inventory: Inventory, profile: str, groups: list[DeviceGroup],
              by_key: dict[str, DeviceGroup], requested: list[str], placements: dict[str, Placement], cands,
              extra_rejected: list[Rejected], explain: list[str], models_dir, strict: bool) -> Plan:
    from appliance.paths import data_dir

    prof = cat.profiles[profile]
    root = Path(models_dir) if models_dir else Path(cat.planner.models_dir or (data_dir() / "models"))
    on_cpu = [mid for mid in requested if mid in placements and by_key[placements[mid].candidate.group].is_cpu]
    cores = split_cores(inventory.node.cpu_count or 4, on_cpu, cat)
    services: list[PlannedService] = []
    rejected: list[Rejected] = list(extra_rejected)
    unplaced: list[str] = []
    port = cat.planner.base_port
    for mid in requested:
        cand_list, rej = cands(mid)
        rejected.extend(rej)
        placement = placements.get(mid)
        if placement is None:
            unplaced.append(mid)
            for c in cand_list:
                rejected.append(Rejected(model=mid, engine=c.engine, precision=c.precision, tensor_parallel=c.tp,
                                         code="capacity", image=c.image.image,
                                         reason=f"fits alone ({c.need_mib:,} MiB per device) but not together with "
                                                f"the other requested models"))
            continue
        chosen = placement.candidate
        for c in cand_list:
            if c is chosen:
                continue
            if c.rank < chosen.rank:
                reason = (f"fits alone ({c.need_mib:,} MiB per device) but the devices it needs are taken "
                          f"by other services")
                code = "capacity"
            else:
                rule = _first_difference(list(prof.rank), chosen, c)
                reason = f"fits, ranked below the chosen {chosen.label()} by rule '{rule}'"
                code = "ranked_lower"
            rejected.append(Rejected(model=mid, engine=c.engine, precision=c.precision, tensor_parallel=c.tp,
                                     code=code, image=c.image.image, reason=reason))
        group = by_key[chosen.group]
        svc = render_service(chosen, placement.positions, group, cat, port, root,
                             len(cores[mid]) if mid in cores else (inventory.node.cpu_count or 4),
                             cpuset=_cpuset(cores.get(mid)))
        port += 1
        services.append(svc)
        where = "host RAM" if group.is_cpu else ", ".join(f"{d.vendor}:{d.index}" for d in svc.devices)
        explain.append(f"{mid}: {chosen.engine} {svc.image} {chosen.precision} tp{chosen.tp} on {where}; "
                       f"{M.describe(chosen.budget)} of {group.slots[0].capacity_mib or 0:,} MiB usable")
        if chosen.image.deprecated:
            explain.append(f"{mid}: {svc.image} is deprecated ({chosen.image.deprecated}); it is the newest image "
                           f"this host's driver/runtime can run")
    services = add_shared_env(services, cat)
    apps, app_notes = bind_apps(cat, services)
    explain += app_notes
    gw = cat.platform.gateway
    plan = Plan(profile=profile, catalog_version=cat.version, node=node_summary(inventory, groups),
                services=services, apps=apps, gateway=PlannedImage(image=gw.image, build=gw.build, port=gw.port),
                rejected=rejected, explain=explain)
    plan.plan_hash = plan.compute_hash()
    if unplaced and strict:
        raise _nofit(unplaced, rejected, plan)
    return plan


def _nofit(unplaced: list[str], rejected: list[Rejected], plan: Plan) -> NoFitError:
    err = NoFitError(_nofit_message(unplaced, rejected), where="plan",
                     fix="choose a smaller model or precision, add devices, or see `appliance plan --explain`")
    err.plan = plan  # the partial plan: the CLI prints it with --json
    return err


def _nofit_message(unplaced: list[str], rejected: list[Rejected]) -> str:
    parts = []
    for mid in unplaced:
        mine = [r for r in rejected if r.model == mid]
        mem = [r for r in mine if r.code == "memory"]
        lic = [r for r in mine if r.code == "license"]
        cap = [r for r in mine if r.code == "capacity"]
        if lic:
            why = lic[0].reason
        elif cap:
            why = "it fits alone but not together with the other requested models"
        elif mem:
            best = min(mem, key=lambda r: _need_of(r.reason))
            why = f"smallest option {best.engine} {best.precision} tp{best.tensor_parallel} {best.reason}"
        elif mine:
            codes = sorted({r.code for r in mine})
            first = next((r for r in mine if r.code != "cpu_not_used"), mine[0])
            engine = f"{first.engine}: " if first.engine else ""
            why = f"no engine can serve it here ({', '.join(codes)}): {engine}{first.reason}"
        else:
            why = "no engine on this node serves it"
        parts.append(f"{mid} fits nowhere on this node: {why}")
    return "; ".join(parts)


def _need_of(reason: str) -> int:
    import re

    m = re.search(r"= ([\d,]+) MiB per device", reason)
    return int(m.group(1).replace(",", "")) if m else 1 << 62


def _explain_header(cat: Catalog, profile: str, groups: list[DeviceGroup], inventory: Inventory) -> list[str]:
    prof = cat.profiles[profile]
    s = cat.planner
    lines = [f"catalog {cat.version}; profile {profile}: {prof.description}; context {prof.context_tokens:,} tokens x "
             f"{prof.concurrency} concurrent sequences; ranking: {', '.join(prof.rank)}"]
    for g in groups:
        if g.is_cpu:
            mem = f"{g.memory_mib:,} MiB RAM" if g.memory_mib else "RAM unknown"
            lines.append(f"cpu: {g.label}, {mem}, {s.cpu_memory_fraction:.0%} usable by CPU engines, arch "
                         f"{inventory.node.arch or 'unknown'}")
            continue
        mem = f"{g.memory_mib:,} MiB each" if g.memory_mib else "memory unknown"
        compat = cat.compat.get(g.backend)
        rt = f"{compat.runtime_name if compat else 'runtime'} {g.runtime_version or 'unknown'} ({g.runtime_how})"
        lines.append(f"devices: {g.label} [{g.backend}, variant {g.variant or '-'}, cc {g.compute_capability or '-'}], "
                     f"{mem}, {s.device_memory_utilization:.0%} usable; driver {g.driver_version or 'none'}; {rt}")
    if not any(not g.is_cpu for g in groups):
        lines.append("no accelerators: CPU engines (llama.cpp, GGUF weights) serve every role")
    return lines
