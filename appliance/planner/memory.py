"""The serving memory model: what one device must hold for one model.

Per device, in MiB (1 MiB = 2**20 bytes), each part rounded up:

- weights = ((P - E) * b + E * b_e) / tp, where P is the total parameter count (all MoE
  experts stay resident), E = vocab * hidden * (1 if tied embeddings else 2) is the input
  embedding plus lm_head, b the precision's bytes per parameter and b_e its bytes per
  embedding parameter (quantizers keep those in 16-bit).
- KV cache = bytes_per_token * tokens, tokens = min(context, max_context) * concurrency.
  Grouped-query attention: bytes_per_token = 2 (K and V) * layers * ceil(kv_heads / tp) *
  head_dim * kv_bytes -- KV heads are split across tensor-parallel ranks and replicated
  when tp > kv_heads. Multi-head latent attention (DeepSeek-V3): layers * (kv_lora_rank +
  qk_rope_head_dim) * kv_bytes, the same on every rank. Encoder models (embedding,
  rerank) keep no KV cache.
- overhead = the engine's ``memory.overhead_mib`` (runtime context, activation peak,
  graphs).

The need is compared with usable memory = floor(device memory * device_memory_utilization).
Tests check these numbers against hand computation (tests/planner/test_memory.py).
"""

from __future__ import annotations

import math

from appliance.catalog.schema import Engine, Model, PlannerSettings, Precision
from appliance.planner.models import MemoryBudget

MIB = 1 << 20
ENCODER_ROLES = ("embedding", "rerank")


def embedding_params(model: Model) -> int:
    return model.vocab_size * model.hidden_size * (1 if model.tie_word_embeddings else 2)


def weights_bytes(model: Model, precision: Precision) -> float:
    emb = embedding_params(model)
    return (model.params - emb) * precision.bytes_per_param + emb * precision.embedding_bytes_per_param


def weights_mib(model: Model, precision: Precision, tp: int = 1) -> int:
    return math.ceil(weights_bytes(model, precision) / tp / MIB)


def kv_bytes_per_token(model: Model, tp: int = 1, kv_bytes: int = 2) -> int:
    if model.role in ENCODER_ROLES:
        return 0
    if model.mla is not None:
        return model.layers * (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * kv_bytes
    return 2 * model.layers * math.ceil(model.kv_heads / tp) * model.head_dim * kv_bytes


def context_for(model: Model, context_tokens: int) -> int:
    return min(context_tokens, model.max_context)


def budget(model: Model, precision: Precision, engine: Engine, tp: int, *, context_tokens: int,
           concurrency: int, settings: PlannerSettings, usable_mib: int | None) -> MemoryBudget:
    """The per-device memory budget of serving ``model`` on ``engine`` with ``tp`` devices."""
    context = context_for(model, context_tokens)
    kv = math.ceil(kv_bytes_per_token(model, tp, settings.kv_cache_bytes) * context * concurrency / MIB)
    w = weights_mib(model, precision, tp)
    overhead = engine.memory.overhead_mib
    return MemoryBudget(weights_mib=w, kv_cache_mib=kv, overhead_mib=overhead, total_mib=w + kv + overhead,
                        usable_mib=usable_mib, context_tokens=context, concurrency=concurrency)


def pipeline_budget(model: Model, precision: Precision, engine: Engine, tp: int, pp: int, *, context_tokens: int,
                    concurrency: int, settings: PlannerSettings, usable_mib: int | None) -> MemoryBudget:
    """Per device when ``tp`` devices of each of ``pp`` pipeline stages (nodes) serve ``model``:
    the weights split over ``tp * pp`` devices; each stage holds the KV cache of its own
    ``layers / pp`` layers (the per-token bytes of :func:`kv_bytes_per_token` divided by ``pp``).
    With ``pp == 1`` it is :func:`budget`."""
    context = context_for(model, context_tokens)
    kv = math.ceil(kv_bytes_per_token(model, tp, settings.kv_cache_bytes) * context * concurrency / pp / MIB)
    w = weights_mib(model, precision, tp * pp)
    overhead = engine.memory.overhead_mib
    return MemoryBudget(weights_mib=w, kv_cache_mib=kv, overhead_mib=overhead, total_mib=w + kv + overhead,
                        usable_mib=usable_mib, context_tokens=context, concurrency=concurrency)


def usable(memory_mib: int, fraction: float) -> int:
    return math.floor(memory_mib * fraction)


def describe(b: MemoryBudget) -> str:
    """'134,571 MiB weights + 20,480 MiB KV cache + 3,072 MiB overhead = 158,123 MiB per device'."""
    kv = (f"{b.kv_cache_mib:,} MiB KV cache ({b.context_tokens:,} tokens x {b.concurrency})" if b.kv_cache_mib
          else "no KV cache (encoder)")
    return f"{b.weights_mib:,} MiB weights + {kv} + {b.overhead_mib:,} MiB overhead = {b.total_mib:,} MiB per device"
