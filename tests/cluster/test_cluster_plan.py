"""Plans across nodes from real node snapshots: placement policies, a model across nodes with
the launcher arguments the engines document, rejections with numbers, preflight between nodes."""

from __future__ import annotations

import json

import pytest

from appliance.catalog import load_catalog
from appliance.cluster.gather import known_facts
from appliance.cluster.hosts import load_inventory
from appliance.cluster.planner import plan_cluster
from appliance.errors import NoFitError
from tests.cluster.conftest import ASCEND8, H100X8, snapshot_copy, write_inventory
from tests.stack_support import run_cli


def _plan(inventory, models, **kw):
    cluster = load_inventory(inventory)
    return plan_cluster(cluster, known_facts(cluster), load_catalog(), models, **kw)


def test_deepseek_v3_spans_two_ascend_nodes_with_vllm_ascend_on_ray(two_ascend):
    p = _plan(two_ascend, ["deepseek-v3"])
    [pl] = p.placements
    assert (pl.engine, pl.precision, pl.mode, pl.nodes) == ("vllm-ascend", "w8a8", "ray-pipeline", ["npu1", "npu2"])
    # vllm-ascend tutorials/multi_node (DeepSeek): tensor parallel = the NPUs of one node, pipeline
    # parallel = the nodes; `ray start --head --num-gpus=8` on the head, `ray start
    # --address='HEAD:6379' --num-gpus=8 --node-ip-address=LOCAL` on the workers; HCCL_IF_IP and
    # RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES=1 on every node; then `vllm serve` on the head.
    assert (pl.tensor_parallel, pl.pipeline_parallel, pl.devices_per_node) == (8, 2, 8)
    head, worker = pl.parts
    assert head.role == "head" and head.node == "npu1" and len(head.devices) == 8
    assert head.runtime_command == ["ray", "start", "--head", "--port=6379", "--node-ip-address=10.0.0.1",
                                    "--num-gpus=8"]
    cmd = head.command
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "8" and cmd[cmd.index("--pipeline-parallel-size") + 1] == "2"
    assert cmd[cmd.index("--distributed-executor-backend") + 1] == "ray"
    assert cmd[cmd.index("--quantization") + 1] == "ascend" and "--trust-remote-code" in cmd
    assert head.env["HCCL_IF_IP"] == "10.0.0.1" and head.env["RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"] == "1"
    assert worker.role == "worker" and worker.command == []
    assert worker.runtime_command == ["ray", "start", "--address=10.0.0.1:6379", "--node-ip-address=10.0.0.2",
                                      "--num-gpus=8", "--block"]
    assert worker.env["HCCL_IF_IP"] == "10.0.0.2"
    assert pl.ports_between_nodes == {"ray": 6379}
    # the memory split: weights over 16 NPUs, each stage the KV cache of its own layers
    assert pl.memory.weights_mib * 16 >= 640_000 and pl.memory_mib_per_device <= pl.memory.usable_mib
    assert [n.devices_used for n in p.nodes] == [8, 8]


def test_deepseek_v3_spans_two_h100_nodes_at_fp8_rather_than_int4_on_one(two_h100):
    p = _plan(two_h100, ["deepseek-v3"])
    [pl] = p.placements
    # vLLM docs/serving/parallelism_scaling.md: "set tensor_parallel_size=8 and
    # pipeline_parallel_size=2 when using 2 nodes with 8 GPUs per node"; multi-node-serving.sh:
    # `ray start --head --port=6379`, workers `ray start --address=HEAD:6379`.
    assert (pl.engine, pl.precision, pl.tensor_parallel, pl.pipeline_parallel) == ("vllm-cuda", "fp8", 8, 2)
    head, worker = pl.parts
    assert head.entrypoint == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert head.command[-4:] == ["--pipeline-parallel-size", "2", "--distributed-executor-backend", "ray"]
    assert worker.runtime_command[:3] == ["ray", "start", "--address=10.1.0.1:6379"]
    assert any("serves it at awq-int4 only; spanning nodes serves fp8" in line for line in p.explain)
    assert not [f for f in p.preflight if f.severity == "error"]  # a ConnectX-7 beside every GPU


def test_sglang_across_nodes_gets_total_tp_nnodes_node_rank_and_the_heads_address(two_h100):
    p = _plan(two_h100, ["deepseek-v3"], profile="throughput")
    cat = load_catalog()
    from appliance.cluster import multinode
    from appliance.cluster.gather import known_facts as facts_of
    from appliance.planner.core import node_context

    cluster = load_inventory(two_h100)
    facts = facts_of(cluster)
    ctx = node_context(facts["gpu1"], cat, "default", ["deepseek-v3"])
    group = next(g for g in ctx.groups if not g.is_cpu)
    found, _ = multinode.candidates("deepseek-v3", ctx, group, 2, cat)
    sg = next(s for s in found if s.candidate.engine == "sglang-cuda")
    pl = multinode.placement(sg, cluster.nodes, [group, group], cat, 8100, __import__("pathlib").Path("/m"))
    # docs.sglang.io multi_node_deployment: `--tp 16 --dist-init-addr HEAD:20000 --nnodes 2
    # --node-rank 0|1`, the same launch_server on both nodes.
    for rank, part in enumerate(pl.parts):
        c = part.command
        assert part.entrypoint == ["python3", "-m", "sglang.launch_server"]
        assert c[c.index("--tp-size") + 1] == "16"
        assert c[c.index("--dist-init-addr") + 1] == "10.1.0.1:20000"
        assert c[c.index("--nnodes") + 1] == "2" and c[c.index("--node-rank") + 1] == str(rank)
    assert pl.ports_between_nodes == {"dist-init": 20000} and p.placements  # the throughput plan exists too


