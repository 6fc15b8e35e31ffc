"""container_access() of the Ascend, AMD, Hygon, Gaudi and Kunlunxin drivers, on detected devices.

Devices come from the real detection of the node snapshots; the assertions check exactly which
device nodes, environment, mounts, groups and runtime a container gets for a chosen subset.
"""

from __future__ import annotations

import pytest
from v1support import NODES

from appliance.inventory.detect import detect
from chip_drivers import get_driver


def _detected(name: str):
    return detect(snapshot=NODES / name, usage=False).accelerators


def _pick(accs, *indices):
    return [a for a in accs if a.index in indices]


def _never_privileged(access) -> None:
    # ContainerAccess has no privileged switch; nothing else may smuggle it in either.
    assert "privileged" not in {k.lower() for k in access.env}
    assert not any(c.upper() in ("ALL", "SYS_ADMIN") for c in access.cap_add)
    for spec in access.devices:
        host, container, perms = spec.split(":")
        assert host.startswith("/dev/") and host == container and perms == "rwm"


def test_ascend_910b_subset():
    accs = _detected("ascend-910b-8npu")
    access = get_driver("ascend").container_access(_pick(accs, 2, 5))
    assert access.devices == ["/dev/davinci2:/dev/davinci2:rwm", "/dev/davinci5:/dev/davinci5:rwm",
                              "/dev/davinci_manager:/dev/davinci_manager:rwm",
                              "/dev/devmm_svm:/dev/devmm_svm:rwm", "/dev/hisi_hdc:/dev/hisi_hdc:rwm"]
    assert access.env == {"ASCEND_VISIBLE_DEVICES": "2,5"}
    assert access.volumes == {p: p for p in ("/usr/local/dcmi", "/usr/local/bin/npu-smi",
                                             "/usr/local/Ascend/driver/lib64",
                                             "/usr/local/Ascend/driver/version.info", "/etc/ascend_install.info")}
    assert access.runtime is None and access.device_requests == []
    _never_privileged(access)


def test_ascend_uses_physical_not_logic_ids():
    accs = _detected("ascend-310p-2npu")
    acc = _pick(accs, 1)[0].model_copy(update={"physical_id": 4})   # e.g. a host whose davinci ids skip
    access = get_driver("ascend").container_access([acc])
    assert access.devices[0] == "/dev/davinci4:/dev/davinci4:rwm"
    assert access.env["ASCEND_VISIBLE_DEVICES"] == "4"


def test_amd_per_gpu_render_nodes():
    accs = _detected("amd-mi300x-8gpu-epyc")
    access = get_driver("amd").container_access(_pick(accs, 1, 2))
    assert access.devices == ["/dev/kfd:/dev/kfd:rwm",
                              "/dev/dri/card9:/dev/dri/card9:rwm", "/dev/dri/renderD136:/dev/dri/renderD136:rwm",
                              "/dev/dri/card17:/dev/dri/card17:rwm", "/dev/dri/renderD144:/dev/dri/renderD144:rwm"]
    assert access.env == {} and access.group_add == ["video"]
    assert "/dev/dri/card0:/dev/dri/card0:rwm" not in access.devices      # the BMC's VGA
    _never_privileged(access)


def test_amd_without_drm_nodes_falls_back_to_hip_visible_devices():
    accs = [a.model_copy(update={"dev_nodes": []}) for a in _pick(_detected("amd-mi300x-8gpu-epyc"), 3, 6)]
    access = get_driver("amd").container_access(accs)
    assert access.devices == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]
    assert access.env == {"HIP_VISIBLE_DEVICES": "3,6"}


def test_hygon():
    accs = _detected("hygon-k100ai-8dcu")
    access = get_driver("hygon").container_access(_pick(accs, 0, 3))
    assert access.devices == ["/dev/kfd:/dev/kfd:rwm", "/dev/mkfd:/dev/mkfd:rwm", "/dev/dri:/dev/dri:rwm"]
    assert access.env == {"HIP_VISIBLE_DEVICES": "0,3"}
    assert access.volumes == {"/opt/hyhal": "/opt/hyhal"} and access.group_add == ["video"]
    _never_privileged(access)


def test_gaudi_modules_runtime_caps():
    accs = _detected("gaudi2-8hpu")
    access = get_driver("gaudi").container_access(_pick(accs, 0, 6))
    assert access.runtime == "habana" and access.cap_add == ["SYS_NICE"] and access.ipc_mode == "host"
    assert access.env == {"HABANA_VISIBLE_MODULES": "5,0", "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
    assert access.devices == ["/dev/accel/accel0:/dev/accel/accel0:rwm",
                              "/dev/accel/accel_controlD0:/dev/accel/accel_controlD0:rwm",
                              "/dev/accel/accel6:/dev/accel/accel6:rwm",
                              "/dev/accel/accel_controlD6:/dev/accel/accel_controlD6:rwm"]
    _never_privileged(access)


def test_gaudi_without_module_ids_uses_indices():
    accs = [a.model_copy(update={"physical_id": None}) for a in _pick(_detected("gaudi2-8hpu"), 1, 2)]
    env = get_driver("gaudi").container_access(accs).env
    assert env["HABANA_VISIBLE_DEVICES"] == "1,2" and "HABANA_VISIBLE_MODULES" not in env


def test_kunlunxin():
    accs = _detected("kunlunxin-p800-8xpu")
    access = get_driver("kunlunxin").container_access(_pick(accs, 4, 7))
    assert access.devices == ["/dev/xpu4:/dev/xpu4:rwm", "/dev/xpu7:/dev/xpu7:rwm", "/dev/xpuctrl:/dev/xpuctrl:rwm"]
    assert access.env == {"XPU_VISIBLE_DEVICES": "4,7"}
    assert access.runtime is None
    _never_privileged(access)


@pytest.mark.parametrize("vendor, name", [("ascend", "ascend-910b-8npu"), ("amd", "amd-mi300x-8gpu-epyc"),
                                          ("hygon", "hygon-k100ai-8dcu"), ("gaudi", "gaudi2-8hpu"),
                                          ("kunlunxin", "kunlunxin-p800-8xpu")])
def test_docker_sdk_accepts_the_settings(vendor, name):
    """The settings map onto the Docker SDK's container config without error (no daemon call)."""
    from docker.types import ContainerConfig, HostConfig

    access = get_driver(vendor).container_access(_detected(name))
    host_config = HostConfig(version="1.43", devices=access.devices, group_add=access.group_add or None,
                             runtime=access.runtime, cap_add=access.cap_add or None, ipc_mode=access.ipc_mode,
                             binds={h: {"bind": c, "mode": "ro"} for h, c in access.volumes.items()})
    config = ContainerConfig("1.43", "busybox", None, environment=access.env, host_config=host_config)
    assert len(host_config["Devices"]) == len(access.devices)
    assert all(d["PathOnHost"] == d["PathInContainer"] for d in host_config["Devices"])
    assert set(config["Env"]) == {f"{k}={v}" for k, v in access.env.items()}
    assert not host_config.get("Privileged")
