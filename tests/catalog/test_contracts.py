"""Argument contracts: every command the planner can produce is one its engine version accepts.

The audit (appliance.planner.audit) renders every candidate of every model on a node with
every image of its engine; these tests run it on every node fixture. The catalog as it was
before the contracts (tests/fixtures/catalog/before-18/engines.yaml, engines.yaml at commit
76eb0c0) is audited too: it must fail, on exactly the defects the audit of issue 18 found.
"""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path

import pytest

from appliance.catalog import load_catalog
from appliance.catalog.contract import Command, check, parse_flags, role_args
from appliance.planner.audit import audit, rendered_services
from tests.support import NODES, REPO

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "catalog"
NODE_NAMES = sorted(p.name for p in NODES.iterdir() if (p / "root").is_dir())


@lru_cache(maxsize=None)
def inventory(name: str):
    from appliance.inventory.detect import detect

    return detect(snapshot=str(NODES / name), usage=False)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def before_catalog(tmp_path_factory):
    """The shipped catalog with engines.yaml as it was before the argument contracts."""
    root = tmp_path_factory.mktemp("before-18")
    for f in (REPO / "images" / "catalog").glob("*.yaml"):
        shutil.copy(f, root / f.name)
    shutil.copy(FIXTURES / "before-18" / "engines.yaml", root / "engines.yaml")
    return load_catalog(root, use_cache=False)


@pytest.mark.parametrize("node", NODE_NAMES)
def test_every_planned_command_meets_its_contract(node, catalog):
    inv = inventory(node)
    services = list(rendered_services(inv, catalog))
    assert services, f"{node}: the planner renders no service at all"
    violations = audit(inv, catalog)
    assert not violations, "\n".join(str(v) for v in violations)


def test_the_audit_covers_every_engine_and_image(catalog):
    """Across the node fixtures every non-demo engine and each of its images is rendered."""
    seen: set[tuple[str, str]] = set()
    for node in NODE_NAMES:
        seen |= {(s.engine, s.image) for s in rendered_services(inventory(node), catalog)}
    want = {(eid, img.image) for eid, eng in catalog.engines.items() if not eng.demo for img in eng.images}
    assert want - seen == set()


def _rules(violations) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for v in violations:
        out.setdefault(v.rule, set()).add(v.service)
    return out


def test_the_catalog_before_the_contracts_fails(before_catalog):
    found = {}
    for node in ("ascend-910b-8npu", "ascend-310p-2npu", "gaudi2-8hpu", "cpu-only", "mthreads-s80-1",
                 "metax-c500-2", "amd-mi300x-8gpu-epyc"):
        for rule, names in _rules(audit(inventory(node), before_catalog)).items():
            found.setdefault(rule, set()).update(names)
    text = {rule: " ".join(sorted(names)) for rule, names in found.items()}
    # vLLM --task on vllm-ascend 0.23.0 (removed in 0.13.0) and on ROCm 0.27.1
    assert "quay.io/ascend/vllm-ascend:v0.23.0" in text["flag_version"]
    assert "rocm7.2-vllm0.27.1" in text["flag_version"]
    assert "flag_deprecated" in found                          # --task on 0.10.1 .. 0.12
    assert "mindie" in text["entrypoint"] and "mindie" in text["config"]   # bash -c, no config data
    assert "tgi-gaudi" in text["flag_less_than"]               # input == total tokens
    assert "flag_at_least" in found                            # llama.cpp pooling without -ub
    assert "mtt-vllm-public" in text["flag_equals"]            # vllm_musa without --device musa
    assert "vllm-metax" in text["env_when_shared"]             # no MACA_MPS_MODE when sharing


# ---- the checker itself -------------------------------------------------------------------


def _cmd(args, role="embedding", backend="cuda", **kw) -> Command:
    return Command(name="svc", role=role, backend=backend, entrypoint=kw.pop("entrypoint", []), args=args,
                   env=kw.pop("env", {}), values=kw.pop("values", {"context": 8192}), **kw)


def test_vllm_task_is_refused_after_its_removal(catalog):
    vllm = catalog.contracts["vllm"]
    args = ["--model", "/m", "--task", "embed"]
    assert check(_cmd(args), vllm, "0.8.5") == []
    deprecated = check(_cmd(args), vllm, "0.11.0")
    assert [v.rule for v in deprecated] == ["flag_deprecated"] and "--runner pooling" in deprecated[0].message
    removed = check(_cmd(args), vllm, "0.23.0")
    assert [v.rule for v in removed] == ["flag_version"] and "removed in 0.13.0" in removed[0].message
    assert [v.rule for v in check(_cmd(["--runner", "pooling"]), vllm, "0.9.1")] == ["flag_version"]


