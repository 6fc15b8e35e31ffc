"""`plan --inventory FILE --export k8s DIR`: the cluster plan as Kubernetes manifests, checked
against the published schemas (tests/fixtures/k8s, README there) and for the values that matter:
device-plugin resources and counts, the LeaderWorkerSet's size, the Ray head and launcher of a
model across nodes, byte-identical reruns and the directory rules."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from appliance.catalog import load_catalog
from appliance.cluster.gather import known_facts
from appliance.cluster.hosts import load_inventory
from appliance.cluster.k8s import (
    DEVICE_RESOURCES,
    MARKER,
    export_k8s,
    parse_resource_overrides,
    resource_name,
    write_export,
)
from appliance.cluster.planner import plan_cluster
from appliance.errors import UsageError
from tests.stack_support import run_cli

SCHEMAS = Path(__file__).resolve().parents[1] / "fixtures" / "k8s"


def _strict(node):
    """The CRD's structural schema with unknown fields refused, as yannh's ``-strict`` schemas do
    for the built-in kinds (a CRD's schema prunes unknown fields instead; a typo would pass)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


@pytest.fixture(scope="module")
def validators() -> dict[tuple[str, str], Draft7Validator]:
    def load(name: str):
        return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))

    return {("apps/v1", "Deployment"): Draft7Validator(load("deployment-apps-v1.json")),
            ("v1", "Service"): Draft7Validator(load("service-v1.json")),
            ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"):
                Draft7Validator(_strict(load("leaderworkerset-v1.json")))}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _plan(inventory, models, cat, **kw):
    cluster = load_inventory(inventory)
    return plan_cluster(cluster, known_facts(cluster), cat, models, **kw)


def _docs(files: dict[str, str]) -> dict[str, list[dict]]:
    return {name: list(yaml.safe_load_all(text)) for name, text in files.items()}


