"""Device wiring on the real engine from node snapshots: create (never start) the stack.

``appliance init --snapshot DIR --create-only`` plans for the snapshot's node and creates
its containers without starting them: Docker checks device nodes and driver mounts only at
start, so the created containers' inspect data are exactly what the real node would run.
Engine images cannot be pulled here, so the test tags the local Python runtime image under
each engine reference first (and removes those tags afterwards).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.stack_support import REPO, purge_instance, run_cli
from tests.support import H200

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ASCEND = REPO / "tests" / "fixtures" / "nodes" / "ascend-910b-8npu"


def _plan(snapshot: Path):
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.planner import plan

    return plan(detect(snapshot=str(snapshot), usage=False), load_catalog())


@pytest.fixture
def stand_in_images():
    """Tag the pyrt image as each external engine image (only where absent); untag after."""
    from appliance.runtime import pyrt
    from appliance.runtime.docker_adapter import Docker
    from appliance.runtime.images import ImageEnsurer

    made: list[str] = []

    def provide(images: list[str]) -> None:
        with Docker() as d:
            base = ImageEnsurer(d).base_tag()
            for ref in sorted(set(images)):
                if d.image_labels(ref) is None:
                    repo, tag = ref.rsplit(":", 1)
                    d.client.api.tag(base, repo, tag)
                    made.append(ref)
        assert pyrt.REPOSITORY in base

    yield provide
    with Docker() as d:
        for ref in made:
            d.remove_image(ref)


def _create(snapshot: Path, tmp_path, stand_in_images):
    plan = _plan(snapshot)
    stand_in_images([s.image for s in plan.services if not s.build])
    inst = f"t{uuid.uuid4().hex[:10]}"
    env = {"APPLIANCE_INSTANCE": inst}  # same data dir as this process (model paths depend on it)
    res = run_cli("init", "--snapshot", str(snapshot), "--create-only", "--yes", "--json", env=env)
    return plan, inst, res


def _inspect(inst: str) -> dict[str, dict]:
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        return {c.service: d.inspect_container(c.id) for c in d.list_containers(L.instance_filter(inst))}


def _env(info: dict) -> dict[str, str]:
    """The container's own environment: everything set on it that the image does not set."""
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        image_env = d.client.api.inspect_image(info["Image"])["Config"].get("Env") or []
    return dict(e.split("=", 1) for e in info["Config"]["Env"] if e not in image_env)


def _expected_env(ps, vendor_env: dict[str, str]) -> dict[str, str]:
    return {**ps.env, **vendor_env, "PORT": str(ps.port), "SERVED_MODEL_NAME": ps.served_model_name,
            "MODEL_ROLE": ps.role}


def _common(plan, inst: str, res) -> dict[str, dict]:
    assert res.returncode == 0, res.stderr[-3000:]
    try:
        infos = _inspect(inst)
    except Exception:
        purge_instance(inst)
        raise
    assert set(infos) >= {s.name for s in plan.services} | {"gateway"}
    for name, info in infos.items():
        host = info["HostConfig"]
        assert info["State"]["Status"] == "created", name          # created, never started
        assert host["Privileged"] is False, name
        assert "no-new-privileges:true" in host["SecurityOpt"], name
    return infos


def _without_secret(info: dict, ps) -> dict:
    """``info`` without the engine's secret directory, after checking it is there, read-only
    (every engine here takes a key: vLLM and vllm-ascend)."""
    secret = [m for m in info["Mounts"] if m["Destination"] == "/run/appliance-engine"]
    assert len(secret) == 1 and secret[0]["RW"] is False and secret[0]["Source"].endswith(
        f"/engines/{ps.name}/secrets"), info["Mounts"]
    return {**info, "Mounts": [m for m in info["Mounts"] if m not in secret]}


def test_nvidia_snapshot_containers_get_the_gpu_by_uuid(tmp_path, stand_in_images):
    plan, inst, res = _create(H200, tmp_path, stand_in_images)
    try:
        infos = _common(plan, inst, res)
        uuid_ = "GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01"   # from the snapshot's nvidia-smi -L
        for ps in plan.services:
            info = infos[ps.name]
            host = info["HostConfig"]
            assert host["DeviceRequests"] == [{"Driver": "nvidia", "Count": 0, "DeviceIDs": [uuid_],
                                               "Capabilities": [["gpu"]], "Options": {}}]
            assert not host["Devices"]
            assert _env(info) == _expected_env(ps, {"NVIDIA_VISIBLE_DEVICES": uuid_,
                                                    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"})
            mounts = {m["Source"]: m for m in _without_secret(info, ps)["Mounts"]}
            assert set(mounts) == {ps.model_path}
            # the directory; the engine gets the file in it
            assert mounts[ps.model_path]["Destination"] == ps.model_path
            assert mounts[ps.model_path]["RW"] is False
            # vLLM started by the wrapper that reads its secret (appliance.planner.command.key_launch)
            entry = info["Config"]["Entrypoint"]
            assert entry[:2] == ["/bin/sh", "-c"] and entry[3] == "/run/appliance-engine/api_key"
            assert entry[4:] == ps.entrypoint and info["Config"]["Cmd"] == ps.command
            assert host["ShmSize"] == 8192 * 1024 * 1024 and host["Runtime"] == "runc"
        for name in ("gateway", *[a.name for a in plan.apps]):   # no devices outside the engines
            assert not infos[name]["HostConfig"]["DeviceRequests"] and not infos[name]["HostConfig"]["Devices"]
    finally:
        purge_instance(inst)


def test_ascend_snapshot_containers_get_davinci_nodes_and_driver_mounts(tmp_path, stand_in_images):
    assert ASCEND.is_dir(), "the Ascend 910B node snapshot is missing"
    plan, inst, res = _create(ASCEND, tmp_path, stand_in_images)
    try:
        infos = _common(plan, inst, res)
        driver_mounts = {"/usr/local/dcmi", "/usr/local/bin/npu-smi", "/usr/local/Ascend/driver/lib64",
                         "/usr/local/Ascend/driver/version.info", "/etc/ascend_install.info"}
        for ps in plan.services:
            info = infos[ps.name]
            host = info["HostConfig"]
            ids = [d.physical_id for d in ps.devices]
            expected = [f"/dev/davinci{i}" for i in ids] + ["/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
            assert [(d["PathOnHost"], d["PathInContainer"], d["CgroupPermissions"]) for d in host["Devices"]] == \
                [(p, p, "rwm") for p in expected]
            assert not host["DeviceRequests"]
            assert _env(info) == _expected_env(ps, {"ASCEND_VISIBLE_DEVICES": ",".join(map(str, ids))})
            mounts = {m["Source"]: m for m in _without_secret(info, ps)["Mounts"]}
            assert set(mounts) == driver_mounts | {ps.model_path}
            assert all(m["RW"] is False for m in mounts.values())
            assert host["Runtime"] == "runc"
    finally:
        purge_instance(inst)
