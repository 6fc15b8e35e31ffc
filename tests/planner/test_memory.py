"""The serving memory formula against numbers computed by hand (see appliance/planner/memory.py).

Each expected value is written out with its arithmetic; the test does not reuse the formula.
Profile 'default': 8,192 tokens x 8 sequences = 65,536 tokens; 1 MiB = 1,048,576 bytes.
"""

from __future__ import annotations

from appliance.planner import memory as M


def _b(catalog, model, precision, engine, tp, context=8192, concurrency=8):
    return M.budget(catalog.models[model], catalog.precisions[precision], catalog.engines[engine], tp,
                    context_tokens=context, concurrency=concurrency, settings=catalog.planner, usable_mib=None)


def test_qwen25_7b_bf16_tp1(catalog):
    b = _b(catalog, "qwen2.5-7b-instruct", "bf16", "vllm-cuda", 1)
    # 7,615,616,512 params x 2 B = 15,231,233,024 B = 14,525.6 MiB -> 14,526
    assert b.weights_mib == 14526
    # 2 (K,V) x 28 layers x 4 KV heads x 128 x 2 B = 57,344 B/token; x 65,536 = 3,758,096,384 B = 3,584 MiB
    assert b.kv_cache_mib == 3584
    assert b.overhead_mib == 3072
    assert b.total_mib == 14526 + 3584 + 3072 == 21182


def test_qwen25_7b_awq_keeps_embeddings_16bit(catalog):
    b = _b(catalog, "qwen2.5-7b-instruct", "awq-int4", "vllm-cuda", 1)
    # E = 152,064 x 3,584 x 2 (embed + lm_head) = 1,090,002,944
    # (7,615,616,512 - E) x 0.53125 + E x 2 = 3,466,732,208 + 2,180,005,888 = 5,646,738,096 B = 5,385.2 MiB
    assert b.weights_mib == 5386


def test_llama31_70b_bf16_and_fp8(catalog):
    bf16 = _b(catalog, "llama-3.1-70b-instruct", "bf16", "vllm-cuda", 1)
    # 70,553,706,496 x 2 = 141,107,412,992 B = 134,570.9 MiB -> 134,571
    assert bf16.weights_mib == 134571
    # 2 x 80 x 8 x 128 x 2 = 327,680 B/token x 65,536 = 20,480 MiB
    assert bf16.kv_cache_mib == 20480
    assert bf16.total_mib == 158123
    fp8 = _b(catalog, "llama-3.1-70b-instruct", "fp8", "vllm-cuda", 1)
    # E = 128,256 x 8,192 x 2 = 2,101,346,304; (P - E) x 1 + E x 2 = 72,655,052,800 B = 69,289.3 MiB
    assert fp8.weights_mib == 69290
    assert fp8.total_mib == 69290 + 20480 + 3072


def test_qwen25_72b_tp4_splits_weights_and_kv_heads(catalog):
    b = _b(catalog, "qwen2.5-72b-instruct", "bf16", "vllm-ascend", 4)
    # 72,706,203,648 x 2 / 4 = 36,353,101,824 B = 34,669.2 MiB -> 34,670
    assert b.weights_mib == 34670
    # 8 KV heads / 4 ranks = 2 per device: 2 x 80 x 2 x 128 x 2 = 81,920 B/token x 65,536 = 5,120 MiB
    assert b.kv_cache_mib == 5120
    assert b.total_mib == 34670 + 5120 + 4096


def test_glm4_kv_heads_replicated_when_tp_exceeds_them(catalog):
    b = _b(catalog, "glm-4-9b-chat", "bf16", "vllm-cuda", 4)
    # 2 KV heads on 4 ranks: each rank keeps 1: 2 x 40 x 1 x 128 x 2 = 20,480 B/token x 65,536 = 1,280 MiB
    assert b.kv_cache_mib == 1280


def test_deepseek_v3_mla_cache_and_moe_weights(catalog):
    b = _b(catalog, "deepseek-v3", "fp8", "vllm-cuda", 8)
    # E = 129,280 x 7,168 x 2 = 1,853,358,080
    # (671e9 - E) x 1 + E x 2 = 672,853,358,080 B; / 8 = 84,106,669,760 B = 80,210.4 MiB -> 80,211
    assert b.weights_mib == 80211
    # MLA: 61 layers x (512 + 64) x 2 B = 70,272 B/token, not split by TP; x 65,536 = 4,392 MiB
    assert b.kv_cache_mib == 4392


def test_encoder_has_no_kv_cache_and_one_embedding_table(catalog):
    b = _b(catalog, "bge-m3", "fp16", "vllm-cuda", 1)
    # tied: 567,754,752 x 2 = 1,135,509,504 B = 1,082.9 MiB -> 1,083; no KV cache
    assert b.weights_mib == 1083
    assert b.kv_cache_mib == 0


def test_context_is_capped_by_the_model(templated_catalog):
    b = _b(templated_catalog, "demo-chat", "bf16", "demo-engine", 1, context=8192, concurrency=8)
    # demo-chat max_context 2,048: 2 x 2 layers x 4 x 16 x 2 = 512 B/token x 2,048 x 8 = 8 MiB
    assert b.context_tokens == 2048
    assert b.kv_cache_mib == 8


def test_usable_memory():
    # 143,771 MiB x 0.9 = 129,393.9 -> 129,393
    assert M.usable(143771, 0.9) == 129393