def _kind(docs: list[dict], kind: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def _valid(validators, files: dict[str, str]) -> list[str]:
    kinds = []
    for name, docs in _docs(files).items():
        for doc in docs:
            errors = [f"{name} {doc['kind']} {list(e.path)}: {e.message}"
                      for e in validators[(doc["apiVersion"], doc["kind"])].iter_errors(doc)]
            assert errors == []
            kinds.append(doc["kind"])
    return kinds


@pytest.mark.parametrize("which", ["two_ascend", "two_h100", "single_node"])
def test_manifests_validate_against_the_published_schemas(which, request, validators, catalog):
    if which == "single_node":  # the default set on the Ascend pair: qwen3-32b and bge-m3, both on npu1
        p = _plan(request.getfixturevalue("two_ascend"), None, catalog)
        assert {pl.mode for pl in p.placements} == {"node"}
        expected = ["Deployment", "Service"] * len(p.placements)
    else:
        p = _plan(request.getfixturevalue(which), ["deepseek-v3"], catalog)
        expected = ["LeaderWorkerSet", "Service"]
    files = export_k8s(p, catalog)
    assert sorted(_valid(validators, files)) == sorted(expected)
    for text in files.values():
        assert "namespace:" not in text and "privileged: true" not in text  # left to the user; never privileged


def test_a_typo_fails_the_schema(validators, two_h100, catalog):
    """The schemas are able to fail: an unknown field in the LWS pod template and a string size."""
    [docs] = _docs(export_k8s(_plan(two_h100, ["deepseek-v3"], catalog), catalog)).values()
    lws = _kind(docs, "LeaderWorkerSet")
    lws["spec"]["leaderWorkerTemplate"]["size"] = "2"
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["comand"] = ["ray"]
    messages = sorted(e.message for e in validators[("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")]
                      .iter_errors(lws))
    assert messages == ["'2' is not of type 'integer'",
                        "Additional properties are not allowed ('comand' was unexpected)"]


def test_deepseek_v3_on_two_h100_is_one_leaderworkerset_with_the_ray_head_then_the_launcher(two_h100, catalog):
    p = _plan(two_h100, ["deepseek-v3"], catalog)
    head = p.placements[0].parts[0]
    weights = head.command[head.command.index("--model") + 1]  # <data dir>/models/<model>/<precision>
    assert weights.endswith("/models/deepseek-v3/fp8")
    files = export_k8s(p, catalog)
    assert list(files) == ["llm-deepseek-v3.yaml"]
    docs = _docs(files)["llm-deepseek-v3.yaml"]
    lws = _kind(docs, "LeaderWorkerSet")
    tmpl = lws["spec"]["leaderWorkerTemplate"]
    assert lws["spec"]["replicas"] == 1 and tmpl["size"] == 2
    leader = tmpl["leaderTemplate"]["spec"]
    worker = tmpl["workerTemplate"]["spec"]
    assert leader["nodeSelector"] == {"kubernetes.io/hostname": "gpu1"}
    assert worker["nodeSelector"] == {"kubernetes.io/hostname": "gpu2"}
    apart = {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "llm-deepseek-v3"}},
        "topologyKey": "kubernetes.io/hostname"}]}
    assert leader["affinity"] == worker["affinity"] == {"podAntiAffinity": apart}  # one pod per node
    lc, wc = leader["containers"][0], worker["containers"][0]
    assert lc["image"] == wc["image"] == "vllm/vllm-openai:v0.11.0"
    assert lc["resources"] == wc["resources"] == {"limits": {"nvidia.com/gpu": 8}}

    assert lc["command"][:2] == ["sh", "-c"] and len(lc["command"]) == 3
    words = shlex.split(lc["command"][2])
    # the Ray head (the pod's own IP from the downward API), a wait for both nodes, then the launcher
    assert words[:6] == ["ray", "start", "--head", "--port=6379", "--node-ip-address=$(POD_IP)", "--num-gpus=8"]
    assert words[6:8] == ["&&", "until"] and "sys.exit(sum(1 for x in ray.nodes() if x[\"Alive\"]) < 2)" in words[10]
    launcher = words[words.index("exec") + 1:]
    assert launcher[:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert launcher[launcher.index("--pipeline-parallel-size") + 1] == "2"
    assert launcher[launcher.index("--tensor-parallel-size") + 1] == "8"
    assert launcher[launcher.index("--distributed-executor-backend") + 1] == "ray"
    assert launcher[launcher.index("--model") + 1] == weights

    assert wc["command"][:2] == ["sh", "-c"]
    assert shlex.split(wc["command"][2]) == ["until", "ray", "start", "--address=$(LWS_LEADER_ADDRESS):6379",
                                             "--node-ip-address=$(POD_IP)", "--num-gpus=8", "--block;", "do",
                                             "sleep", "5;", "done"]
    assert "10.1.0." not in files["llm-deepseek-v3.yaml"]  # no inventory address inside a pod network
    env = {e["name"]: e for e in lc["env"]}
    assert lc["env"][0] == {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    assert env["VLLM_HOST_IP"]["value"] == "$(POD_IP)"
    assert wc["env"] == lc["env"]
    assert lc["readinessProbe"]["httpGet"] == {"path": catalog.engines["vllm-cuda"].health, "port": 8064}
    assert "readinessProbe" not in wc  # a Ray worker serves nothing
    assert {"name": "weights", "mountPath": weights, "readOnly": True} in wc["volumeMounts"]
    assert {"name": "weights", "hostPath": {"path": weights, "type": "Directory"}} in worker["volumes"]
    assert {"name": "weights", "hostPath": {"path": weights, "type": "Directory"}} in leader["volumes"]
    assert lc["securityContext"] == {"privileged": False, "allowPrivilegeEscalation": False}
    svc = _kind(docs, "Service")
    assert svc["spec"]["selector"] == {"leaderworkerset.sigs.k8s.io/name": "llm-deepseek-v3", "role": "leader"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8064, "targetPort": 8064, "protocol": "TCP"}]


def test_deepseek_v3_on_two_ascend_requests_ascend910_and_sets_hccl_to_the_pod_ip(two_ascend, catalog):
    docs = _docs(export_k8s(_plan(two_ascend, ["deepseek-v3"], catalog), catalog))["llm-deepseek-v3.yaml"]
    tmpl = _kind(docs, "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    assert tmpl["size"] == 2
    for role in ("leaderTemplate", "workerTemplate"):
        c = tmpl[role]["spec"]["containers"][0]
        assert c["image"] == "quay.io/ascend/vllm-ascend:v0.11.0"
        assert c["resources"] == {"limits": {"huawei.com/Ascend910": 8}}
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["HCCL_IF_IP"] == "$(POD_IP)" and env["RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"] == "1"
    words = shlex.split(tmpl["leaderTemplate"]["spec"]["containers"][0]["command"][2])
    launcher = words[words.index("exec") + 1:]
    assert launcher[launcher.index("--pipeline-parallel-size") + 1] == "2"
    assert launcher[launcher.index("--quantization") + 1] == "ascend"
    assert launcher[launcher.index("--model") + 1].endswith("/models/deepseek-v3/w8a8")


def test_a_model_on_one_node_is_a_deployment_pinned_to_it_with_the_plans_command(two_ascend, catalog):
    p = _plan(two_ascend, None, catalog)
    files = export_k8s(p, catalog)
    assert list(files) == ["embed-bge-m3.yaml", "llm-qwen3-32b.yaml"]
    svc = next(s for s in p.node_plans["npu1"].services if s.name == "llm-qwen3-32b")
    docs = _docs(files)["llm-qwen3-32b.yaml"]
    dep = _kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "npu1"}
    assert pod["automountServiceAccountToken"] is False
    [c] = pod["containers"]
    assert (c["command"], c["args"]) == (svc.entrypoint, svc.command)
    assert c["resources"] == {"limits": {"huawei.com/Ascend910": 2}} and len(svc.devices) == 2
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": catalog.engines["vllm-ascend"].health, "port": 8000}
    # the start period (loading the weights) is the startup probe's, so liveness waits for it
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= svc.health.start_period_s
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["SERVED_MODEL_NAME"] == "qwen3-32b" and env["PORT"] == "8000" and env["HF_HUB_OFFLINE"] == "1"
    assert {"name": "weights", "hostPath": {"path": svc.model_path, "type": "Directory"}} in pod["volumes"]
    assert {"name": "weights", "mountPath": svc.model_path, "readOnly": True} in c["volumeMounts"]
    assert c["securityContext"] == {"privileged": False, "allowPrivilegeEscalation": False}
    assert "namespace" not in dep["metadata"]
    service = _kind(docs, "Service")
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8000


def test_sglang_across_nodes_runs_the_launcher_on_every_pod_with_the_lws_rank(two_h100, catalog):
    from appliance.cluster import multinode
    from appliance.cluster.models import ClusterPlan
    from appliance.planner.core import node_context

    cluster = load_inventory(two_h100)
    facts = known_facts(cluster)
    base = plan_cluster(cluster, facts, catalog, ["deepseek-v3"])
    ctx = node_context(facts["gpu1"], catalog, "default", ["deepseek-v3"])
    group = next(g for g in ctx.groups if not g.is_cpu)
    found, _ = multinode.candidates("deepseek-v3", ctx, group, 2, catalog)
    sg = next(s for s in found if s.candidate.engine == "sglang-cuda")
    pl = multinode.placement(sg, cluster.nodes, [group, group], catalog, 8100, Path("/m"))
    p = ClusterPlan(policy="binpack", head="gpu1", nodes=base.nodes, placements=[pl])
    docs = _docs(export_k8s(p, catalog))["llm-deepseek-v3.yaml"]
    tmpl = _kind(docs, "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    assert tmpl["size"] == 2
    leader = tmpl["leaderTemplate"]["spec"]["containers"][0]
    worker = tmpl["workerTemplate"]["spec"]["containers"][0]
    assert leader["args"] == worker["args"]  # the rank comes from LWS, the same template on every pod
    args = leader["args"]
    assert args[args.index("--dist-init-addr") + 1] == "$(LWS_LEADER_ADDRESS):20000"
    assert args[args.index("--nnodes") + 1] == "2"
    assert args[args.index("--node-rank") + 1] == "$(LWS_WORKER_INDEX)"
    assert args[args.index("--tp-size") + 1] == "16"
    assert leader["resources"] == {"limits": {"nvidia.com/gpu": 8}}
    assert {"name": "dist-init", "containerPort": 20000, "protocol": "TCP"} in leader["ports"]


def test_plan_strings_stay_literal_in_kubernetes_and_in_the_shell(two_h100, catalog):
    """``$`` of the plan is doubled (Kubernetes expands only our own references) and each argument
    is one shell word however it is spelled: no injection through a path or a value."""
    p = _plan(two_h100, ["deepseek-v3"], catalog)
    head = p.placements[0].parts[0]
    odd = "/models/a b;$(rm -rf /)'x"
    head.command[head.command.index("--served-model-name") + 1] = odd
    head.env["HF_HOME"] = "$(HOME)/cache"
    lc = _kind(_docs(export_k8s(p, catalog))["llm-deepseek-v3.yaml"], "LeaderWorkerSet")[
        "spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    words = shlex.split(lc["command"][2].replace("$$", "$"))  # as the container's shell gets it
    assert words[words.index("--served-model-name") + 1] == odd
    assert {"name": "HF_HOME", "value": "$$(HOME)/cache"} in lc["env"]


def test_every_vendor_resource_name_has_a_source_and_ascend_tells_910_from_310p():
    assert resource_name("nvidia", "NVIDIA H100 80GB HBM3") == "nvidia.com/gpu"
    assert resource_name("ascend", "Ascend 910B3") == "huawei.com/Ascend910"
    assert resource_name("ascend", "Ascend 310P3") == "huawei.com/Ascend310P"
    assert resource_name("amd", "AMD Instinct MI300X") == "amd.com/gpu"
    assert resource_name("gaudi", "Intel Gaudi2 (HL-225)") == "habana.ai/gaudi"
    assert resource_name("cambricon", "MLU370-X8") == "cambricon.com/mlu"
    assert resource_name("iluvatar", "Iluvatar BI-V150") == "iluvatar.ai/gpu"
    assert resource_name("metax", "MetaX C500") == "metax-tech.com/gpu"
    assert resource_name("mthreads", "MTT S80") == "mthreads.com/gpu"
    assert resource_name("kunlunxin", "Kunlunxin P800 OAM") == "kunlunxin.com/xpu"
    for entries in DEVICE_RESOURCES.values():
        for _prefix, name, source in entries:
            assert "/" in name and source.startswith("https://")
    with pytest.raises(UsageError) as exc:
        resource_name("hygon", "Hygon K100_AI")
    assert "--k8s-resource hygon=NAME" in exc.value.one_line()
    overrides = parse_resource_overrides(["hygon=hygon.com/dcu"])
    assert resource_name("hygon", "Hygon K100_AI", overrides) == "hygon.com/dcu"
    with pytest.raises(UsageError):
        parse_resource_overrides(["hygon"])


def test_reruns_are_byte_identical_and_rewrite_nothing(two_ascend, catalog, tmp_path):
    p1 = _plan(two_ascend, ["deepseek-v3"], catalog)
    p2 = _plan(two_ascend, ["deepseek-v3"], catalog)
    first, second = export_k8s(p1, catalog), export_k8s(p2, catalog)
    assert first == second
    out = tmp_path / "k8s"
    write_export(first, out)
    target = out / "llm-deepseek-v3.yaml"
    before = (target.read_bytes(), target.stat().st_mtime_ns)
    write_export(second, out)
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before
    assert sorted(os.listdir(out)) == [MARKER, "llm-deepseek-v3.yaml"]


def test_a_new_export_replaces_an_earlier_one_and_refuses_a_foreign_directory(two_ascend, catalog, tmp_path):
    out = tmp_path / "k8s"
    write_export(export_k8s(_plan(two_ascend, ["deepseek-v3"], catalog), catalog), out)
    write_export(export_k8s(_plan(two_ascend, None, catalog), catalog), out)  # the old model's file goes
    assert sorted(os.listdir(out)) == [MARKER, "embed-bge-m3.yaml", "llm-qwen3-32b.yaml"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me\n")
    with pytest.raises(UsageError) as exc:
        write_export({"a.yaml": "x: 1\n"}, foreign)
    assert str(foreign) in exc.value.one_line() and "fix:" in exc.value.one_line()
    assert os.listdir(foreign) == ["notes.txt"]


def test_cli_export_keeps_the_plan_json_and_lists_the_files_on_stderr(two_h100, tmp_path):
    out = tmp_path / "k8s"
    plain = run_cli("plan", "--inventory", str(two_h100), "--models", "deepseek-v3", "--json")
    res = run_cli("plan", "--inventory", str(two_h100), "--models", "deepseek-v3", "--json", "--export", "k8s",
                  str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout == plain.stdout and json.loads(res.stdout)["format"] == "appliance.cluster-plan/1"
    assert f"wrote {out / 'llm-deepseek-v3.yaml'}" in res.stderr
    assert sorted(os.listdir(out)) == [MARKER, "llm-deepseek-v3.yaml"]
    refused = run_cli("plan", "--inventory", str(two_h100), "--models", "deepseek-v3", "--export", "k8s",
                      str(tmp_path))  # holds hosts.yml
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: --export: {tmp_path} is not empty")


def test_cli_export_without_inventory_is_one_line_exit_2(tmp_path):
    res = run_cli("plan", "--export", "k8s", str(tmp_path / "k8s"))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        "error: --export: --export writes the manifests of a cluster plan "
        "(fix: add --inventory FILE (the Ansible inventory of the nodes))"]
    assert not (tmp_path / "k8s").exists()