def test_role_arguments_follow_the_engine_version(catalog):
    vllm = catalog.contracts["vllm"]
    assert role_args(vllm, "0.4.2", "embedding") == []
    assert role_args(vllm, "0.8.5", "embedding") == ["--task", "embed"]
    assert role_args(vllm, "0.8.5", "rerank") == ["--task", "score"]
    assert role_args(vllm, "0.10.1.1", "embedding") == ["--runner", "pooling"]
    assert role_args(vllm, "0.23.0", "rerank") == ["--runner", "pooling"]
    assert role_args(vllm, "0.23.0", "chat") is None


def test_unknown_flags_positionals_and_duplicates_are_caught(catalog):
    vllm = catalog.contracts["vllm"]
    rules = [v.rule for v in check(_cmd(["/m", "--model", "/m", "--port", "1", "--port", "2", "--bogus", "x"]),
                                   vllm, "0.11.0")]
    assert sorted(rules) == ["duplicate", "positional", "unknown_flag"]
    trt = catalog.contracts["tensorrt-llm"]
    assert check(_cmd(["/m", "--tp_size", "2"], role="chat"), trt, "1.3.0rc5") == []


def test_flag_parsing_knows_switches_and_equals_forms(catalog):
    vllm = catalog.contracts["vllm"]
    pairs, positional = parse_flags(["--trust-remote-code", "/x", "--port=8000", "--max-model-len", "-1"], vllm)
    assert pairs == [("--trust-remote-code", None), ("--port", "8000"), ("--max-model-len", "-1")]
    assert positional == ["/x"]


def test_companion_rules(catalog):
    tgi, llama, mindie = catalog.contracts["tgi"], catalog.contracts["llama.cpp"], catalog.contracts["mindie"]
    same = ["--max-input-tokens", "4096", "--max-total-tokens", "4096"]
    assert [v.rule for v in check(_cmd(same, role="chat"), tgi, "2.0.5")] == ["flag_less_than"]
    ok = ["--max-input-tokens", "4095", "--max-total-tokens", "4096"]
    assert check(_cmd(ok, role="chat"), tgi, "2.0.5") == []
    small = ["--embedding", "-b", "2048", "-ub", "512"]
    assert sorted(v.rule for v in check(_cmd(small), llama, "b8840")) == ["flag_at_least", "flag_at_least"]
    assert check(_cmd(small, role="chat"), llama, "b8840") == []       # chat: the batch may be smaller
    conf = {"ServerConfig.ipAddress": "0.0.0.0", "BackendConfig.ModelDeployConfig.maxSeqLen": 8192,
            "BackendConfig.ScheduleConfig.maxPrefillTokens": 8192, "BackendConfig.ScheduleConfig.maxIterTimes": 8192}
    rules = [v.rule for v in check(_cmd([], role="chat", entrypoint=["bash", "-lc"], config=conf), mindie, "2.1.RC1")]
    assert rules == ["config_set"]                                     # allowAllZeroIpListening missing
    conf["ServerConfig.allowAllZeroIpListening"] = True
    assert check(_cmd([], role="chat", entrypoint=["bash", "-lc"], config=conf), mindie, "2.1.RC1") == []
    conf["BackendConfig.ScheduleConfig.maxIterTimes"] = 512
    assert [v.rule for v in check(_cmd([], role="chat", entrypoint=["bash", "-lc"], config=conf), mindie,
                                  "2.1.RC1")] == ["config_same"]


