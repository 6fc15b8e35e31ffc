"""NVIDIA: the real h200-1gpu capture (exact values), an empty tool-output, no driver, a Huawei BMC."""

from __future__ import annotations

import json
import shutil

import pytest
from detect_support import H200, NODES, detect_json

from appliance.inventory.detect import detect
from appliance.inventory.hostview import SnapshotHost
from chip_drivers import get_driver
from chip_drivers.nvidia import DRIVER_CUDA, PRODUCTS, NvmlUnavailable, nvml_report, parse_smi_xml


def test_h200_snapshot_exact_values_through_the_cli():
    inv = detect_json("--snapshot", str(H200))
    accs = inv["accelerators"]
    assert len(accs) == 1
    a = accs[0]
    assert a["vendor"] == "nvidia"
    assert a["model"] == "NVIDIA H200"
    assert a["pci_bdf"] == "0000:00:06.0"
    assert a["pci_id"] == "10de:2335"
    assert a["memory_mib"] == 143771
    assert a["driver_version"] == "580.159.04"
    assert a["runtime"]["name"] == "cuda" and a["runtime"]["version"] == "13.0"
    assert a["compute_capability"] == "9.0"
    assert a["uuid"] == "GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01"
    assert a["index"] == 0
    assert a["health"] == "ok"
    assert a["numa_node"] is None  # the VM's sysfs says -1
    assert inv["node"]["cpu_count"] == 16
    assert inv["node"]["os"] == "Ubuntu 24.04.3 LTS"
    assert inv["node"]["hostname"] == "vm"
    assert inv["node"]["kernel"] == "6.18.44-fc-v657-gpu"
    assert inv["node"]["memory_mib"] == 131981020 // 1024
    assert inv["warnings"] == []
    nvidia_probe = next(p for p in inv["probes"] if p["driver"] == "nvidia")
    assert nvidia_probe["result"] == "ok"
    assert [s["name"] for s in nvidia_probe["steps"]][-1] == "nvidia-smi -q -x"
    assert {p["driver"] for p in inv["probes"]} == {
        "nvidia", "amd", "ascend", "kunlunxin", "hygon", "cambricon", "metax", "mthreads", "iluvatar", "gaudi"}
    # usage is separate from inventory
    assert a["usage"]["temperature_c"] == 37.0 and a["usage"]["memory_used_mib"] == 0
    assert detect_json("--snapshot", str(H200), "--no-usage")["accelerators"][0]["usage"] is None


def test_h200_with_empty_tool_output_uses_proc_and_product_table(h200_copy):
    out = h200_copy / "tool-output"
    shutil.rmtree(out)
    out.mkdir()
    (out / "index.json").write_text(json.dumps({"format": "appliance-node-snapshot/1", "commands": []}))
    inv = detect(snapshot=h200_copy)
    assert len(inv.accelerators) == 1
    a = inv.accelerators[0]
    assert (a.vendor, a.model, a.pci_bdf) == ("nvidia", "NVIDIA H200", "0000:00:06.0")
    assert a.driver_version == "580.159.04"
    assert a.sources["driver_version"] == "/proc/driver/nvidia/version"
    assert a.memory_mib == 143771 and a.sources["memory_mib"] == "product-table"
    assert a.uuid == "GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01"
    assert a.sources["uuid"].startswith("/proc/driver/nvidia/gpus/")
    assert a.runtime.version == "13.0" and a.runtime.source == "driver-branch-table"
    assert a.dev_nodes == ["/dev/nvidia0"]
    assert inv.warnings == []  # nvidia-smi absent = not installed, not an error
    step = next(s for s in inv.probes[0].steps if s.name == "nvidia-smi -q -x")
    assert step.result == "none"
    # node facts without uname/lscpu: hostname, kernel and CPU count fall back gracefully
    assert inv.node.os == "Ubuntu 24.04.3 LTS"
    assert inv.node.cpu_model == "Intel(R) Xeon(R) Processor"


