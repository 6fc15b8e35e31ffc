"""Detection of Ascend, AMD, Hygon, Gaudi and Kunlunxin nodes from their snapshots.

Each snapshot (tests/fixtures/nodes/<name>/README.md says what is real and what composed) is
detected through the real ``detect(snapshot=...)`` and the real CLI; variants are made by
copying a snapshot to a temp dir and changing one thing (tool absent, driver absent, no PCI
sysfs).
"""

from __future__ import annotations

import json

import pytest
from v1support import (
    NODES,
    ROCM_SMI_ARGV,
    VENDOR_SNAPSHOTS,
    accs_of,
    copy_snapshot,
    drop_vendor_tools,
    probe_of,
    remove_root_path,
    run_cli,
    write_root_file,
)

from appliance.inventory.detect import detect
from appliance.inventory.hostview import SnapshotHost
from chip_drivers import get_driver

CANN_CLASSIC = "/usr/local/Ascend/ascend-toolkit/latest/aarch64-linux/ascend_toolkit_install.info"
EXPECTED = {
    "ascend-910b-8npu": dict(
        vendor="ascend", backend="cann", model="Ascend 910B3", memory=65536, pci_id="19e5:d802",
        driver=("25.5.1", "/usr/local/Ascend/driver/version.info"), runtime=("cann", "8.5.0", CANN_CLASSIC),
        bdfs=["0000:c1:00.0", "0000:c2:00.0", "0000:81:00.0", "0000:82:00.0",
              "0000:01:00.0", "0000:02:00.0", "0000:41:00.0", "0000:42:00.0"],
        variant="910b", tool="npu-smi info", table_model="Ascend 910B", table_memory=65536,
        physical_ids=list(range(8))),
    "ascend-310p-2npu": dict(
        vendor="ascend", backend="cann", model="Ascend 310P3", memory=21534, pci_id="19e5:d500",
        driver=("25.2.0", "/usr/local/Ascend/driver/version.info"),
        runtime=("cann", "8.5.0", "/usr/local/Ascend/cann/x86_64-linux/ascend_toolkit_install.info"),
        bdfs=["0000:82:00.0", "0000:89:00.0"], variant="310p", tool="npu-smi info",
        table_model="Ascend 310P (Atlas 300I Pro)", table_memory=24576, physical_ids=[0, 1]),
    "amd-mi300x-8gpu-epyc": dict(
        vendor="amd", backend="rocm", model="AMD Instinct MI300X", memory=196608, pci_id="1002:74a1",
        driver=("6.10.5", "/sys/module/amdgpu/version"), runtime=("rocm", "7.0.2", "/opt/rocm/.info/version"),
        bdfs=["0000:05:00.0", "0000:26:00.0", "0000:46:00.0", "0000:65:00.0",
              "0000:85:00.0", "0000:a6:00.0", "0000:c6:00.0", "0000:e5:00.0"],
        variant=None, tool="amd-smi list", table_model="AMD Instinct MI300X", table_memory=196608,
        physical_ids=[None] * 8),
    "hygon-k100ai-8dcu": dict(
        vendor="hygon", backend="dtk", model="Hygon K100_AI", memory=65520, pci_id="1d94:6210",
        driver=("6.3.8-V1.9.2", "/sys/module/hycu/version"), runtime=("dtk", "24.04.3", "/opt/dtk/.info/version"),
        # hy-smi numbering, not PCI order
        bdfs=["0000:05:00.0", "0000:2b:00.0", "0000:14:00.0", "0000:1a:00.0",
              "0000:86:00.0", "0000:b8:00.0", "0000:c0:00.0", "0000:9e:00.0"],
        variant=None, tool="hy-smi", table_model="Hygon K100_AI", table_memory=65536, physical_ids=[None] * 8),
    "gaudi2-8hpu": dict(
        vendor="gaudi", backend="gaudi", model="Intel Gaudi2 (HL-225)", memory=98304, pci_id="1da3:1020",
        driver=("1.15.1-62f612b", "/sys/module/habanalabs/version"),
        runtime=("gaudi", "1.15.1", "hl-smi (HL-SMI Version)"),
        bdfs=["0000:19:00.0", "0000:1a:00.0", "0000:33:00.0", "0000:34:00.0",
              "0000:9a:00.0", "0000:9b:00.0", "0000:b3:00.0", "0000:b4:00.0"],
        variant="gaudi2", tool="hl-smi", table_model="Intel Gaudi2 (HL-225)", table_memory=98304,
        physical_ids=[5, 4, 7, 6, 2, 3, 0, 1]),
    "kunlunxin-p800-8xpu": dict(
        vendor="kunlunxin", backend="xpu", model="Kunlunxin P800 OAM", memory=98304, pci_id="1d22:3688",
        driver=("5.0.21.21", "/sys/module/kunlun/version"), runtime=("xpu", "5.0.21", "xpu-smi (XPU-RT Version)"),
        bdfs=["0000:03:00.0", "0000:05:00.0", "0000:63:00.0", "0000:65:00.0",
              "0000:83:00.0", "0000:85:00.0", "0000:a3:00.0", "0000:a5:00.0"],
        variant="p800", tool="xpu-smi", table_model="Kunlunxin P800", table_memory=98304, physical_ids=[None] * 8),
}
SNAPSHOTS = sorted(EXPECTED)


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_snapshot_full_detection(name):
    exp = EXPECTED[name]
    inv = detect(snapshot=NODES / name, usage=False)
    accs = inv.accelerators
    assert {a.vendor for a in accs} == {exp["vendor"]}, "no other vendor may claim these functions"
    assert [a.pci_bdf for a in accs] == exp["bdfs"]
    assert [a.index for a in accs] == list(range(len(exp["bdfs"])))
    assert [a.physical_id for a in accs] == exp["physical_ids"]
    for acc in accs:
        assert (acc.model, acc.backend, acc.pci_id, acc.memory_mib) == (
            exp["model"], exp["backend"], exp["pci_id"], exp["memory"])
        assert (acc.driver_version, acc.sources["driver_version"]) == exp["driver"]
        assert (acc.runtime.name, acc.runtime.version, acc.runtime.source) == exp["runtime"]
        assert acc.variant == exp["variant"]
        assert acc.health == "ok" and acc.hints == []
        assert acc.sources["pci_bdf"] == "pci-sysfs"
        assert acc.usage is None
    probe = probe_of(inv, exp["vendor"])
    assert probe.result == "ok" and probe.error is None
    assert [s.name for s in probe.steps][:3] == ["pci-sysfs", "driver-state", exp["tool"]]
    assert inv.warnings == []


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_cli_json(name):
    exp = EXPECTED[name]
    proc = run_cli("detect", "--snapshot", str(NODES / name), "--json", "--no-usage")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    accs = data["accelerators"]
    assert len(accs) == len(exp["bdfs"])
    assert [a["pci_bdf"] for a in accs] == exp["bdfs"]
    for a in accs:
        assert (a["vendor"], a["model"], a["memory_mib"], a["pci_id"]) == (
            exp["vendor"], exp["model"], exp["memory"], exp["pci_id"])
        assert a["driver_version"] == exp["driver"][0]
        assert (a["runtime"]["name"], a["runtime"]["version"]) == exp["runtime"][:2]
        assert a["usage"] is None
    assert data["node"]["cpu_count"] and data["node"]["os"]