def test_mindie_settings_reach_its_start_script(catalog):
    """The script the container runs applies exactly the settings the contract checked."""
    import json
    import shlex
    import subprocess
    import sys

    svc = next(s for s in rendered_services(inventory("ascend-910b-8npu"), catalog) if s.engine == "mindie-910b")
    assert svc.entrypoint == ["bash", "-lc"] and svc.config["ServerConfig.allowAllZeroIpListening"] is True
    script = shlex.split(svc.command[0])
    code, path, edits = script[script.index("-c") + 1], script[script.index("-c") + 2], script[script.index("-c") + 3]
    assert path == "conf/config.json" and json.loads(edits) == svc.config
    config = {"ServerConfig": {"ipAddress": "127.0.0.1", "port": 1025},
              "BackendConfig": {"npuDeviceIds": [[0]], "ModelDeployConfig": {"maxSeqLen": 2560,
                                "ModelConfig": [{"modelName": "x", "modelWeightPath": "/x", "worldSize": 1}]},
                                "ScheduleConfig": {"maxBatchSize": 1, "maxPrefillTokens": 1, "maxIterTimes": 1}}}
    work = Path(__file__).parent / "__mindie_config_probe__"
    work.mkdir(exist_ok=True)
    try:
        (work / "conf").mkdir(exist_ok=True)
        (work / "conf" / "config.json").write_text(json.dumps(config))
        subprocess.run([sys.executable, "-c", code, path, edits], cwd=work, check=True, timeout=30)
        out = json.loads((work / "conf" / "config.json").read_text())
    finally:
        shutil.rmtree(work)
    ctx = svc.memory.context_tokens
    assert out["ServerConfig"]["allowAllZeroIpListening"] is True and out["ServerConfig"]["ipAddress"] == "0.0.0.0"
    assert out["ServerConfig"]["port"] == svc.port
    sched = out["BackendConfig"]["ScheduleConfig"]
    seq = out["BackendConfig"]["ModelDeployConfig"]["maxSeqLen"]
    assert sched["maxPrefillTokens"] == sched["maxIterTimes"] == seq == ctx
    assert out["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0]["modelWeightPath"] == svc.model_container_path
    assert out["BackendConfig"]["npuDeviceIds"] == [list(range(svc.tensor_parallel))]


def test_the_local_llama_cpp_launcher_accepts_every_planned_command(catalog):
    """A dry start of the built engine: its launcher parses each planned command and sets the
    batch sizes the contract asks for (no silent override of its own)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("llamacpp_main", REPO / "images" / "engines" / "llamacpp" / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    checked = 0
    for s in rendered_services(inventory("cpu-only"), catalog):
        if s.engine != "llama-cpp" or s.build is None:
            continue
        args = main.parse(s.command)
        params = main.params(args)
        if s.role in ("embedding", "rerank"):
            assert params.n_ubatch >= s.memory.context_tokens and params.n_batch >= params.n_ubatch
        assert params.endpoint_metrics is False
        checked += 1
    assert checked >= 3


def test_a_deprecated_image_is_taken_only_when_nothing_else_fits(catalog):
    import dataclasses

    from appliance.planner.candidates import Context, choose_image
    from appliance.planner.core import device_groups

    inv = inventory("amd-mi300x-8gpu-epyc")
    group = next(g for g in device_groups(inv, catalog) if g.backend == "rocm")
    ctx = Context(catalog=catalog, profile_name="default", profile=catalog.profiles["default"], groups=[group],
                  node_arch="x86_64", cpu_flags=[], has_accelerators=True, license_reason={})
    eng = catalog.engines["vllm-rocm"]
    picks = {}
    for runtime in ("7.2", "7.0", "6.4"):
        g = dataclasses.replace(group, runtime_version=runtime)
        picks[runtime] = choose_image("qwen2.5-7b-instruct", "vllm-rocm", eng, g, ctx, [])
    assert picks["7.2"].image.endswith("rocm7.2-vllm0.27.1") and picks["7.2"].deprecated is None
    assert picks["7.0"].image.endswith("rocm7.0-vllm0.18.1") and picks["7.0"].deprecated is None
    assert picks["6.4"].image.endswith("rocm6.4-vllm0.10.2") and "deprecated" in picks["6.4"].deprecated


def test_every_image_serves_or_says_how_it_is_built(catalog):
    """No catalog image is a base without its engine unless a recipe layers the engine on it;
    the plan carries the recipe so the runtime builds it (appliance.runtime.images)."""
    for eid, eng in catalog.engines.items():
        for img in eng.images:
            assert img.serves or (img.recipe is not None and img.recipe.tag == img.image), (eid, img.image)
    kunlun = next(s for s in rendered_services(inventory("kunlunxin-p800-8xpu"), catalog) if s.engine == "vllm-kunlun")
    assert kunlun.recipe is not None and kunlun.recipe.base == "wjie520/vllm_kunlun:uv_base"
    assert "vllm==0.15.1" in kunlun.recipe.wheels


@pytest.mark.parametrize("node", NODE_NAMES)
def test_every_command_with_its_engine_key_meets_its_contract(node, catalog):
    """The per-service secret as each engine takes it (appliance.catalog.contract.KEY_INPUTS): a
    key flag is one the engine's version accepts, and an engine given the key by a start wrapper
    (vLLM's VLLM_API_KEY, SGLang's --api-key) has the entrypoint the wrapper ``exec``s."""
    from appliance.catalog.contract import key_input
    from appliance.planner.command import contract_command, key_launch

    bad = []
    for svc in rendered_services(inventory(node), catalog):
        eng = catalog.engines[svc.engine]
        key = key_input(eng.service)
        contract = catalog.contracts.get(eng.service)
        if key is None or contract is None:
            continue
        version = next(i.contract_version for i in eng.images if i.image == svc.image)
        bad += [f"{svc.name} [{svc.image}]: {v}" for v in check(contract_command(svc, key=key), contract, version)]
        if not key_launch(key, list(svc.entrypoint), list(svc.command), {}, "/run/key").applied:
            bad.append(f"{svc.name} [{svc.image}]: no entrypoint to start with its key")
    assert not bad, "\n".join(bad)


def test_key_inputs_name_flags_of_their_contracts(catalog):
    from appliance.catalog.contract import KEY_INPUTS

    for service, key in KEY_INPUTS.items():
        assert key.source
        if key.kind in ("flag", "file_flag"):
            assert key.name in catalog.contracts[service].flags, service
    # the engines without a key are named as such (the internal network alone protects them)
    assert {e.service for e in catalog.engines.values()} - set(KEY_INPUTS) == {"tgi", "mindie", "tensorrt-llm"}
