"""Detection of Cambricon, MetaX, Moore Threads and Iluvatar nodes from their snapshots.

Each snapshot (tests/fixtures/nodes/<name>/README.md says what is real and what composed)
is detected through the real ``detect(snapshot=...)``; variants are made by copying a
snapshot to a temp dir and changing one thing (tool absent, module version file present,
driver missing, tool failing).
"""

from __future__ import annotations

import pytest
from v2support import (
    NODES,
    VENDOR_SNAPSHOTS,
    accs_of,
    copy_snapshot,
    probe_of,
    remove_root_path,
    set_tool_output,
    write_root_file,
)

from appliance.inventory.detect import detect

EXPECTED = {
    "cambricon-mlu370-8": dict(
        vendor="cambricon", backend="neuware", model="MLU370-X8", memory=23374, driver="5.10.13",
        runtime=("neuware", "3.7.2", "/usr/local/neuware/version.txt"), pci_id="cabc:0370",
        bdfs=["0000:39:00.0", "0000:3d:00.0", "0000:4f:00.0", "0000:53:00.0",
              "0000:9c:00.0", "0000:a0:00.0", "0000:b5:00.0", "0000:b9:00.0"],
        table_model="MLU370", table_memory=24576, tool="cnmon"),
    "metax-c500-2": dict(
        vendor="metax", backend="maca", model="MetaX C500", memory=65536, driver="3.0.11",
        runtime=("maca", "3.1.0.14", "/opt/maca/Version.txt"), pci_id="9999:0a01",
        bdfs=["0000:0e:00.0", "0000:0f:00.0"], table_model="MetaX C500", table_memory=65536, tool="mx-smi"),
    "mthreads-s80-1": dict(
        vendor="mthreads", backend="musa", model="MTT S80", memory=16384, driver="2.7.0",
        runtime=("musa", "3.1.0", "/usr/local/musa/version.json:musa_toolkits.version"), pci_id="1ed5:0201",
        bdfs=["0000:04:00.0"], table_model="MTT S80", table_memory=16384, tool="mthreads-gmi"),
    "iluvatar-bi-v150-2": dict(
        vendor="iluvatar", backend="corex", model="Iluvatar BI-V150", memory=32768, driver="4.3.8",
        runtime=("corex", "4.3.8", "readlink /usr/local/corex"), pci_id="1e3e:0003",
        bdfs=["0000:10:00.0", "0000:13:00.0"],
        # the placeholder id is deliberately not in the product table
        table_model="Iluvatar CoreX device 1e3e:0003", table_memory=None, tool="ixsmi"),
}
SNAPSHOTS = sorted(EXPECTED)


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_snapshot_full_detection(name):
    exp = EXPECTED[name]
    inv = detect(snapshot=NODES / name)
    accs = inv.accelerators
    assert {a.vendor for a in accs} == {exp["vendor"]}, "no other vendor may claim these functions"
    assert [a.pci_bdf for a in accs] == exp["bdfs"]
    assert [a.index for a in accs] == list(range(len(exp["bdfs"])))
    for acc in accs:
        assert acc.model == exp["model"]
        assert acc.backend == exp["backend"]
        assert acc.pci_id == exp["pci_id"]
        assert acc.memory_mib == exp["memory"]
        assert acc.driver_version == exp["driver"]
        assert (acc.runtime.name, acc.runtime.version, acc.runtime.source) == exp["runtime"]
        assert acc.health == "ok"
        assert acc.hints == []
        assert acc.sources["model"] == exp["tool"]
        assert acc.sources["memory_mib"] == exp["tool"]
        assert acc.sources["driver_version"] == exp["tool"]
        assert acc.sources["pci_bdf"] == "pci-sysfs"
        assert acc.usage is not None and acc.usage.source == exp["tool"]
        assert acc.usage.memory_used_mib is not None
    probe = probe_of(inv, exp["vendor"])
    assert probe.result == "ok" and probe.error is None
    assert [s.name for s in probe.steps] == ["pci-sysfs", "driver-state", exp["tool"]]
    assert inv.warnings == []


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_no_usage_leaves_usage_empty(name):
    inv = detect(snapshot=NODES / name, usage=False)
    assert inv.accelerators and all(a.usage is None for a in inv.accelerators)