def test_ascend_910b_details():
    inv = detect(snapshot=NODES / "ascend-910b-8npu")
    for acc in inv.accelerators:
        assert acc.dev_nodes == [f"/dev/davinci{acc.physical_id}"]
        assert acc.arch == "ascend910b"
        assert acc.sources["model"] == acc.sources["memory_mib"] == "npu-smi info"
        assert acc.usage.source == "npu-smi info" and acc.usage.memory_used_mib > 3000
    assert [a.numa_node for a in inv.accelerators] == [6, 6, 4, 4, 0, 0, 2, 2]
    # the Kunpeng's own Huawei functions, the ZIP engine (class 1200) included, are not NPUs
    assert "0000:75:00.0" not in {a.pci_bdf for a in inv.accelerators}
    assert inv.node.arch == "aarch64" and inv.node.cpu_model == "Kunpeng-920"


def test_amd_details_and_usage_from_rocm_smi():
    inv = detect(snapshot=NODES / "amd-mi300x-8gpu-epyc", usage=True)
    accs = inv.accelerators
    assert accs[1].uuid == "0aff74a1-0000-1000-805b-ce698de95724" and accs[1].sources["uuid"] == "amd-smi list"
    assert accs[1].dev_nodes == ["/dev/dri/card9", "/dev/dri/renderD136"]
    assert accs[2].dev_nodes == ["/dev/dri/card17", "/dev/dri/renderD144"]
    for acc in accs:
        assert (acc.arch, acc.compute_capability) == ("gfx942", "gfx942")
        assert acc.memory_mib == 196592 and acc.sources["memory_mib"] == "rocm-smi"   # measured beats the table
        assert acc.usage.source == "rocm-smi" and acc.usage.memory_used_mib == 284
    assert accs[3].usage.power_w == 133.0
    steps = [s.name for s in probe_of(inv, "amd").steps]
    assert "rocm-smi " + " ".join(ROCM_SMI_ARGV[1:]) in steps
    # without usage, rocm-smi is not even run (amd-smi list covers the inventory)
    quiet = detect(snapshot=NODES / "amd-mi300x-8gpu-epyc", usage=False)
    assert not any(s.name.startswith("rocm-smi") for s in probe_of(quiet, "amd").steps)
    assert not any(a.pci_id.startswith("1022") for a in inv.accelerators)


