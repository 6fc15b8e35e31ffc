"""Boxes named from the product tables alone (issue 18 item 4: chip tables from sources).

The five snapshots (tests/fixtures/nodes/<name>/README.md says what each is composed from;
tests/vendors1/make_chip_table_fixtures.py writes them) have the accelerators on the PCI bus and
no vendor driver or tool, so name, memory, arch and variant can only come from the product
table: a Kunlunxin R200 box (class 0780, told from the first generation by its subsystem id),
an NVIDIA H20 141 GB box, a Hygon Z100 and a Z100L box, a Gaudi2 HL-288 box. Variants are made
by copying a snapshot and changing one PCI function.
"""

from __future__ import annotations

import json

import pytest
from v1support import (
    NODES,
    accs_of,
    copy_snapshot,
    probe_of,
    remove_root_path,
    run_cli,
    set_tool_output,
    write_root_file,
)

from appliance.inventory.detect import detect
from chip_drivers import DRIVERS

EXPECTED = {
    "kunlunxin-r200-2xpu-nodriver": dict(
        vendor="kunlunxin", model="Kunlunxin R200", memory=16384, arch="KL2", variant="kl2", cc=None,
        pci_id="1d22:3684", pci_class="078000", subsystem="0002:0001",
        bdfs=["0000:01:00.0", "0000:81:00.0"], numa=[0, 1], tool="xpu-smi",
        hint="no Kunlunxin driver is loaded"),
    "nvidia-h20-141g-nodriver": dict(
        vendor="nvidia", model="NVIDIA H20 141GB HBM3e", memory=143771, arch="hopper", variant="h20", cc="9.0",
        pci_id="10de:232c", pci_class="030200", subsystem="10de:0000",
        bdfs=["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
              "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"],
        numa=[0, 0, 0, 0, 1, 1, 1, 1], tool="nvml", hint="no NVIDIA driver is loaded"),
    "hygon-z100-4dcu-nodriver": dict(
        vendor="hygon", model="Hygon Z100", memory=32768, arch="gfx906", variant=None, cc="gfx906",
        pci_id="1d94:54b7", pci_class="038000", subsystem="1d94:54b7",
        bdfs=["0000:04:00.0", "0000:23:00.0", "0000:43:00.0", "0000:63:00.0"], numa=[0, 0, 1, 1],
        tool="hy-smi", hint="no Hygon DCU driver is loaded"),
    "hygon-z100l-8dcu-nodriver": dict(
        vendor="hygon", model="Hygon Z100L", memory=32768, arch="gfx906", variant=None, cc="gfx906",
        pci_id="1d94:55b7", pci_class="038000", subsystem="1d94:55b7",
        bdfs=["0000:04:00.0", "0000:0b:00.0", "0000:23:00.0", "0000:2b:00.0",
              "0000:43:00.0", "0000:4b:00.0", "0000:63:00.0", "0000:6b:00.0"],
        numa=[0, 0, 0, 0, 1, 1, 1, 1], tool="hy-smi", hint="no Hygon DCU driver is loaded"),
    "gaudi2-hl288-8hpu-nodriver": dict(
        vendor="gaudi", model="Intel Gaudi2 PCIe (HL-288)", memory=98304, arch="gaudi2", variant="gaudi2",
        cc=None, pci_id="1da3:1021", pci_class="120000", subsystem="1da3:1021",
        bdfs=["0000:19:00.0", "0000:1a:00.0", "0000:33:00.0", "0000:34:00.0",
              "0000:9a:00.0", "0000:9b:00.0", "0000:b3:00.0", "0000:b4:00.0"],
        numa=[0, 0, 0, 0, 1, 1, 1, 1], tool="hl-smi", hint="no Intel Gaudi driver is loaded"),
}
SNAPSHOTS = sorted(EXPECTED)


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_named_from_the_product_table_before_any_driver(name):
    exp = EXPECTED[name]
    inv = detect(snapshot=NODES / name)
    accs = inv.accelerators
    assert {a.vendor for a in accs} == {exp["vendor"]}, "no other vendor may claim these functions"
    assert [a.pci_bdf for a in accs] == exp["bdfs"]
    assert len(accs) == len(exp["bdfs"])
    assert [a.index for a in accs] == list(range(len(accs)))
    assert [a.numa_node for a in accs] == exp["numa"]
    for a in accs:
        assert (a.model, a.memory_mib, a.arch, a.variant) == (exp["model"], exp["memory"], exp["arch"], exp["variant"])
        assert a.compute_capability == exp["cc"]
        assert (a.pci_id, a.pci_class, a.pci_subsystem_id) == (exp["pci_id"], exp["pci_class"], exp["subsystem"])
        assert a.sources["model"] == a.sources["memory_mib"] == "product-table"
        assert a.driver_version is None and a.runtime is None and a.uuid is None and a.usage is None
        assert a.health == "warning"
        assert any(exp["hint"] in h for h in a.hints), a.hints
    probe = probe_of(inv, exp["vendor"])
    assert probe.result == "ok" and probe.error is None
    tool = next(s for s in probe.steps if s.name.split()[0] == exp["tool"])
    assert tool.result in ("none", "skipped")   # the vendor tool is not installed: not an error
    assert inv.warnings == []


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_cli_json(name):
    exp = EXPECTED[name]
    proc = run_cli("detect", "--snapshot", str(NODES / name), "--json")
    assert proc.returncode == 0, proc.stderr
    accs = json.loads(proc.stdout)["accelerators"]
    assert [(a["vendor"], a["model"], a["memory_mib"], a["variant"]) for a in accs] == (
        [(exp["vendor"], exp["model"], exp["memory"], exp["variant"])] * len(exp["bdfs"]))