def test_sys_module_version_when_proc_is_missing(h200_copy):
    (h200_copy / "root/proc/driver/nvidia/version").unlink()
    state = get_driver("nvidia").driver_state(SnapshotHost(h200_copy))
    assert state.driver_version == "580.159.04"
    assert state.driver_version_source == "/sys/module/nvidia/version"


def test_no_driver_two_gpus_reports_devices_and_a_hint():
    inv = detect(snapshot=NODES / "nvidia-nodriver-2gpu")
    accs = inv.accelerators
    assert [a.pci_bdf for a in accs] == ["0000:18:00.0", "0000:9a:00.0"]
    for i, a in enumerate(accs):
        assert a.vendor == "nvidia" and a.index == i
        assert a.model == "NVIDIA H100 80GB HBM3"
        assert a.memory_mib == 81559 and a.sources["memory_mib"] == "product-table"
        assert a.compute_capability == "9.0"
        assert a.driver_version is None and a.runtime is None
        assert a.health == "warning"
        assert any("no NVIDIA driver is loaded" in h for h in a.hints)
    assert [a.numa_node for a in accs] == [0, 1]
    assert inv.warnings == []
    assert inv.node.hostname == "gpu-node-07" and inv.node.cpu_count == 32
    # the ASPEED BMC VGA is not an accelerator
    assert all(a.pci_id != "1a03:2000" for a in accs)


def test_no_driver_table_shows_the_hint():
    from detect_support import run_cli

    res = run_cli("detect", "--snapshot", str(NODES / "nvidia-nodriver-2gpu"))
    assert res.returncode == 0, res.stderr
    assert "NVIDIA H100 80GB HBM3" in res.stdout
    assert "no NVIDIA driver is loaded" in res.stdout
    assert "none" in res.stdout  # driver column


def test_huawei_bmc_and_nic_are_not_accelerators():
    inv = detect(snapshot=NODES / "nvidia-huawei-bmc")
    assert [(a.vendor, a.model) for a in inv.accelerators] == [("nvidia", "NVIDIA L40S")] * 2
    a0, a1 = inv.accelerators
    assert a0.driver_version == a1.driver_version == "550.127.05"
    assert a0.runtime.version == "12.4"
    assert a0.uuid == "GPU-6c4e1b7a-3f0e-4d8b-9c52-1e0a7b3d5f21"
    assert a1.dev_nodes == ["/dev/nvidia1"]
    assert a0.memory_mib == 46068
    assert not [p for p in inv.probes if p.error]


def test_parse_smi_xml_real_output():
    report = parse_smi_xml((H200 / "tool-output/nvidia-smi-q.xml").read_text())
    assert report["driver_version"] == "580.159.04" and report["cuda_version"] == "13.0"
    (gpu,) = report["gpus"]
    assert gpu["pci_bus_id"] == "00000000:00:06.0" and gpu["pci_id"] == "10de:2335"
    assert gpu["memory_mib"] == 143771 and gpu["name"] == "NVIDIA H200"
    assert gpu["usage"]["power_limit_w"] == 700.0


@pytest.mark.parametrize("text", ["", "garbage <not xml", "<html><body>502</body></html>",
                                  "<nvidia_smi_log><attached_gpus>2</attached_gpus></nvidia_smi_log>"])
def test_parse_smi_xml_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_smi_xml(text)


def test_nvml_is_unavailable_on_this_machine_or_reports_devices():
    """Real NVML: on a machine without the NVIDIA driver it must say so (the fallback trigger)."""
    try:
        report = nvml_report(usage=True)
    except NvmlUnavailable as exc:
        assert "NVML" in str(exc) or "nvidia-ml-py" in str(exc)
    else:  # a GPU machine: the report has the same shape as nvidia-smi's
        assert report["source"] == "nvml"
        for gpu in report["gpus"]:
            assert gpu["uuid"].startswith("GPU-") and gpu["memory_mib"] > 0


def test_product_table_and_driver_branch_table():
    assert PRODUCTS["2335"].memory_mib == 143771  # = 150754820096 bytes, as NVML reports
    assert PRODUCTS["2335"].compute_capability == "9.0"
    for dev in ("2330", "2331", "2321", "2335", "233b", "2329", "2324", "20b0", "20b2", "20b1", "20b5",
                "20f3", "26b9", "26b5", "26b7", "26ba", "27b8", "2901"):  # every id in chips.md
        assert PRODUCTS[dev].memory_mib and PRODUCTS[dev].compute_capability, dev
    assert DRIVER_CUDA[580] == "13.0" and DRIVER_CUDA[550] == "12.4"