def test_hygon_details():
    inv = detect(snapshot=NODES / "hygon-k100ai-8dcu")
    accs = inv.accelerators
    assert all(a.arch == "gfx928" and a.sources["memory_mib"] == "rocm-smi" for a in accs)
    # DRM numbering follows PCI order while hy-smi numbering does not
    assert accs[1].pci_bdf == "0000:2b:00.0" and accs[1].dev_nodes == ["/dev/dri/card4", "/dev/dri/renderD131"]
    assert accs[0].usage.temperature_c == 51.0 and accs[0].usage.power_w == 95.0
    assert accs[0].usage.memory_used_mib == 2
    assert len(accs) == 8, "none of the 1d94 chipset functions may be reported"


def test_gaudi_details():
    inv = detect(snapshot=NODES / "gaudi2-8hpu")
    for acc in inv.accelerators:
        assert acc.dev_nodes == [f"/dev/accel/accel{acc.index}", f"/dev/accel/accel_controlD{acc.index}"]
        assert acc.sources["physical_id"] == "hl-smi -Q module_id"
        assert acc.usage.memory_used_mib == 768


def test_kunlunxin_details():
    inv = detect(snapshot=NODES / "kunlunxin-p800-8xpu")
    assert [a.dev_nodes for a in inv.accelerators] == [[f"/dev/xpu{i}"] for i in range(8)]
    assert "0000:c1:00.0" not in {a.pci_bdf for a in inv.accelerators}   # Baidu storage function


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_usage_only_on_request(name):
    with_usage = detect(snapshot=NODES / name, usage=True)
    assert all(a.usage is not None and a.usage.source for a in with_usage.accelerators)
    assert all(a.usage is None for a in detect(snapshot=NODES / name, usage=False).accelerators)


# ---- tools absent: layers a and b alone ----------------------------------------------------------

@pytest.mark.parametrize("name", SNAPSHOTS)
def test_without_vendor_tool(name, tmp_path):
    exp = EXPECTED[name]
    vendor, argv = VENDOR_SNAPSHOTS[name]
    snap = copy_snapshot(name, tmp_path / name)
    drop_vendor_tools(snap, argv[0])
    if vendor == "hygon" or vendor == "amd":
        drop_vendor_tools(snap, "rocm-smi")
    inv = detect(snapshot=snap, usage=True)
    accs = inv.accelerators
    assert sorted(a.pci_bdf for a in accs) == sorted(exp["bdfs"])
    assert [a.index for a in accs] == list(range(len(accs)))      # PCI order without the tool
    for acc in accs:
        assert acc.model == exp["table_model"] and acc.sources["model"] == "product-table"
        assert acc.memory_mib == exp["table_memory"] and acc.sources["memory_mib"] == "product-table"
        assert acc.pci_id == exp["pci_id"]
        assert acc.usage is None
        if vendor in ("ascend", "amd", "hygon", "gaudi", "kunlunxin"):
            assert (acc.driver_version, acc.sources["driver_version"]) == exp["driver"]
    probe = probe_of(inv, vendor)
    assert probe.result == "ok"
    assert any(s.result == "none" and "not installed" in (s.detail or "") for s in probe.steps)


# ---- no driver installed ---------------------------------------------------------------------------

DRIVER_FILES = {
    "ascend-910b-8npu": ["/usr/local/Ascend", "/dev/davinci0", "/dev/davinci_manager"]
    + [f"/dev/davinci{i}" for i in range(1, 8)],
    "amd-mi300x-8gpu-epyc": ["/sys/module/amdgpu", "/opt/rocm", "/dev/kfd"],
    "hygon-k100ai-8dcu": ["/sys/module/hycu", "/opt/dtk", "/dev/kfd", "/dev/mkfd"],
    "gaudi2-8hpu": ["/sys/module/habanalabs", "/dev/accel"],
    "kunlunxin-p800-8xpu": ["/sys/module/kunlun"] + [f"/dev/xpu{i}" for i in range(8)],
}