def test_no_physical_id_without_the_gaudi_driver():
    accs = detect(snapshot=NODES / "gaudi2-hl288-8hpu-nodriver").accelerators
    assert all(a.physical_id is None and a.dev_nodes == [] for a in accs)


def test_hygon_chipset_functions_are_not_dcus():
    for name in ("hygon-z100-4dcu-nodriver", "hygon-z100l-8dcu-nodriver"):
        snap = NODES / name
        functions = [p.name for p in (snap / "root/sys/bus/pci/devices").iterdir()
                     if (p / "vendor").read_text().strip() == "0x1d94"]
        assert len(functions) > len(EXPECTED[name]["bdfs"])   # chipset functions share 1d94
        assert [a.pci_bdf for a in detect(snapshot=snap).accelerators] == EXPECTED[name]["bdfs"]


# ---------------------------------------------------------------- Kunlunxin generations (3684)

def _add_function(snap, bdf: str, vendor: str, device: str, cls: str, sub: tuple[str, str]) -> None:
    base = f"/sys/bus/pci/devices/{bdf}"
    for key, value in (("vendor", vendor), ("device", device), ("class", cls),
                       ("subsystem_vendor", sub[0]), ("subsystem_device", sub[1])):
        write_root_file(snap, f"{base}/{key}", f"0x{value}\n")
    write_root_file(snap, f"{base}/numa_node", "0\n")


def test_kunlunxin_r200_and_k100_in_one_box_as_in_the_xre_guide(tmp_path):
    """The XRE install guide's own example: an R200 (0780, subsystem 0002:0001) at 01:00.0 and
    a K100 (1200, no subsystem id) at 06:00.0, both 1d22:3684."""
    snap = copy_snapshot("kunlunxin-r200-2xpu-nodriver", tmp_path / "k")
    remove_root_path(snap, "/sys/bus/pci/devices/0000:81:00.0")
    _add_function(snap, "0000:06:00.0", "1d22", "3684", "120000", ("0000", "0000"))
    r200, k100 = detect(snapshot=snap).accelerators
    assert (r200.pci_bdf, r200.model, r200.memory_mib, r200.arch, r200.variant) == (
        "0000:01:00.0", "Kunlunxin R200", 16384, "KL2", "kl2")
    assert (k100.pci_bdf, k100.model, k100.memory_mib, k100.arch, k100.variant) == (
        "0000:06:00.0", "Kunlunxin Kunlun AI Accelerator (K100/K200)", None, "KL1", "kl1")
    assert k100.pci_subsystem_id == "0000:0000" and k100.pci_class == "120000"