def test_one_node_cannot_hold_deepseek_v3_and_says_so_with_numbers(tmp_path):
    inv = write_inventory(tmp_path / "one.yml", {"npu1": {"appliance_snapshot": str(ASCEND8)}})
    with pytest.raises(NoFitError) as err:
        _plan(inv, ["deepseek-v3"])
    rejected = err.value.plan.rejected
    node = [r.reason for r in rejected if r.code == "node"]
    assert node and node[0].startswith("npu1: deepseek-v3 fits nowhere on this node")
    assert "MiB per device >" in node[0]
    assert any(r.code == "nodes" and "at least 2 free nodes" in r.reason for r in rejected)


def test_binpack_fills_one_node_and_spread_uses_both(two_ascend):
    models = ["qwen2.5-7b-instruct", "bge-m3"]
    packed = {p.model: p.nodes for p in _plan(two_ascend, models, policy="binpack").placements}
    spread = {p.model: p.nodes for p in _plan(two_ascend, models, policy="spread").placements}
    assert packed == {"qwen2.5-7b-instruct": ["npu1"], "bge-m3": ["npu1"]}
    assert sorted(n for nodes in spread.values() for n in nodes) == ["npu1", "npu2"]


def test_reruns_are_byte_identical(two_ascend, tmp_path):
    args = ["plan", "--inventory", str(two_ascend), "--models", "deepseek-v3", "--json"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert json.loads(first.stdout)["format"] == "appliance.cluster-plan/1"


def test_preflight_names_a_driver_mismatch_and_a_node_without_rdma(tmp_path):
    other = snapshot_copy(tmp_path, ASCEND8, "ascend-older-driver")
    info = other / "root" / "usr" / "local" / "Ascend" / "driver" / "version.info"
    info.write_text(info.read_text().replace("Version=25.5.1", "Version=25.2.0"))
    inv = write_inventory(tmp_path / "mixed.yml", {
        "npu1": {"ansible_host": "10.0.0.1", "appliance_snapshot": str(ASCEND8)},
        "npu2": {"ansible_host": "10.0.0.2", "appliance_snapshot": str(other)}})
    # different drivers: NCCL/HCCL need the same on every node, so DeepSeek-V3 cannot span them
    with pytest.raises(NoFitError) as err:
        _plan(inv, ["deepseek-v3"])
    reasons = [r.reason for r in err.value.plan.rejected if r.code == "nodes"]
    assert "needs at least 2 free nodes with the same accelerators and driver (8 x Ascend 910B3, driver 25.5.1); " \
           "1 such" in reasons[0], reasons

    bare = snapshot_copy(tmp_path, H100X8, "h100-no-nics")
    for dev in (bare / "root" / "sys" / "bus" / "pci" / "devices").iterdir():
        if (dev / "vendor").read_text().strip() == "0x15b3":
            import shutil

            shutil.rmtree(dev) if dev.is_dir() and not dev.is_symlink() else dev.unlink()
    inv = write_inventory(tmp_path / "nonics.yml", {
        "gpu1": {"ansible_host": "10.1.0.1", "appliance_snapshot": str(H100X8)},
        "gpu2": {"ansible_host": "10.1.0.2", "appliance_snapshot": str(bare)}})
    p = _plan(inv, ["deepseek-v3"])
    rdma = [f for f in p.preflight if f.rule == "rdma"]
    assert [(f.severity, f.subject) for f in rdma] == [("error", "gpu2")]
    assert "no RDMA/RoCE NIC" in rdma[0].message


def test_the_cli_explains_and_refuses_bad_input_with_one_line(two_ascend, tmp_path):
    res = run_cli("plan", "--inventory", str(two_ascend), "--models", "deepseek-v3", "--explain")
    assert res.returncode == 0, res.stderr
    assert "tp8 x pp2 (ray-pipeline)" in res.stdout and "ray start --address=10.0.0.1:6379" in res.stdout
    missing = run_cli("plan", "--inventory", str(tmp_path / "nope.yml"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr
    broken = tmp_path / "broken.ini"
    broken.write_text("[head\nbox1\n")
    res = run_cli("plan", "--inventory", str(broken))
    assert res.returncode == 2 and "Ansible cannot read the inventory" in res.stderr and "Traceback" not in res.stderr
    two_heads = write_inventory(tmp_path / "heads.yml", {
        "a": {"appliance_head": True, "appliance_snapshot": str(ASCEND8)},
        "b": {"appliance_head": True, "appliance_snapshot": str(ASCEND8)}})
    res = run_cli("plan", "--inventory", str(two_heads))
    assert res.returncode == 2 and "more than one head: a, b" in res.stderr
    live = write_inventory(tmp_path / "live.yml", {"far-away": {"ansible_host": "10.9.9.9"}})
    res = run_cli("plan", "--inventory", str(live))
    assert res.returncode == 2 and "run `appliance cluster detect --inventory" in res.stderr
