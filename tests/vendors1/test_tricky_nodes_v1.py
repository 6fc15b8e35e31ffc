"""Tricky nodes: management chips and chipset functions that share an accelerator vendor's PCI id.

- an NVIDIA server whose BMC VGA (19e5:1711), NIC (19e5:1822) and RAID are Huawei devices,
- a Kunpeng host whose ZIP engine (19e5:a250) has the NPUs' class 0x1200,
- a Hygon server whose CPU chipset functions use the DCU vendor id 1d94,
- an AMD EPYC host (1022 functions, an SDXI engine of class 0x1201) with Instinct GPUs (1002),
- NVIDIA and Ascend in one node.
"""

from __future__ import annotations

import json

from v1support import NODES, accs_of, probe_of, run_cli

from appliance.inventory.detect import detect
from appliance.inventory.hostview import SnapshotHost
from appliance.inventory.pci import scan_pci
from chip_drivers import get_driver


def test_nvidia_server_with_huawei_bmc_vga_shows_no_ascend():
    inv = detect(snapshot=NODES / "nvidia-bmc-huawei-vga")
    assert [(a.vendor, a.model, a.pci_bdf) for a in inv.accelerators] == [
        ("nvidia", "NVIDIA H200", "0000:18:00.0"), ("nvidia", "NVIDIA H200", "0000:9a:00.0")]
    probe = probe_of(inv, "ascend")
    assert probe.result == "none" and probe.error is None
    assert probe.steps[0].name == "pci-sysfs" and probe.steps[0].detail == "0 device(s)"
    assert not any(s.name.startswith("npu-smi") for s in probe.steps), "no tool runs without NPUs or driver"
    assert inv.warnings == []


def test_huawei_functions_are_seen_but_not_claimed():
    host = SnapshotHost(NODES / "nvidia-bmc-huawei-vga")
    huawei = [d for d in scan_pci(host) if d.vendor == "19e5"]
    assert {d.device for d in huawei} == {"1711", "1822", "3758"}
    assert not any(get_driver("ascend").claims(d) for d in huawei)


def test_kunpeng_engines_are_not_npus():
    host = SnapshotHost(NODES / "ascend-910b-8npu")
    ascend = get_driver("ascend")
    by_dev = {d.device: d for d in scan_pci(host) if d.vendor == "19e5"}
    assert by_dev["a250"].class_prefix == "1200"            # same class as the NPUs
    assert [d for d in by_dev if ascend.claims(by_dev[d])] == ["d802"]


def test_hygon_chipset_functions_are_not_dcus():
    host = SnapshotHost(NODES / "hygon-k100ai-8dcu")
    hygon = get_driver("hygon")
    funcs = [d for d in scan_pci(host) if d.vendor == "1d94"]
    claimed = [d for d in funcs if hygon.claims(d)]
    assert len(funcs) == 27 and len(claimed) == 8
    assert {d.device for d in claimed} == {"6210"}
    # the chipset functions whose class is not a bridge (PSP/CCP 1080, dummy 1300) are refused too
    assert {d.class_prefix for d in funcs if d not in claimed} >= {"1080", "1300", "0600"}
    inv = detect(snapshot=NODES / "hygon-k100ai-8dcu")
    assert {a.vendor for a in inv.accelerators} == {"hygon"} and len(inv.accelerators) == 8


def test_amd_epyc_host_functions_are_not_gpus():
    inv = detect(snapshot=NODES / "amd-mi300x-8gpu-epyc")
    assert {a.pci_id for a in inv.accelerators} == {"1002:74a1"}
    assert len(inv.accelerators) == 8
    host = SnapshotHost(NODES / "amd-mi300x-8gpu-epyc")
    epyc = [d for d in scan_pci(host) if d.vendor == "1022"]
    assert any(d.pci_class == "120100" for d in epyc)        # SDXI: a "processing accelerator" subclass
    assert not any(get_driver(v).claims(d) for d in epyc for v in ("amd", "hygon"))


def test_mixed_nvidia_and_ascend():
    inv = detect(snapshot=NODES / "mixed-nvidia-ascend")
    (gpu,) = accs_of(inv, "nvidia")
    assert (gpu.model, gpu.pci_bdf, gpu.driver_version, gpu.runtime.name, gpu.runtime.version) == (
        "NVIDIA H200", "0000:00:06.0", "580.159.04", "cuda", "13.0")
    npus = accs_of(inv, "ascend")
    assert [(a.model, a.pci_bdf, a.memory_mib, a.driver_version, a.variant) for a in npus] == [
        ("Ascend 310P3", "0000:82:00.0", 21534, "25.2.0", "310p"),
        ("Ascend 310P3", "0000:89:00.0", 21534, "25.2.0", "310p")]
    # no `npu-smi info -m` recorded: logic ids from the Device column, physical ids assumed equal
    assert [a.index for a in npus] == [0, 1] and [a.physical_id for a in npus] == [0, 1]
    assert all(a.runtime is None for a in npus)      # no CANN on the host
    assert inv.backends() == ["cuda", "cann"]
    assert inv.warnings == []


def test_mixed_node_cli_json():
    res = run_cli("detect", "--snapshot", str(NODES / "mixed-nvidia-ascend"), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [(a["vendor"], a["pci_id"]) for a in data["accelerators"]] == [
        ("nvidia", "10de:2335"), ("ascend", "19e5:d500"), ("ascend", "19e5:d500")]
    human = run_cli("detect", "--snapshot", str(NODES / "nvidia-bmc-huawei-vga"))
    assert human.returncode == 0 and "ascend" not in human.stdout.lower()


def _dev(vendor: str, device: str, cls: str):
    from appliance.inventory.pci import PciDevice

    return PciDevice(bdf="0000:41:00.0", vendor=vendor, device=device, pci_class=cls, subsystem_vendor=None,
                     subsystem_device=None, numa_node=None, driver=None)


def test_hygon_id_filter_beyond_class():
    """Chipset ids are refused even under an accelerator class (defensive: the real chipset
    functions above are already refused by class); BW100 (class 0x0b40) is a DCU."""
    hygon = get_driver("hygon")
    assert not hygon.claims(_dev("1d94", "1456", "0b4000"))
    assert not hygon.claims(_dev("1d94", "7901", "120000"))
    assert hygon.claims(_dev("1d94", "6370", "0b4000"))
    assert hygon.claims(_dev("1d94", "6211", "038000"))
    assert hygon.claims(_dev("1d94", "62b7", "120000"))


def test_vendor_class_rules():
    amd, ascend, gaudi = get_driver("amd"), get_driver("ascend"), get_driver("gaudi")
    assert amd.claims(_dev("1002", "740f", "038000"))            # MI210 as display controller
    assert amd.claims(_dev("1002", "747e", "030000"))            # ROCm Radeon in the table: VGA allowed
    assert not amd.claims(_dev("1002", "164e", "030000"))        # an unknown APU iGPU (VGA) is not
    assert not amd.claims(_dev("1002", "ab38", "040300"))        # HDMI audio function
    assert ascend.claims(_dev("19e5", "d806", "120000"))         # unknown future Ascend id (dxxx)
    assert not ascend.claims(_dev("19e5", "d802", "030000"))
    assert not gaudi.claims(_dev("1da3", "0001", "120000"))      # Goya inference card
    assert gaudi.claims(_dev("1da3", "1060", "120000"))