@pytest.mark.parametrize("cls,sub", [("078000", ("0002", "0003")),   # a Kunlun2 board the table lacks
                                     ("120000", ("1d22", "0001"))])  # a subsystem id: not a K100/K200
def test_kunlunxin_second_generation_board_not_in_the_table(tmp_path, cls, sub):
    snap = copy_snapshot("kunlunxin-r200-2xpu-nodriver", tmp_path / "k")
    _add_function(snap, "0000:81:00.0", "1d22", "3684", cls, sub)
    r200, other = detect(snapshot=snap).accelerators
    assert r200.model == "Kunlunxin R200"
    assert (other.model, other.memory_mib, other.arch, other.variant) == (
        "Kunlunxin Kunlun2 AI Accelerator (R-series)", None, "KL2", "kl2")
    assert other.sources["model"] == "product-table"


def test_class_0780_is_an_accelerator_class_for_kunlunxin_ids_only(tmp_path):
    snap = copy_snapshot("kunlunxin-r200-2xpu-nodriver", tmp_path / "k")
    # other vendors' accelerator ids and an unknown Baidu function, all with class 0780
    for bdf, vendor, device in (("0000:90:00.0", "10de", "232c"), ("0000:91:00.0", "1d94", "54b7"),
                                ("0000:92:00.0", "1da3", "1021"), ("0000:93:00.0", "1e3e", "0002"),
                                ("0000:94:00.0", "1d22", "1380"), ("0000:95:00.0", "19e5", "d802")):
        _add_function(snap, bdf, vendor, device, "078000", (vendor, "0000"))
    inv = detect(snapshot=snap)
    assert [(a.vendor, a.pci_bdf) for a in inv.accelerators] == [
        ("kunlunxin", "0000:01:00.0"), ("kunlunxin", "0000:81:00.0")]
    assert [d.__name__ for d in DRIVERS if "0780" in d.accelerator_classes] == ["KunlunxinDriver"]


def test_kunlunxin_r200_driver_loaded_without_xpu_smi(tmp_path):
    snap = copy_snapshot("kunlunxin-r200-2xpu-nodriver", tmp_path / "k")
    modules = (snap / "root/proc/modules").read_text()
    write_root_file(snap, "/proc/modules", "kunlun 655360 0 - Live 0x0000000000000000\n" + modules)
    write_root_file(snap, "/sys/module/kunlun/version", "4.0.25\n")
    for node in ("xpu0", "xpu1", "xpuctrl"):
        write_root_file(snap, f"/dev/{node}", "")
    accs = accs_of(detect(snapshot=snap), "kunlunxin")
    assert [(a.model, a.memory_mib, a.driver_version) for a in accs] == [("Kunlunxin R200", 16384, "4.0.25")] * 2
    assert all(a.sources["driver_version"] == "/sys/module/kunlun/version" and a.hints == [] for a in accs)


# ---------------------------------------------------------------- Ascend Atlas 300I Duo memory

def test_atlas_300i_duo_memory_per_chip_from_the_table(tmp_path):
    """Subsystem 0200:0110 (Atlas 300I Duo) without npu-smi: 44280 MiB per chip (GPUStack's
    310P3 sample), not the 300I Pro's 24 GiB."""
    snap = copy_snapshot("ascend-310p-2npu", tmp_path / "d")
    write_root_file(snap, "/sys/bus/pci/devices/0000:82:00.0/subsystem_vendor", "0x0200\n")
    write_root_file(snap, "/sys/bus/pci/devices/0000:82:00.0/subsystem_device", "0x0110\n")
    set_tool_output(snap, ["npu-smi", "info"], None)
    set_tool_output(snap, ["npu-smi", "info", "-m"], None)
    duo, pro = accs_of(detect(snapshot=snap), "ascend")
    assert (duo.model, duo.memory_mib, duo.sources["memory_mib"]) == (
        "Ascend 310P (Atlas 300I Duo)", 44280, "product-table")
    assert (pro.model, pro.memory_mib) == ("Ascend 310P (Atlas 300I Pro)", 24576)