def test_container_access_by_uuid_never_privileged():
    inv = detect(snapshot=H200)
    access = get_driver("nvidia").container_access(inv.accelerators)
    assert access.device_requests == [{"driver": "nvidia", "device_ids": ["GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01"],
                                       "capabilities": [["gpu"]]}]
    assert access.env == {"NVIDIA_VISIBLE_DEVICES": "GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01",
                          "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}
    assert not hasattr(access, "privileged") or not access.privileged
    # without UUIDs (no driver yet) the tool index is used
    nodrv = detect(snapshot=NODES / "nvidia-nodriver-2gpu")
    assert get_driver("nvidia").container_access(nodrv.accelerators).env["NVIDIA_VISIBLE_DEVICES"] == "0,1"


class _NvmlFromCapture:
    """A stand-in for the NVML library (hardware), answering from the real capture's nvml.json."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, dump: dict):
        self.d = dump

    def nvmlSystemGetDriverVersion(self):
        return self.d["driver"]

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return self.d["cuda_driver"]

    def nvmlDeviceGetCount(self):
        return len(self.d["gpus"])

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.d["gpus"][i]

    def nvmlDeviceGetPciInfo(self, g):
        return type("Pci", (), {"busId": g["pci"].encode(), "pciDeviceId": int(g["pci_devid"], 16)})()

    def nvmlDeviceGetMemoryInfo(self, g):
        return type("Mem", (), {"total": g["mem_total"], "used": g["mem_used"]})()

    def nvmlDeviceGetCudaComputeCapability(self, g):
        return tuple(g["cc"])

    def nvmlDeviceGetNumaNodeId(self, g):
        raise self.NVMLError("Not Supported")  # as captured: NVMLError_NotSupported

    def nvmlDeviceGetName(self, g):
        return g["name"]

    def nvmlDeviceGetUUID(self, g):
        return g["uuid"]

    def nvmlDeviceGetUtilizationRates(self, g):
        return type("Util", (), {"gpu": g["util"][0], "memory": g["util"][1]})()

    def nvmlDeviceGetTemperature(self, g, sensor):
        return g["temp"]

    def nvmlDeviceGetPowerUsage(self, g):
        return g["power_mw"]

    def nvmlDeviceGetEnforcedPowerLimit(self, g):
        return g["power_limit_mw"]


def test_nvml_and_nvidia_smi_give_the_same_inventory():
    """Live (NVML) and snapshot (nvidia-smi -q -x) paths agree on the real H200 capture."""
    from chip_drivers.nvidia import _nvml_collect

    dump = json.loads((H200 / "tool-output/nvml.json").read_text())
    nvml = _nvml_collect(_NvmlFromCapture(dump), usage=True)
    assert nvml["cuda_version"] == "13.0" and nvml["driver_version"] == "580.159.04"
    assert nvml["gpus"][0]["memory_mib"] == 143771  # 150754820096 bytes
    assert nvml["gpus"][0]["usage"]["power_w"] == 80.38 and nvml["gpus"][0]["usage"]["power_limit_w"] == 700.0
    smi = parse_smi_xml((H200 / "tool-output/nvidia-smi-q.xml").read_text())

    driver = get_driver("nvidia")
    host = SnapshotHost(H200)
    merged = []
    for report in (nvml, smi):
        inv = detect(host, usage=False)
        accs = [a.model_copy(deep=True) for a in inv.accelerators]
        merged.append(driver._merge(accs, report, usage=False))
    fields = ("vendor", "model", "index", "pci_bdf", "pci_id", "memory_mib", "driver_version", "compute_capability",
              "uuid", "numa_node", "health")
    a, b = ([{f: getattr(x, f) for f in fields} | {"runtime": x.runtime.version} for x in m] for m in merged)
    assert a == b
