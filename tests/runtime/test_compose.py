"""Stack composition from real plans (the planner on the CPU-only, NVIDIA and Ascend snapshots).

No Docker: composition is a pure function, so what would be created is checked here and
the created containers are checked against the engine in test_snapshot_create.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from appliance.catalog import load_catalog
from appliance.inventory.detect import detect
from appliance.planner import plan as make_plan
from appliance.runtime.compose import compose
from appliance.runtime.models import Settings
from tests.stack_support import templated_catalog
from tests.support import H200

REPO = Path(__file__).resolve().parents[2]
ASCEND = REPO / "tests" / "fixtures" / "nodes" / "ascend-910b-8npu"
CPU = REPO / "tests" / "fixtures" / "nodes" / "cpu-only"


def _stack(snapshot: Path, demo: bool = False, settings: Settings | None = None, instance: str = "unit"):
    """``demo``: the templated test stack (its catalog overlay, demo-chat + demo-embed)."""
    inv = detect(snapshot=str(snapshot), usage=False)
    cat = templated_catalog() if demo else load_catalog()
    plan = make_plan(inv, cat, models=["demo-chat", "demo-embed"] if demo else None, demo=demo)
    return plan, compose(plan, catalog=cat, inventory=inv, settings=settings, instance=instance)


def test_demo_stack_has_engines_gateway_and_apps():
    plan, stack = _stack(CPU, demo=True)
    kinds = {s.name: s.kind for s in stack.services}
    assert [s.name for s in plan.services] == [n for n, k in kinds.items() if k == "inference"]
    assert kinds["gateway"] == "gateway"
    assert sorted(n for n, k in kinds.items() if k == "app") == sorted(a.name for a in plan.apps)
    assert stack.apps == sorted(a.name for a in plan.apps)
    # routes: every served model -> its service's address on the stack network
    for ps in plan.services:
        assert stack.routes["models"][ps.served_model_name]["upstream"] == f"http://{ps.name}:{ps.port}"
    # only the gateway and the apps publish host ports, on 127.0.0.1 by default
    published = {s.name: (s.host_ip, s.host_port) for s in stack.services if s.host_port}
    assert published["gateway"] == ("127.0.0.1", 8080)
    assert all(s.host_port is None for s in stack.services if s.kind == "inference")
    # our own images are hardened and built locally
    for s in stack.services:
        assert s.build and s.hardened and s.demo
    # start order: engines, then the gateway, then the apps
    order = stack.start_order()
    assert set(order[0]) == {ps.name for ps in plan.services}
    assert order[1] == ["gateway"]
    assert set(order[2]) == set(stack.apps)


def test_apps_get_key_file_gateway_and_models_not_secrets():
    plan, stack = _stack(CPU, demo=True, settings=Settings(gateway_port=9000, app_port_base=9100))
    kb = stack.service("knowledge-base")
    assert kb.env["GATEWAY_URL"] == "http://gateway:8080/v1"
    assert kb.env["GATEWAY_PUBLIC_URL"] == "http://127.0.0.1:9000/v1"
    assert kb.env["CHAT_MODEL"] == "demo-chat" and kb.env["EMBED_MODEL"] == "demo-embed"
    assert not any("apk_" in v for v in kb.env.values())
    secrets = [b for b in kb.binds if b.target == "/run/appliance"]
    assert len(secrets) == 1 and secrets[0].read_only and secrets[0].source.endswith("apps/knowledge-base/secrets")
    data = [b for b in kb.binds if b.volume]
    assert data and data[0].source == "appliance-unit-knowledge-base-data" and not data[0].read_only
    ports = sorted(s.host_port for s in stack.services if s.kind == "app")
    assert ports == [9100, 9101, 9102]


def test_composition_is_deterministic():
    _, a = _stack(CPU, demo=True)
    _, b = _stack(CPU, demo=True)
    assert a.model_dump_json() == b.model_dump_json()
    assert a.stack_hash() == b.stack_hash()


def test_changed_service_changes_only_its_hash():
    plan, stack = _stack(CPU, demo=True)
    changed = plan.model_copy(deep=True)
    changed.services[1].env["EXTRA"] = "1"
    cat = templated_catalog()
    other = compose(changed, catalog=cat, instance="unit")
    before = {s.name: s.spec_hash() for s in stack.services}
    after = {s.name: s.spec_hash() for s in other.services}
    assert [n for n in before if before[n] != after[n]] == [plan.services[1].name]


def test_nvidia_services_get_gpu_by_uuid_never_privileged():
    plan, stack = _stack(H200)
    uuid = "GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01"  # nvidia-smi -L in the snapshot
    for ps in plan.services:
        svc = stack.service(ps.name)
        assert svc.device_requests == [{"driver": "nvidia", "device_ids": [uuid], "capabilities": [["gpu"]]}]
        assert svc.env["NVIDIA_VISIBLE_DEVICES"] == uuid
        assert svc.devices == [] and svc.runtime is None
        weights = [b for b in svc.binds if b.source == ps.model_path]
        assert ps.model_path and len(weights) == 1 and weights[0].read_only


def test_ascend_services_get_davinci_nodes_and_driver_mounts():
    plan, stack = _stack(ASCEND)
    for ps in plan.services:
        svc = stack.service(ps.name)
        ids = [d.physical_id for d in ps.devices]
        nodes = {d.split(":")[0] for d in svc.devices}
        assert {f"/dev/davinci{i}" for i in ids} <= nodes
        assert {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= nodes
        assert not any(n.startswith("/dev/davinci") and n[12:].isdigit() and int(n[12:]) not in ids for n in nodes)
        assert svc.env["ASCEND_VISIBLE_DEVICES"] == ",".join(map(str, ids))
        mounts = {b.source: b for b in svc.binds}
        assert "/usr/local/Ascend/driver/lib64" in mounts and mounts["/usr/local/Ascend/driver/lib64"].read_only
        assert svc.device_requests == []


def test_a_planned_reranker_reaches_the_knowledge_base_app():
    """The knowledge base's optional rerank role: when the plan serves a reranker, the app's
    container is told which one (before, compose dropped it and the app never reranked)."""
    inv = detect(snapshot=str(H200), usage=False)
    cat = load_catalog()
    plan = make_plan(inv, cat, models=["qwen2.5-7b-instruct", "bge-m3", "bge-reranker-v2-m3"])
    kb_plan = next(a for a in plan.apps if a.name == "knowledge-base")
    assert set(kb_plan.models) == {"chat", "embedding", "rerank"}
    stack = compose(plan, catalog=cat, inventory=inv, instance="unit")
    kb = stack.service("knowledge-base")
    assert kb.env["RERANK_MODEL"] == kb_plan.models["rerank"]
    assert kb.env["EMBED_MODEL"] == kb_plan.models["embedding"] and kb.env["CHAT_MODEL"] == kb_plan.models["chat"]
    assert kb_plan.models["rerank"] in kb.served_models  # its key's scope covers the reranker too
    # apps that have no rerank role get no such variable
    assert "RERANK_MODEL" not in stack.service("customer-service").env


def test_app_wiring_comes_from_the_catalog():
    """Ports, health path, data volume and key rate come from apps.yaml, the one source of truth."""
    plan, stack = _stack(CPU, demo=True)
    cat = load_catalog()
    for name in stack.apps:
        svc, app = stack.service(name), cat.apps[name]
        assert svc.port == app.listen_port and svc.health.path == app.health and svc.host_port == app.port
        assert any(b.target == "/data" for b in svc.binds) == app.data_volume


def test_engines_are_on_the_internal_network_only_and_the_gateway_is_the_bridge():
    """Issue 14 item 2, as composed (no Docker): engines on the engine network alone, never a host
    port; the apps on the front network alone; the gateway on both. What Docker is told to create
    (converge.container_spec) says the same, with the engine network internal."""
    from appliance.runtime.converge import container_spec

    for snapshot, demo in ((CPU, True), (CPU, False), (H200, False), (ASCEND, False)):
        _, stack = _stack(snapshot, demo=demo)
        front, engines = "appliance-unit-net", "appliance-unit-engines"
        assert (stack.network, stack.engine_network) == (front, engines)
        assert stack.stack_networks() == {front: False, engines: True}
        for svc in stack.services:
            spec = container_spec(svc, stack.with_hashes(), 1)
            attached = [(n.name, n.internal) for n in spec.networks]
            if svc.kind == "inference":
                assert svc.networks == [engines] and attached == [(engines, True)]
                assert svc.host_port is None and spec.ports == {}
                assert all(n.aliases == [svc.name] for n in spec.networks)
            elif svc.kind == "gateway":
                assert svc.networks == [front, engines] and attached == [(front, False), (engines, True)]
                assert spec.ports == {"8080/tcp": ("127.0.0.1", 8080)}
            else:
                assert svc.kind == "app" and svc.networks == [front] and attached == [(front, False)]
        # the gateway reaches every engine by its name on the engine network
        for route in stack.routes["models"].values():
            assert stack.service(route["service"]).kind == "inference" and "key" not in json.dumps(route)


def test_an_engine_with_a_host_port_is_refused():
    import pytest

    from appliance.errors import RuntimeFailure

    plan, stack = _stack(CPU, demo=True)
    bad = stack.services[0].model_copy(update={"name": "llm-exposed", "host_port": 9999, "networks": None})
    with pytest.raises(RuntimeFailure, match="llm-exposed would publish a port"):
        compose(plan, catalog=templated_catalog(), instance="unit", extra_services=[bad])


def test_our_containers_run_as_their_own_accounts_read_only_and_bounded():
    """Issue 14 item 6, as composed: every container of our images (gateway, apps, our engines)
    runs as its role's non-root account, read-only, no-new-privileges, every capability
    dropped, pids and memory bounded; a vendor engine keeps its image's user (documented
    exception) but gets no-new-privileges too."""
    from appliance.runtime import pyrt
    from appliance.runtime.converge import container_spec

    accounts = {"gateway": pyrt.GATEWAY_UID, "app": pyrt.APP_UID, "inference": pyrt.ENGINE_UID}
    for snapshot, demo in ((CPU, True), (CPU, False), (H200, False)):
        _, stack = _stack(snapshot, demo=demo)
        for svc in stack.services:
            spec = container_spec(svc, stack.with_hashes(), 1)
            assert "no-new-privileges:true" in spec.security_opt
            if not svc.build:  # a vendor engine image (vLLM on the H200)
                assert svc.kind == "inference" and spec.user is None
                continue
            uid = accounts[svc.kind]
            assert spec.user == f"{uid}:{uid}" and uid not in (0, 65534)
            assert spec.read_only and spec.cap_drop == ["ALL"] and spec.cap_add == []
            assert spec.pids_limit and spec.memory_limit_mib, svc.name
    assert len(set(accounts.values())) == 3 and set(accounts.values()) <= set(pyrt.ACCOUNTS.values())
    assert all(f":{uid}:{uid}:" in pyrt._PASSWD for uid in pyrt.ACCOUNTS.values())


def test_engines_get_their_secret_as_a_file_never_in_the_spec():
    """Each engine service mounts its own secret directory read-only and is told where the file is
    -- as a flag (llama.cpp --api-key-file), an env var naming the file (the templated engine), or a
    start wrapper that reads the file (vLLM's VLLM_API_KEY); no secret in the spec, routes or env."""
    from appliance.runtime.compose import ENGINE_SECRETS_TARGET

    cases = {(CPU, True): "env", (CPU, False): "flag", (H200, False): "wrapper"}
    for (snapshot, demo), how in cases.items():
        _, stack = _stack(snapshot, demo=demo)
        for svc in (s for s in stack.services if s.kind == "inference"):
            (mount,) = [b for b in svc.binds if b.target == ENGINE_SECRETS_TARGET]
            assert mount.read_only and mount.source.endswith(f"/engines/{svc.name}/secrets")
            key_file = f"{ENGINE_SECRETS_TARGET}/api_key"
            if how == "env":
                assert svc.env["ENGINE_API_KEY_FILE"] == key_file
            elif how == "flag":
                assert svc.command[-2:] == ["--api-key-file", key_file]
            else:
                assert svc.entrypoint[:2] == ["/bin/sh", "-c"] and svc.entrypoint[3] == key_file
                assert 'export VLLM_API_KEY="$K"' in svc.entrypoint[2]
                assert svc.entrypoint[4:] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
                assert "VLLM_API_KEY" not in svc.env
        assert "upstream_keys" not in stack.model_dump_json()
