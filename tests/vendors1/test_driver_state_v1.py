"""Layer b details (version files and their fallbacks) and the Ascend two-chips-per-function case.

Each case copies a node snapshot and changes the one file under test; the version-file
contents follow the vendors' documented formats.
"""

from __future__ import annotations

from v1support import NODES, copy_snapshot, remove_root_path, sample, set_tool_output, write_root_file

from appliance.inventory.detect import detect
from appliance.inventory.hostview import SnapshotHost
from chip_drivers import get_driver


def _state(snap, vendor):
    return get_driver(vendor).driver_state(SnapshotHost(snap))


def test_rocm_version_build_suffix_and_versioned_dir(tmp_path):
    snap = copy_snapshot("amd-mi300x-8gpu-epyc", tmp_path / "a")
    write_root_file(snap, "/opt/rocm/.info/version", "6.2.4-120\n")
    rt = _state(snap, "amd").runtime
    assert (rt.name, rt.version, rt.source) == ("rocm", "6.2.4", "/opt/rocm/.info/version")
    remove_root_path(snap, "/opt/rocm")
    write_root_file(snap, "/opt/rocm-6.3.1/bin/.keep", "")
    write_root_file(snap, "/opt/rocm-6.10.0/bin/.keep", "")
    rt = _state(snap, "amd").runtime
    assert (rt.version, rt.source) == ("6.10.0", "/opt/rocm-6.10.0")     # numeric, not string, order


def test_amd_in_tree_driver_reports_kernel_release(tmp_path):
    snap = copy_snapshot("amd-mi300x-8gpu-epyc", tmp_path / "a")
    remove_root_path(snap, "/sys/module/amdgpu/version")
    state = _state(snap, "amd")
    assert state.driver_loaded and state.driver_version == "5.15.0-122-generic"
    assert state.driver_version_source == "in-tree amdgpu (kernel release)"
    assert "/dev/kfd" in state.dev_nodes and "/dev/dri/renderD128" in state.dev_nodes


def test_dtk_version_fallbacks(tmp_path):
    snap = copy_snapshot("hygon-k100ai-8dcu", tmp_path / "h")
    remove_root_path(snap, "/opt/dtk/.info/version")
    write_root_file(snap, "/opt/dtk/.info/rocm_version", "25.04.4\n")
    rt = _state(snap, "hygon").runtime
    assert (rt.name, rt.version, rt.source) == ("dtk", "25.04.4", "/opt/dtk/.info/rocm_version")
    remove_root_path(snap, "/opt/dtk")
    write_root_file(snap, "/opt/dtk-24.04.3/.keep", "")
    assert _state(snap, "hygon").runtime.version == "24.04.3"
    state = _state(snap, "hygon")
    assert {"/dev/kfd", "/dev/mkfd"} <= set(state.dev_nodes)


def test_hygon_does_not_take_an_amd_box(tmp_path):
    state = _state(NODES / "amd-mi300x-8gpu-epyc", "hygon")
    assert state.dev_nodes == [] and state.runtime is None


def test_cann_versioned_dir_and_missing(tmp_path):
    snap = copy_snapshot("ascend-310p-2npu", tmp_path / "p")
    remove_root_path(snap, "/usr/local/Ascend/cann")
    write_root_file(snap, "/usr/local/Ascend/cann-8.3.RC1/x86_64-linux/ascend_toolkit_install.info",
                    "package_name=Ascend-cann-toolkit\nversion=8.3.RC1\narch=x86_64\n")
    rt = _state(snap, "ascend").runtime
    assert (rt.version, rt.source) == (
        "8.3.RC1", "/usr/local/Ascend/cann-8.3.RC1/x86_64-linux/ascend_toolkit_install.info")
    remove_root_path(snap, "/usr/local/Ascend/cann-8.3.RC1")
    assert _state(snap, "ascend").runtime is None


def test_ascend_dev_nodes_by_physical_number():
    state = _state(NODES / "ascend-910b-8npu", "ascend")
    assert state.dev_nodes == [f"/dev/davinci{i}" for i in range(8)] + [
        "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    assert state.driver_loaded and state.driver_version == "25.5.1"


def test_ascend_npu_smi_banner_gives_driver_when_version_file_missing(tmp_path):
    snap = copy_snapshot("ascend-910b-8npu", tmp_path / "a")
    remove_root_path(snap, "/usr/local/Ascend/driver/version.info")
    inv = detect(snapshot=snap, usage=False)
    assert {(a.driver_version, a.sources["driver_version"]) for a in inv.accelerators} == {("25.5.1", "npu-smi info")}


def test_ascend_two_chips_behind_one_function(tmp_path):
    """Atlas 300I Duo: two 310P3 chips behind one PCI function (the real gpustack-runtime 310P3
    capture reports both chips at 0000:81:00.0). Listing in the real 310P3 npu-smi layout."""
    snap = copy_snapshot("ascend-310p-2npu", tmp_path / "d")
    for bdf in ("0000:82:00.0", "0000:89:00.0"):
        remove_root_path(snap, f"/sys/bus/pci/devices/{bdf}")
    base = "/sys/bus/pci/devices/0000:81:00.0"
    for key, value in (("vendor", "0x19e5"), ("device", "0xd500"), ("class", "0x120000"),
                       ("subsystem_vendor", "0x0200"), ("subsystem_device", "0x0110"), ("numa_node", "2")):
        write_root_file(snap, f"{base}/{key}", value + "\n")
    real = sample("npu-smi_info_310P3_2card.txt").splitlines()
    duo = real[:4] + [
        "| 4       310P3     | OK              | 15.8         47                0    / 0              |",
        "| 0       0         | 0000:81:00.0    | 0            41731/ 44280                            |",
        real[6],
        "| 4       310P3     | OK              | 15.8         45                0    / 0              |",
        "| 1       1         | 0000:81:00.0    | 0            1507 / 43693                            |",
        real[9]]
    set_tool_output(snap, ["npu-smi", "info"], "\n".join(duo) + "\n")
    set_tool_output(snap, ["npu-smi", "info", "-m"], None)
    inv = detect(snapshot=snap)
    a, b = inv.accelerators
    assert (a.pci_bdf, b.pci_bdf) == ("0000:81:00.0", "0000:81:00.0")
    assert (a.index, b.index, a.physical_id, b.physical_id) == (0, 1, 0, 1)
    assert (a.memory_mib, b.memory_mib) == (44280, 43693)
    assert a.pci_subsystem_id == "0200:0110" and a.model == b.model == "Ascend 310P3"
    assert (a.dev_nodes, b.dev_nodes) == (["/dev/davinci0"], ["/dev/davinci1"])
    assert a.usage.memory_used_mib == 41731 and b.usage.temperature_c == 45.0
