"""Training memory rules against hand-computed numbers, and recipe/device selection."""

from __future__ import annotations

import pytest

from appliance.errors import NoFitError
from appliance.planner.training import lora_params, plan_training, training_memory

from .conftest import inventory


def test_lora_memory_qwen7b(catalog):
    model, rec = catalog.models["qwen2.5-7b-instruct"], catalog.training["lora-cuda"]
    # per layer (h=3584, q=28x128=3584, kv=4x128=512, i=18944):
    # (3584+3584) + 2(3584+512) + (3584+3584) + 2(3584+18944) + (18944+3584)
    #   = 7,168 + 8,192 + 7,168 + 45,056 + 22,528 = 90,112; x 28 layers x r 8
    assert lora_params(model, 8) == 90112 * 28 * 8 == 20185088
    m = training_memory(model, rec, devices=1, seq_len=2048, micro_batch=1, lora_rank=8)
    assert m.weights_mib == 14526                               # 7,615,616,512 x 2 B
    assert m.states_mib == 308                                  # 20,185,088 x 16 B = 322,961,408 B = 308 MiB
    # activations: 2,048 x 3,584 x (2x28 + 34) = 660,602,880 B; logits 2,048 x 152,064 x 4 = 1,245,708,288 B
    # = 1,906,311,168 B = 1,817.99 MiB -> 1,818
    assert m.activations_mib == 1818
    assert m.total_mib_per_device == 14526 + 308 + 1818 + 2048


def test_full_memory_shards_16_bytes_per_param(catalog):
    model, rec = catalog.models["qwen2.5-7b-instruct"], catalog.training["full-cuda"]
    m = training_memory(model, rec, devices=8, seq_len=2048)
    # weights 7,615,616,512 x 2 / 8 = 1,903,904,128 B = 1,815.7 -> 1,816 MiB
    # states 7,615,616,512 x 14 / 8 = 13,327,328,896 B = 12,709.9 -> 12,710 MiB (16 B/param in all)
    assert (m.weights_mib, m.states_mib) == (1816, 12710)
    one = training_memory(model, rec, devices=1, seq_len=2048)
    assert one.weights_mib + one.states_mib >= 7615616512 * 16 // (1 << 20)


def test_plan_training_picks_recipe_and_fewest_devices(catalog):
    lora = plan_training(inventory("h200-1gpu"), "qwen2.5-7b-instruct", "lora", catalog)
    assert lora.recipe == "lora-cuda" and lora.image.startswith("hiyouga/llamafactory") and len(lora.devices) == 1
    full = plan_training(inventory("ascend-910b-8npu"), "qwen2.5-7b-instruct", "full", catalog)
    # 16 B/param = 116,208 MiB of states over n devices + activations + 4,096 MiB overhead vs 58,982 usable:
    # n=2 -> 64,018 (too much), n=4 -> 34,966
    assert full.recipe == "full-cann" and len(full.devices) == 4
    assert full.memory.total_mib_per_device <= full.usable_mib_per_device
    with pytest.raises(NoFitError) as info:
        plan_training(inventory("ascend-910b-8npu"), "qwen2.5-72b-instruct", "full", catalog)
    assert "8 x Ascend 910B3: needs" in info.value.message
    with pytest.raises(NoFitError):
        plan_training(inventory("h200-1gpu"), "llama-3.1-70b-instruct", "full", catalog)


def test_plan_training_demo_recipe_from_the_templated_overlay(templated_catalog):
    demo = plan_training(inventory("cpu-only"), "demo-chat", "lora", templated_catalog)
    assert demo.recipe == "lora-cpu-demo" and demo.image == "appliance/demo-trainer:0.1.0" and demo.devices == []


def test_cpu_only_box_is_told_training_needs_an_accelerator(catalog):
    """The shipped catalog has no CPU trainer: the refusal says so instead of 'use a smaller model'."""
    with pytest.raises(NoFitError) as info:
        plan_training(inventory("cpu-only"), "smollm2-135m-instruct", "lora", catalog)
    assert "no lora recipe for backend cpu" in info.value.message
    assert "CPU-only box serves models but does not train them" in info.value.fix
    # where a recipe exists but memory does not fit, the advice stays about the job's size
    with pytest.raises(NoFitError) as info:
        plan_training(inventory("h200-1gpu"), "llama-3.1-70b-instruct", "full", catalog)
    assert "smaller model" in info.value.fix