def test_per_device_fields():
    inv = detect(snapshot=NODES / "cambricon-mlu370-8")
    numa = [a.numa_node for a in inv.accelerators]
    assert numa == [0, 0, 0, 0, 1, 1, 1, 1]
    a3 = inv.accelerators[3]
    assert a3.dev_nodes == ["/dev/cambricon_dev3", "/dev/cambricon_ipcm3", "/dev/cambricon_ctl"]
    assert a3.usage.temperature_c == 39.0 and a3.usage.power_w == 106.0 and a3.usage.power_limit_w == 250.0
    assert a3.arch == "mlu370" and a3.pci_class == "120000"

    metax = detect(snapshot=NODES / "metax-c500-2").accelerators
    assert metax[0].dev_nodes == ["/dev/dri/card1", "/dev/dri/renderD128", "/dev/mxcd"]
    assert metax[1].dev_nodes == ["/dev/dri/card2", "/dev/dri/renderD129", "/dev/mxcd"]

    mt = detect(snapshot=NODES / "mthreads-s80-1").accelerators
    assert mt[0].dev_nodes == ["/dev/mtgpu.0", "/dev/dri/card1", "/dev/dri/renderD129"]
    assert mt[0].pci_class == "030000"  # a VGA-class GPU is accepted for Moore Threads

    ilu = detect(snapshot=NODES / "iluvatar-bi-v150-2").accelerators
    assert ilu[0].arch is None and ilu[0].variant == "bi-v150" and ilu[0].sources["variant"] == "ixsmi"
    assert metax[0].variant == "c500" and "variant" not in metax[0].sources  # from the product table
    assert ilu[1].dev_nodes == ["/dev/iluvatar1", "/dev/itrctl", "/dev/itrlink"]
    assert ilu[1].usage.power_w == 104.0 and ilu[0].usage.power_w is None


def test_same_vendor_non_accelerator_functions_are_not_reported():
    # The S80's HDMI/DP audio function 1ed5:01ff and the Intel iGPU (VGA) are present.
    inv = detect(snapshot=NODES / "mthreads-s80-1")
    assert [a.pci_bdf for a in inv.accelerators] == ["0000:04:00.0"]


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_tool_absent_reports_layer_a_and_b(name, tmp_path):
    exp = EXPECTED[name]
    snap = copy_snapshot(name, tmp_path / name)
    set_tool_output(snap, VENDOR_SNAPSHOTS[name][1], None)
    inv = detect(snapshot=snap)
    accs = accs_of(inv, exp["vendor"])
    assert [a.pci_bdf for a in accs] == exp["bdfs"]
    for acc in accs:
        assert acc.model == exp["table_model"]
        assert acc.memory_mib == exp["table_memory"]
        if exp["table_memory"] is not None:
            assert acc.sources["memory_mib"] == "product-table"
        # driver loaded but no /sys/module/<mod>/version: version unknown, yet no install hint
        assert acc.driver_version is None
        assert acc.runtime.version == exp["runtime"][1]
        assert not any("no " in h and "driver is loaded" in h for h in acc.hints)
        assert acc.usage is None
    probe = probe_of(inv, exp["vendor"])
    assert probe.result == "ok"
    tool_step = probe.steps[-1]
    assert tool_step.name == exp["tool"] and tool_step.result == "none"
    assert inv.warnings == []


@pytest.mark.parametrize("name,module", [
    ("cambricon-mlu370-8", "cambricon_drv"), ("metax-c500-2", "metax"),
    ("mthreads-s80-1", "mtgpu"), ("iluvatar-bi-v150-2", "iluvatar"),
])
def test_module_version_file_gives_driver_version_without_tool(name, module, tmp_path):
    snap = copy_snapshot(name, tmp_path / name)
    set_tool_output(snap, VENDOR_SNAPSHOTS[name][1], None)
    write_root_file(snap, f"/sys/module/{module}/version", "v9.8.7\n" if module == "cambricon_drv" else "9.8.7\n")
    accs = detect(snapshot=snap).accelerators
    assert accs and all(a.driver_version == "9.8.7" for a in accs)
    assert all(a.sources["driver_version"] == f"/sys/module/{module}/version" for a in accs)