@pytest.mark.parametrize("name", sorted(DRIVER_FILES))
def test_no_driver_installed(name, tmp_path):
    exp = EXPECTED[name]
    vendor, argv = VENDOR_SNAPSHOTS[name]
    snap = copy_snapshot(name, tmp_path / name)
    for path in DRIVER_FILES[name]:
        remove_root_path(snap, path)
    write_root_file(snap, "/proc/modules", "ast 16384 0 - Live 0x0000000000000000\n")
    drop_vendor_tools(snap, argv[0])
    drop_vendor_tools(snap, "rocm-smi")
    inv = detect(snapshot=snap, usage=False)
    accs = accs_of(inv, vendor)
    assert sorted(a.pci_bdf for a in accs) == sorted(exp["bdfs"])
    for acc in accs:
        assert acc.driver_version is None and acc.runtime is None
        assert acc.health == "warning"
        assert any("appliance provision" in h for h in acc.hints)
        assert acc.model == exp["table_model"]
    assert inv.warnings == []


def test_ascend_driver_installed_but_not_loaded(tmp_path):
    snap = copy_snapshot("ascend-310p-2npu", tmp_path / "s")
    write_root_file(snap, "/proc/modules", "ast 16384 0 - Live 0x0000000000000000\n")
    for node in ("davinci0", "davinci1", "davinci_manager", "devmm_svm", "hisi_hdc"):
        remove_root_path(snap, f"/dev/{node}")
    drop_vendor_tools(snap, "npu-smi")
    inv = detect(snapshot=snap)
    for acc in inv.accelerators:
        assert acc.driver_version == "25.2.0" and acc.health == "warning"
        assert any("not loaded" in h for h in acc.hints)


# ---- no PCI sysfs (e.g. inside a container): devices from the vendor tool -------------------------

@pytest.mark.parametrize("name", ["ascend-910b-8npu", "gaudi2-8hpu", "kunlunxin-p800-8xpu"])
def test_tool_only_devices_without_pci_sysfs(name, tmp_path):
    exp = EXPECTED[name]
    snap = copy_snapshot(name, tmp_path / name)
    remove_root_path(snap, "/sys/bus/pci")
    inv = detect(snapshot=snap, usage=False)
    accs = inv.accelerators
    assert [a.pci_bdf for a in accs] == exp["bdfs"]
    assert all(a.vendor == exp["vendor"] and a.pci_id is None for a in accs)
    assert all(a.sources["pci_bdf"] == exp["tool"] for a in accs)
    assert {a.memory_mib for a in accs} == {exp["memory"]}
    if exp["vendor"] == "ascend":
        assert {a.model for a in accs} == {"Ascend 910B3"} and {a.variant for a in accs} == {"910b"}


def test_amd_ignores_hygon_cards_listed_by_rocm_smi():
    """DTK's rocm-smi lists Hygon DCUs; the AMD driver must not turn them into AMD GPUs."""
    host = SnapshotHost(NODES / "hygon-k100ai-8dcu")
    steps = []
    assert get_driver("amd").enrich(host, [], usage=True, steps=steps) == []
    assert any(s.name.startswith("rocm-smi") and s.result == "ok" for s in steps)


def test_hygon_without_showbus_cannot_match_but_warns_nothing(tmp_path):
    """hy-smi alone has no bus ids: its numbering cannot be mapped to PCI functions, so the DCUs
    keep their layer a/b facts (PCI order) and none is wrongly flagged as missing."""
    from v1support import set_tool_output

    snap = copy_snapshot("hygon-k100ai-8dcu", tmp_path / "h")
    set_tool_output(snap, ["hy-smi", "--showbus"], None)
    set_tool_output(snap, ROCM_SMI_ARGV, None)
    inv = detect(snapshot=snap)
    accs = inv.accelerators
    assert [a.pci_bdf for a in accs] == sorted(EXPECTED["hygon-k100ai-8dcu"]["bdfs"])
    assert all(a.hints == [] and a.health != "warning" and a.usage is None for a in accs)
    probe = probe_of(inv, "hygon")
    assert probe.result == "ok"
    assert any("could not be matched" in (s.detail or "") for s in probe.steps)
