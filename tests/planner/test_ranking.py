"""Ranking rules (images/catalog/catalog.yaml profiles) and packing rules, checked on real snapshots."""

from __future__ import annotations

from appliance.planner import plan
from appliance.planner.candidates import heads_ok

from .conftest import inventory

H200 = "h200-1gpu"


def test_default_prefers_quality_then_engine_priority(catalog):
    p = plan(inventory(H200), catalog, models=["qwen2.5-7b-instruct"])
    svc = p.services[0]
    assert (svc.precision, svc.engine) == ("bf16", "vllm-cuda")
    reasons = {(r.engine, r.precision): r for r in p.rejected if r.code == "ranked_lower"}
    assert "rule 'precision_quality'" in reasons[("vllm-cuda", "fp8")].reason
    assert "rule 'engine_priority'" in reasons[("sglang-cuda", "bf16")].reason


def test_throughput_prefers_fast_precision_and_its_engine_override(catalog):
    p = plan(inventory(H200), catalog, models=["qwen2.5-7b-instruct"], profile="throughput")
    svc = p.services[0]
    assert svc.precision == "fp8"                      # speed 90 beats bf16 60
    assert svc.engine == "trtllm-cuda"                 # profile override: trtllm-cuda 70
    assert svc.memory.concurrency == 32 and svc.memory.context_tokens == 4096


def test_latency_prefers_more_devices_within_head_limits(catalog):
    inv = inventory("ascend-910b-8npu")
    p = plan(inv, catalog, models=["qwen2.5-7b-instruct"], profile="latency")
    svc = p.services[0]
    # 28 heads / 4 KV heads: tp 8 is impossible (28 % 8), so tp 4 is the most devices allowed
    assert svc.tensor_parallel == 4 and len(svc.devices) == 4
    assert any(r.code == "heads" and r.tensor_parallel == 8 for r in p.rejected)
    d = plan(inv, catalog, models=["qwen2.5-7b-instruct"])
    assert d.services[0].tensor_parallel == 1           # default: fewest devices


def test_heads_rule():
    class M:
        attention_heads, kv_heads = 28, 4
    assert [tp for tp in (1, 2, 4, 8) if heads_ok(M, tp)] == [1, 2, 4]

    class G:
        attention_heads, kv_heads = 32, 2              # KV heads replicate when tp > kv_heads
    assert [tp for tp in (1, 2, 4, 8, 16) if heads_ok(G, tp)] == [1, 2, 4, 8, 16]


def test_newest_runnable_image_wins(catalog):
    p = plan(inventory("nvidia-huawei-bmc"), catalog, models=["llama-3.1-8b-instruct"])
    assert p.services[0].image_version == "0.8.5"       # CUDA 12.4 host: 0.11.0 needs 12.8
    p = plan(inventory(H200), catalog, models=["llama-3.1-8b-instruct"])
    assert p.services[0].image_version == "0.11.0"


def test_accelerator_before_cpu_for_fallback_roles(catalog):
    p = plan(inventory(H200), catalog, models=["bge-m3"])
    assert p.services[0].engine == "vllm-cuda"
    assert any(r.engine == "llama-cpp" and r.code == "ranked_lower" and "rule 'accelerator'" in r.reason
               for r in p.rejected)


def test_chip_variant_and_fallback_to_cpu(catalog):
    p = plan(inventory("ascend-310p-2npu"), catalog, models=["qwen2.5-7b-instruct", "bge-m3"])
    chat, embed = p.services
    assert chat.engine == "mindie-310p" and embed.engine == "llama-cpp"   # no 310P engine serves embeddings
    assert any(r.model == "bge-m3" and r.engine == "mindie-310p" and r.code == "role" for r in p.rejected)


def test_exclusive_engines_do_not_share_devices(catalog):
    p = plan(inventory("ascend-910b-8npu"), catalog, models=["qwen2.5-72b-instruct", "qwen3-32b", "bge-m3"],
             profile="default")
    used: dict[int, list] = {}
    for s in p.services:
        for d in s.devices:
            used.setdefault(d.index, []).append(s)
    for services in used.values():
        if any(s.exclusive_devices for s in services):
            assert len(services) == 1
        assert sum(s.memory_mib_per_device for s in services) <= services[0].memory.usable_mib


def test_bin_packing_several_models_on_one_gpu(catalog):
    models = ["qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "bge-m3", "bge-reranker-v2-m3"]
    p = plan(inventory(H200), catalog, models=models)
    assert [s.model for s in p.services] == models      # services keep the request order
    assert len({s.port for s in p.services}) == 4
    assert sum(s.memory_mib_per_device for s in p.services) <= 129393
    fracs = [float(s.command[s.command.index("--gpu-memory-utilization") + 1]) for s in p.services]
    assert sum(fracs) <= 0.9 + 0.004                    # each engine's share of the one device


def test_models_that_fit_alone_but_not_together_exit_3(catalog):
    import pytest

    from appliance.errors import NoFitError

    with pytest.raises(NoFitError) as info:
        plan(inventory(H200), catalog, models=["llama-3.1-70b-instruct", "qwen2.5-72b-instruct", "qwen3-32b"])
    assert "not together" in info.value.message
    placed = {s.model for s in info.value.plan.services}
    assert len(placed) == 2
