"""Fine-tuning memory per device, and the recipe + devices for a training job.

Formula (bytes, per device; ``d`` devices, ``P`` parameters, ``T = seq_len * micro_batch``
tokens per step per device, ``h`` hidden size, ``L`` layers, ``V`` vocabulary):

- LoRA: frozen base weights ``P * w`` (w = ``weights_bytes_per_param``, 2 for bf16) on every
  device; adapters of rank r on every linear layer of each block, ``A = r * L * [(h + q) +
  2 (h + kv) + (q + h) + 2 (h + i) + (i + h)]`` parameters (q = heads * head_dim, kv =
  kv_heads * head_dim, i = intermediate size), with ``s`` = ``state_bytes_per_trainable_param``
  (16: bf16 weight + grad, fp32 master + Adam m and v) -> ``A * s``.
- Full: ``P * s`` in all (the 16 bytes include the bf16 weights), split across ``d`` devices
  when the recipe shards states (ZeRO-3 / distributed optimizer): weights ``P * w / d``,
  states ``P * (s - w) / d``.
- Activations with gradient checkpointing: ``T * h * (2 L + 34)`` (each block's input kept,
  one block recomputed at a time: 34 bytes per token per hidden unit, Korthikanti et al.,
  2022, with flash attention removing the quadratic term); without checkpointing
  ``T * h * 34 * L``. Plus fp32 logits for the loss: ``T * V * 4``.
- Plus the recipe's ``overhead_mib``. Each part is rounded up to whole MiB.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from appliance.catalog.schema import Catalog, Model, TrainingRecipe
from appliance.errors import NoFitError, UsageError
from appliance.planner.models import DeviceRef

MIB = 1 << 20


class TrainingMemory(BaseModel):
    method: str
    devices: int
    trainable_params: int
    weights_mib: int
    states_mib: int = Field(description="gradients + optimizer states (+ master weights)")
    activations_mib: int
    overhead_mib: int
    total_mib_per_device: int
    seq_len: int
    micro_batch: int
    lora_rank: int | None = None


class TrainingPlan(BaseModel):
    recipe: str
    model: str
    method: str
    backend: str
    image: str
    build: str | None = None
    demo: bool = False
    entrypoint: list[str] = Field(default_factory=list)
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    devices: list[DeviceRef] = Field(default_factory=list)
    memory: TrainingMemory
    usable_mib_per_device: int | None = None
    explain: list[str] = Field(default_factory=list)


def lora_params(model: Model, rank: int) -> int:
    h = model.hidden_size
    q = model.attention_heads * model.head_dim
    kv = model.kv_heads * model.head_dim
    i = model.intermediate_size or 4 * h
    per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
    return rank * model.layers * per_layer


def training_memory(model: Model, recipe: TrainingRecipe, devices: int = 1, seq_len: int = 2048,
                    micro_batch: int = 1, lora_rank: int = 8) -> TrainingMemory:
    """Per-device memory of fine-tuning ``model`` with ``recipe`` on ``devices`` devices."""
    rule = recipe.memory
    if devices < 1:
        raise UsageError("devices must be >= 1", where="devices", fix="use 1 or more")
    P = model.params
    w, s = rule.weights_bytes_per_param, rule.state_bytes_per_trainable_param
    if recipe.method == "lora":
        trainable = lora_params(model, lora_rank)
        weights = P * w
        states = trainable * s
    else:
        trainable = P
        share = devices if rule.shard_states else 1
        weights = P * w / share
        states = P * (s - w) / share
    tokens = seq_len * micro_batch
    h, L = model.hidden_size, model.layers
    act = tokens * h * (2 * L + 34) if rule.activation_checkpointing else tokens * h * 34 * L
    act += tokens * model.vocab_size * 4
    parts = [math.ceil(weights / MIB), math.ceil(states / MIB), math.ceil(act / MIB), rule.overhead_mib]
    return TrainingMemory(method=recipe.method, devices=devices, trainable_params=trainable, weights_mib=parts[0],
                          states_mib=parts[1], activations_mib=parts[2], overhead_mib=parts[3],
                          total_mib_per_device=sum(parts), seq_len=seq_len, micro_batch=micro_batch,
                          lora_rank=lora_rank if recipe.method == "lora" else None)


def select_recipe(catalog: Catalog, backend: str, method: str, model_id: str) -> tuple[str, TrainingRecipe]:
    """The recipe for (backend, method); demo recipes only for the models they list."""
    model = catalog.models[model_id]
    for rid in sorted(catalog.training):
        rec = catalog.training[rid]
        if rec.backend != backend or rec.method != method:
            continue
        if rec.models is not None and model_id not in rec.models:
            continue
        if rec.demo != model.demo:
            continue
        return rid, rec
    raise UsageError(f"no {method} recipe for backend {backend} and model {model_id}", where="--method",
                     fix="see `appliance catalog list training`")


def plan_training(inventory, model_id: str, method: str = "lora", catalog: Catalog | None = None, *,
                  seq_len: int = 2048, micro_batch: int = 1, lora_rank: int = 8,
                  devices: int | None = None) -> TrainingPlan:
    """Recipe, image and the fewest devices (1, 2, 4, ...) whose memory fits the job."""
    from appliance.catalog import load_catalog
    from appliance.planner.core import device_groups

    cat = catalog or load_catalog()
    model = cat.model(model_id)
    groups = device_groups(inventory, cat)
    acc_groups = [g for g in groups if not g.is_cpu]
    pool = [g for g in acc_groups] if acc_groups and not model.demo else [g for g in groups if g.is_cpu]
    explain: list[str] = []
    any_recipe = False
    for group in pool:
        try:
            rid, rec = select_recipe(cat, group.backend, method, model_id)
        except UsageError as exc:
            explain.append(f"{group.label}: {exc.message}")
            continue
        any_recipe = True
        cap = group.slots[0].capacity_mib
        counts = [devices] if devices else [n for n in (1, 2, 4, 8, 16) if n <= len(group.slots)]
        for n in counts:
            if n > len(group.slots):
                explain.append(f"{group.label}: only {len(group.slots)} device(s), {n} requested")
                break
            mem = training_memory(model, rec, n, seq_len, micro_batch, lora_rank)
            if cap is not None and mem.total_mib_per_device > cap:
                explain.append(f"{rid} on {n} x {group.label.split(' x ', 1)[-1]}: needs "
                               f"{mem.total_mib_per_device:,} MiB per device > {cap:,} MiB usable")
                continue
            refs = [s.ref for s in group.slots[:n] if s.ref is not None]
            explain.append(f"{rid}: {n} device(s), {mem.total_mib_per_device:,} MiB per device"
                           + (f" of {cap:,} usable" if cap else ""))
            return TrainingPlan(recipe=rid, model=model_id, method=method, backend=rec.backend, image=rec.image,
                                build=rec.build, demo=rec.demo, entrypoint=list(rec.entrypoint), command=list(rec.args),
                                env=dict(sorted(rec.env.items())), devices=refs, memory=mem,
                                usable_mib_per_device=cap, explain=explain)
    # no recipe at all (a CPU-only box: the catalog ships no CPU trainer) is not fixed by a smaller job
    fix = ("use LoRA, a shorter sequence length, a smaller model, or more devices" if any_recipe else
           "fine-tuning needs a backend with a training recipe (`appliance catalog list training`: "
           "LLaMA-Factory on CUDA/ROCm, MindSpeed-LLM on Ascend); a CPU-only box serves models but does not train them")
    raise NoFitError(f"{method} fine-tuning of {model_id} fits nowhere on this node: " + "; ".join(explain[-3:] or
                     ["no recipe for this node's backends"]), where="train", fix=fix)
