"""container_access() for Cambricon, MetaX, Moore Threads and Iluvatar (chips.md §3).

Devices come from real detection of the snapshots, so the test covers the path the runtime
uses: inventory -> chosen accelerators -> Docker settings. Never privileged, never all of
/dev, only the chosen devices' nodes.
"""

from __future__ import annotations

from v2support import NODES

from appliance.inventory.detect import detect
from chip_drivers import get_driver


def _accs(name: str):
    return detect(snapshot=NODES / name, usage=False).accelerators


def _assert_never_privileged(access):
    assert not any(d.split(":")[0] in ("/dev", "/dev/") for d in access.devices)
    assert access.cap_add == []
    assert access.device_requests == []
    assert all(d.endswith(":rwm") and d.split(":")[0] == d.split(":")[1] for d in access.devices)


def test_cambricon_subset():
    accs = _accs("cambricon-mlu370-8")
    access = get_driver("cambricon").container_access([accs[2], accs[5]])
    assert access.devices == [
        "/dev/cambricon_ctl:/dev/cambricon_ctl:rwm",
        "/dev/cambricon_dev2:/dev/cambricon_dev2:rwm",
        "/dev/cambricon_dev5:/dev/cambricon_dev5:rwm",
        "/dev/cambricon_ipcm2:/dev/cambricon_ipcm2:rwm",
        "/dev/cambricon_ipcm5:/dev/cambricon_ipcm5:rwm",
    ]
    assert access.env == {"MLU_VISIBLE_DEVICES": "0,1", "NEUWARE_HOME": "/usr/local/neuware"}
    assert access.runtime is None and access.volumes == {} and access.group_add == []
    _assert_never_privileged(access)


def test_cambricon_all_eight():
    access = get_driver("cambricon").container_access(_accs("cambricon-mlu370-8"))
    assert len(access.devices) == 1 + 8 + 8
    assert access.env["MLU_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"


def test_metax_one_gpu_gets_only_its_drm_nodes():
    accs = _accs("metax-c500-2")
    access = get_driver("metax").container_access([accs[1]])
    assert access.devices == [
        "/dev/mxcd:/dev/mxcd:rwm",
        "/dev/dri/card2:/dev/dri/card2:rwm",
        "/dev/dri/renderD129:/dev/dri/renderD129:rwm",
    ]
    assert "/dev/dri/card0:/dev/dri/card0:rwm" not in access.devices  # the BMC's DRM node
    assert access.group_add == ["video"]
    assert access.volumes == {"/opt/mxdriver": "/opt/mxdriver", "/opt/maca": "/opt/maca"}
    assert access.env == {"CUDA_VISIBLE_DEVICES": "0"}
    _assert_never_privileged(access)


def test_metax_unknown_drm_nodes_fall_back_to_dri_dir():
    accs = _accs("metax-c500-2")
    bare = [a.model_copy(update={"dev_nodes": []}) for a in accs]
    access = get_driver("metax").container_access(bare)
    assert access.devices == ["/dev/mxcd:/dev/mxcd:rwm", "/dev/dri:/dev/dri:rwm"]
    assert access.env == {"CUDA_VISIBLE_DEVICES": "0,1"}


def test_mthreads_s80():
    access = get_driver("mthreads").container_access(_accs("mthreads-s80-1"))
    assert access.devices == [
        "/dev/mtgpu.0:/dev/mtgpu.0:rwm",
        "/dev/dri/card1:/dev/dri/card1:rwm",
        "/dev/dri/renderD129:/dev/dri/renderD129:rwm",
    ]
    assert access.env == {"MTHREADS_VISIBLE_DEVICES": "0", "MTHREADS_DRIVER_CAPABILITIES": "compute,utility",
                          "MUSA_VISIBLE_DEVICES": "0"}
    assert "METHERDS_VISIBLE_DEVICES" not in access.env  # the peer's misspelling
    assert access.group_add == ["video"]
    _assert_never_privileged(access)


def test_iluvatar_second_gpu_only():
    accs = _accs("iluvatar-bi-v150-2")
    access = get_driver("iluvatar").container_access([accs[1]])
    assert access.devices == [
        "/dev/iluvatar1:/dev/iluvatar1:rwm",
        "/dev/itrctl:/dev/itrctl:rwm",
        "/dev/itrlink:/dev/itrlink:rwm",
    ]
    assert access.env == {"IX_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "0"}
    assert access.runtime is None
    _assert_never_privileged(access)


def test_conventional_nodes_when_inventory_has_none():
    """A plan made from an inventory without /dev information still names the right nodes."""
    accs = _accs("iluvatar-bi-v150-2")
    bare = [a.model_copy(update={"dev_nodes": []}) for a in accs]
    access = get_driver("iluvatar").container_access(bare)
    assert access.devices == ["/dev/iluvatar0:/dev/iluvatar0:rwm", "/dev/iluvatar1:/dev/iluvatar1:rwm",
                              "/dev/itrctl:/dev/itrctl:rwm"]
    cam = [a.model_copy(update={"dev_nodes": []}) for a in _accs("cambricon-mlu370-8")[:1]]
    assert get_driver("cambricon").container_access(cam).devices == [
        "/dev/cambricon_ctl:/dev/cambricon_ctl:rwm", "/dev/cambricon_dev0:/dev/cambricon_dev0:rwm",
        "/dev/cambricon_ipcm0:/dev/cambricon_ipcm0:rwm"]
    mt = [a.model_copy(update={"dev_nodes": []}) for a in _accs("mthreads-s80-1")]
    assert get_driver("mthreads").container_access(mt).devices == [
        "/dev/mtgpu.0:/dev/mtgpu.0:rwm", "/dev/dri:/dev/dri:rwm"]