@pytest.mark.parametrize("name,module,nodes", [
    ("cambricon-mlu370-8", "cambricon_drv", ["/dev/cambricon_ctl", "/proc/driver/cambricon"]),
    ("metax-c500-2", "metax", ["/dev/mxcd"]),
    ("mthreads-s80-1", "mtgpu", ["/dev/mtgpu.0"]),
    ("iluvatar-bi-v150-2", "iluvatar", ["/dev/itrctl", "/dev/iluvatar0", "/dev/iluvatar1"]),
])
def test_no_driver_installed(name, module, nodes, tmp_path):
    """Cards present, no kernel driver, no tool: devices reported, driver null, a hint."""
    exp = EXPECTED[name]
    snap = copy_snapshot(name, tmp_path / name)
    set_tool_output(snap, VENDOR_SNAPSHOTS[name][1], None)
    modules = (snap / "root/proc/modules").read_text().splitlines(keepends=True)
    (snap / "root/proc/modules").write_text("".join(m for m in modules if not m.startswith(module + " ")))
    for node in nodes:
        remove_root_path(snap, node)
    inv = detect(snapshot=snap)
    accs = accs_of(inv, exp["vendor"])
    assert len(accs) == len(exp["bdfs"])
    for acc in accs:
        assert acc.driver_version is None
        assert acc.health == "warning"
        assert any("driver" in h and "provision" in h for h in acc.hints), acc.hints


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_tool_exits_non_zero(name, tmp_path):
    exp = EXPECTED[name]
    snap = copy_snapshot(name, tmp_path / name)
    set_tool_output(snap, VENDOR_SNAPSHOTS[name][1], "Error: failed to initialize the management library\n",
                    exit_code=3)
    inv = detect(snapshot=snap)
    accs = accs_of(inv, exp["vendor"])
    assert [a.pci_bdf for a in accs] == exp["bdfs"]  # layer a/b devices kept
    assert all(a.model == exp["table_model"] and a.runtime.version == exp["runtime"][1] for a in accs)
    probe = probe_of(inv, exp["vendor"])
    assert probe.result == "partial"
    assert exp["tool"] in probe.error and "exited 3" in probe.error
    assert any(exp["vendor"] in w for w in inv.warnings)


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_tool_prints_garbage(name, tmp_path):
    exp = EXPECTED[name]
    snap = copy_snapshot(name, tmp_path / name)
    set_tool_output(snap, VENDOR_SNAPSHOTS[name][1], "\x1b[31m%%%% random ### garbage\nline two\n")
    inv = detect(snapshot=snap)
    accs = accs_of(inv, exp["vendor"])
    assert [a.pci_bdf for a in accs] == exp["bdfs"]
    assert all(a.usage is None and a.sources["model"] != exp["tool"] for a in accs)
    probe = probe_of(inv, exp["vendor"])
    assert probe.result == "partial"
    assert "not recognised" in probe.error and exp["tool"] in probe.error


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_tool_timed_out(name, tmp_path):
    exp = EXPECTED[name]
    snap = copy_snapshot(name, tmp_path / name)
    set_tool_output(snap, VENDOR_SNAPSHOTS[name][1], None, timed_out=True)
    inv = detect(snapshot=snap)
    assert [a.pci_bdf for a in accs_of(inv, exp["vendor"])] == exp["bdfs"]
    probe = probe_of(inv, exp["vendor"])
    assert probe.result == "partial" and "timed out" in probe.error


def test_tool_device_missing_from_listing_is_flagged(tmp_path):
    """cnmon lists 7 of 8 functions: the eighth is kept with a warning and a hint."""
    snap = copy_snapshot("cambricon-mlu370-8", tmp_path / "c")
    lines = (snap / "tool-output/cnmon.txt").read_text().splitlines(keepends=True)
    set_tool_output(snap, ["cnmon"], "".join(lines[:-3]))  # drop card 7's block
    accs = detect(snapshot=snap).accelerators
    assert len(accs) == 8
    last = accs[-1]
    assert last.pci_bdf == "0000:b9:00.0" and last.health == "warning" and last.index == 7
    assert any("cnmon does not list 0000:b9:00.0" in h for h in last.hints)
    assert all(a.health == "ok" for a in accs[:-1])


def test_tool_device_without_pci_function_is_added(tmp_path):
    """Inside a container without PCI sysfs: the driver is loaded and ixsmi lists the GPUs."""
    snap = copy_snapshot("iluvatar-bi-v150-2", tmp_path / "i")
    remove_root_path(snap, "/sys/bus/pci/devices")
    accs = detect(snapshot=snap).accelerators
    assert [a.pci_bdf for a in accs] == ["0000:10:00.0", "0000:13:00.0"]
    assert all(a.sources["pci_bdf"] == "ixsmi" and a.pci_id is None for a in accs)
    assert all(a.runtime.version == "4.3.8" and a.driver_version == "4.3.8" for a in accs)
    assert accs[0].dev_nodes == ["/dev/iluvatar0", "/dev/itrctl", "/dev/itrlink"]


def test_one_vendor_failing_never_hides_another(tmp_path):
    """A node with Cambricon and Iluvatar cards; cnmon prints garbage, ixsmi is fine."""
    snap = copy_snapshot("iluvatar-bi-v150-2", tmp_path / "mixed")
    src = NODES / "cambricon-mlu370-8"
    import shutil
    for bdf in ("0000:39:00.0", "0000:3d:00.0"):
        shutil.copytree(src / "root/sys/bus/pci/devices" / bdf, snap / "root/sys/bus/pci/devices" / bdf, symlinks=True)
    modules = (src / "root/proc/modules").read_text().splitlines(keepends=True)[0]
    write_root_file(snap, "/proc/modules", modules + (snap / "root/proc/modules").read_text())
    set_tool_output(snap, ["cnmon"], "cnmon: fatal: cndev init failed (garbage)\n")
    inv = detect(snapshot=snap)
    assert [a.vendor for a in inv.accelerators] == ["cambricon", "cambricon", "iluvatar", "iluvatar"]
    assert probe_of(inv, "cambricon").result == "partial"
    assert probe_of(inv, "iluvatar").result == "ok"
    ilu = accs_of(inv, "iluvatar")
    assert all(a.model == "Iluvatar BI-V150" and a.health == "ok" for a in ilu)
    assert [w for w in inv.warnings if w.startswith("cambricon")]
    assert not [w for w in inv.warnings if w.startswith("iluvatar")]
