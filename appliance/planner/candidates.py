"""Enumerate every way to serve one model on this node, and say why each other way fails.

A candidate is (engine, image, precision, tensor-parallel degree, device group) with its
memory budget. Alternatives are rejected with a machine-readable ``code`` and a reason a
person can act on: memory (with the numbers), license, runtime/driver too old, chip
variant, compute capability, heads not divisible by the TP degree, precision or role or
architecture the engine does not serve. Engines of backends the node does not have are
skipped silently (they are not alternatives here).

Image choice follows GPUStack's rule: the newest image whose runtime requirement is not
above the host's (and whose driver minimum the host meets), for the chip variant and CPU
architecture. A host runtime that cannot be read is derived from the driver (CUDA) or,
before any driver is installed, taken as what provisioning installs (compat).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.catalog.schema import Catalog, Engine, EngineImage, Model, ModelVariant, Profile
from appliance.catalog.versions import at_least, in_range, sort_key
from appliance.planner import memory as M
from appliance.planner.models import DeviceRef, MemoryBudget, Rejected


@dataclass
class Slot:
    """One schedulable device (or the host RAM for the CPU backend)."""

    position: int
    ref: DeviceRef | None
    memory_mib: int | None
    capacity_mib: int | None


@dataclass
class DeviceGroup:
    """Identical devices of one vendor/product: tensor parallelism stays inside a group."""

    key: str
    vendor: str
    backend: str
    label: str
    variant: str | None
    compute_capability: str | None
    driver_version: str | None
    runtime_version: str | None
    runtime_how: str
    slots: list[Slot]
    is_cpu: bool = False
    memory_mib: int | None = None


@dataclass(frozen=True)
class Candidate:
    model: str
    engine: str
    image: EngineImage
    precision: str
    variant: ModelVariant
    tp: int
    group: str
    budget: MemoryBudget
    rank: tuple = field(compare=False)
    is_cpu: bool = False

    @property
    def need_mib(self) -> int:
        return self.budget.total_mib

    def label(self) -> str:
        return f"{self.engine} {self.precision} tp{self.tp}"


@dataclass
class Context:
    catalog: Catalog
    profile_name: str
    profile: Profile
    groups: list[DeviceGroup]
    node_arch: str | None
    cpu_flags: list[str]
    has_accelerators: bool
    license_reason: dict[str, str | None]   # closed model id -> None (licensed) or why not
    available: set[str] | None = None       # "model@precision" in the model store (None: not considered)


def _rej(model: str, code: str, reason: str, engine: str | None = None, precision: str | None = None,
         tp: int | None = None, image: str | None = None) -> Rejected:
    return Rejected(model=model, engine=engine, precision=precision, tensor_parallel=tp, reason=reason,
                    code=code, image=image)


def _cc_ok(rng, cc: str | None) -> bool:
    return rng is None or cc is None or in_range(cc, rng.min, rng.max)


def _range_text(rng) -> str:
    if rng.min and rng.max:
        return f"{rng.min}..{rng.max}"
    return f">= {rng.min}" if rng.min else f"<= {rng.max}"


def choose_image(model_id: str, eid: str, eng: Engine, group: DeviceGroup, ctx: Context,
                 rejected: list[Rejected]) -> EngineImage | None:
    """Newest image the host can run; newer ones it cannot run are rejected with the reason."""
    compat = ctx.catalog.compat.get(eng.backend)
    rt_name = compat.runtime_name if compat else "runtime"
    images = [i for i in eng.images if not i.variants or group.variant in i.variants]
    images.sort(key=lambda i: sort_key(i.version), reverse=True)
    images.sort(key=lambda i: i.deprecated is not None)  # a deprecated tag only when nothing else fits
    images.sort(key=lambda i: i.build is None)  # a locally built image first: it needs no registry
    for img in images:
        why = None
        if ctx.node_arch and ctx.node_arch not in img.cpu_arch:
            why = ("cpu_arch", f"image is built for {', '.join(img.cpu_arch)}; this node is {ctx.node_arch}")
        elif (img.runtime and group.runtime_version
              and not in_range(group.runtime_version, img.runtime.min, img.runtime.max)):
            why = ("runtime", f"needs {rt_name} {_range_text(img.runtime)}; host has {rt_name} "
                              f"{group.runtime_version} ({group.runtime_how})")
        elif img.driver_min and group.driver_version and not at_least(group.driver_version, img.driver_min):
            why = ("driver", f"needs driver >= {img.driver_min}; host driver is {group.driver_version}")
        if why is None:
            return img
        rejected.append(_rej(model_id, why[0], f"{img.image}: {why[1]}", engine=eid, image=img.image))
    if not images:
        rejected.append(_rej(model_id, "variant", f"no image of {eng.name} for chip variant {group.variant}",
                             engine=eid))
    return None


def heads_ok(model: Model, tp: int) -> bool:
    if model.attention_heads % tp:
        return False
    return model.kv_heads % tp == 0 or tp % model.kv_heads == 0


def rank_key(ctx: Context, eid: str, eng: Engine, img: EngineImage, precision: str, tp: int,
             group: DeviceGroup) -> tuple:
    prec = ctx.catalog.precisions[precision]
    parts: list = []
    for rule in ctx.profile.rank:
        if rule == "accelerator":
            parts.append(1 if group.is_cpu else 0)
        elif rule == "precision_quality":
            parts.append(-prec.quality)
        elif rule == "precision_speed":
            parts.append(-prec.speed)
        elif rule == "fewer_devices":
            parts.append(tp)
        elif rule == "more_devices":
            parts.append(-tp)
        elif rule == "engine_priority":
            parts.append(-ctx.profile.engine_priority.get(eid, eng.priority))
        elif rule == "newer_image":
            parts.append(tuple((-a, -b, c) for a, b, c in sort_key(img.version)))
    # deterministic tie-breaks: the larger device group, then ids
    parts += [-(group.memory_mib or 0), group.key, eid, precision, tp]
    return tuple(parts)


def enumerate_model(model_id: str, ctx: Context, cpu_allowed: bool) -> tuple[list[Candidate], list[Rejected]]:
    cat = ctx.catalog
    model = cat.models[model_id]
    rejected: list[Rejected] = []
    if model.closed:
        reason = ctx.license_reason.get(model_id, "no license checked")
        if reason is not None:
            return [], [_rej(model_id, "license", f"closed model needs a valid license: {reason}")]
    settings = cat.planner
    candidates: list[Candidate] = []
    for eid in sorted(cat.engines):
        eng = cat.engines[eid]
        served_as = model.fine_tune.base_model if model.fine_tune else model_id  # fine-tunes: the base's engines
        if eng.demo != model.demo or (eng.models is not None and served_as not in eng.models):
            continue
        groups = [g for g in ctx.groups if g.backend == eng.backend]
        if not groups:
            continue
        if eng.backend == "cpu" and not cpu_allowed:
            rejected.append(_rej(model_id, "cpu_not_used", f"{eng.name}: {model.role} models run on the CPU only on "
                                 "nodes without accelerators", engine=eid))
            continue
        if model.role not in eng.roles:
            rejected.append(_rej(model_id, "role", f"{eng.name} does not serve {model.role} models", engine=eid))
            continue
        if model.architecture not in eng.architectures:
            rejected.append(_rej(model_id, "architecture", f"{eng.name} does not support {model.architecture}",
                                 engine=eid))
            continue
        for group in groups:
            _enumerate_group(model_id, model, eid, eng, group, ctx, settings, candidates, rejected)
    candidates.sort(key=lambda c: c.rank)
    return candidates, rejected


def _enumerate_group(model_id: str, model: Model, eid: str, eng: Engine, group: DeviceGroup, ctx: Context,
                     settings, candidates: list[Candidate], rejected: list[Rejected]) -> None:
    cons = eng.constraints
    if cons.variants is not None and group.variant not in cons.variants:
        rejected.append(_rej(model_id, "variant", f"{eng.name} serves chip variants {', '.join(cons.variants)}; "
                             f"{group.label} is {group.variant or 'of unknown variant'}", engine=eid))
        return
    if not _cc_ok(cons.compute_capability, group.compute_capability):
        rejected.append(_rej(model_id, "compute_capability", f"{eng.name} needs compute capability "
                             f"{_range_text(cons.compute_capability)}; {group.label} has {group.compute_capability}",
                             engine=eid))
        return
    missing = [f for f in cons.cpu_flags if f not in ctx.cpu_flags]
    if missing:
        rejected.append(_rej(model_id, "cpu_flags", f"{eng.name} needs CPU features {', '.join(missing)}", engine=eid))
        return
    img = choose_image(model_id, eid, eng, group, ctx, rejected)
    if img is None:
        return
    if model.architecture in img.exclude_architectures:
        rejected.append(_rej(model_id, "architecture", f"{img.image} ({eng.service} {img.version}) predates "
                             f"{model.architecture}; a newer image needs a newer host stack",
                             engine=eid, image=img.image))
        return
    n_slots = len(group.slots)
    for precision, variant in ctx.catalog.precisions_of(model):
        derived = ctx.catalog.precisions[precision].derived_from
        if derived and variant.precision != precision and derived in eng.precisions:
            continue  # the engine serves the original weights as they are; casting adds nothing
        if variant.engines is not None and eid not in variant.engines:
            rejected.append(_rej(model_id, "precision", f"{precision} weights are prepared for "
                                 f"{', '.join(variant.engines)} only", engine=eid, precision=precision))
            continue
        if precision not in eng.precisions:
            rejected.append(_rej(model_id, "precision", f"{eng.name} does not serve {precision}", engine=eid,
                                 precision=precision))
            continue
        req = eng.precision_requirements.get(precision)
        if req is not None:
            if not _cc_ok(req.compute_capability, group.compute_capability):
                rejected.append(_rej(model_id, "compute_capability", f"{precision} on {eng.name} needs compute "
                                     f"capability {_range_text(req.compute_capability)}; {group.label} has "
                                     f"{group.compute_capability}", engine=eid, precision=precision))
                continue
            if req.variants is not None and group.variant not in req.variants:
                rejected.append(_rej(model_id, "variant", f"{precision} on {eng.name} needs chip variant "
                                     f"{', '.join(req.variants)}", engine=eid, precision=precision))
                continue
        prec = ctx.catalog.precisions[precision]
        for tp in eng.tensor_parallel:
            if tp > n_slots:
                continue
            if not heads_ok(model, tp):
                rejected.append(_rej(model_id, "heads", f"{model.attention_heads} attention heads / {model.kv_heads} "
                                     f"KV heads are not divisible by tensor parallel {tp}", engine=eid,
                                     precision=precision, tp=tp))
                continue
            cap = group.slots[0].capacity_mib
            b = M.budget(model, prec, eng, tp, context_tokens=ctx.profile.context_tokens,
                         concurrency=ctx.profile.concurrency, settings=settings, usable_mib=cap)
            if cap is None and not group.is_cpu:
                rejected.append(_rej(model_id, "memory_unknown", f"{group.label}: device memory unknown (needs "
                                     f"{b.total_mib:,} MiB per device)", engine=eid, precision=precision, tp=tp))
                continue
            if cap is not None and b.total_mib > cap:
                where = "host RAM" if group.is_cpu else "usable per device"
                frac = settings.cpu_memory_fraction if group.is_cpu else settings.device_memory_utilization
                rejected.append(_rej(model_id, "memory", f"needs {M.describe(b)} > {cap:,} MiB {where} "
                                     f"({frac:.0%} of {group.memory_mib:,} MiB on {group.label})",
                                     engine=eid, precision=precision, tp=tp))
                continue
            candidates.append(Candidate(model=model_id, engine=eid, image=img, precision=precision, variant=variant,
                                        tp=tp, group=group.key, budget=b, is_cpu=group.is_cpu,
                                        rank=rank_key(ctx, eid, eng, img, precision, tp, group)))
