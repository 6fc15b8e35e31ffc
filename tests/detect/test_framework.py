"""The detection framework: registry, PCI class filtering, isolation of vendors, host views, node facts."""

from __future__ import annotations

import time

import pytest
from detect_support import H200, NODES

import chip_drivers
from appliance.inventory.detect import detect
from appliance.inventory.hostview import LiveHost, SnapshotHost
from appliance.inventory.node import _DF_LINE, mounted_disks, node_facts
from appliance.inventory.pci import PciDevice, normalize_bdf, scan_pci
from chip_drivers.base import ChipDriver, ProbeFailure
from chip_drivers.cpu import parse_cpu_list
from chip_drivers.nvidia import NvidiaDriver

EXPECTED_VENDORS = ("nvidia", "amd", "ascend", "kunlunxin", "hygon", "cambricon", "metax", "mthreads",
                    "iluvatar", "gaudi")


def test_registry_ids_and_identity_match_the_classes():
    assert chip_drivers.VENDOR_IDS == EXPECTED_VENDORS
    assert "cpu" in chip_drivers.BACKENDS
    for vendor in EXPECTED_VENDORS:
        cls = chip_drivers.driver_class(vendor)
        assert cls.vendor == vendor
        assert cls.backend == chip_drivers.backend_of(vendor)
        assert tuple(cls.pci_vendor_ids) == chip_drivers.PCI_VENDORS[vendor]
    assert [c.vendor for c in chip_drivers.DRIVERS] == list(EXPECTED_VENDORS)
    with pytest.raises(KeyError):
        chip_drivers.get_driver("intel-arc")


def test_only_vendors_present_on_pci_are_probed():
    assert chip_drivers.drivers_for_pci({"10de", "8086"}) == ["nvidia"]
    assert chip_drivers.drivers_for_pci({"10de", "19e5"}) == ["nvidia", "ascend"]
    assert chip_drivers.drivers_for_pci(None) == list(EXPECTED_VENDORS)


def _dev(vendor, device, cls, bdf="0000:01:00.0"):
    return PciDevice(bdf=bdf, vendor=vendor, device=device, pci_class=cls, subsystem_vendor=None,
                     subsystem_device=None, numa_node=None, driver=None)


@pytest.mark.parametrize("vendor,device,cls,claimed", [
    ("10de", "2335", "030200", True),    # H200, 3D controller
    ("10de", "2684", "030000", True),    # a GeForce (VGA class) is still a CUDA device
    ("10de", "22ba", "040300", False),   # the GPU's HDMI audio function
    ("10de", "22a3", "068000", False),   # NVSwitch bridge
    ("1a03", "2000", "030000", False),   # ASPEED BMC VGA
    ("19e5", "1711", "030000", False),   # Huawei BMC VGA is not NVIDIA's either
])
def test_nvidia_claims_by_vendor_and_class(vendor, device, cls, claimed):
    assert NvidiaDriver().claims(_dev(vendor, device, cls)) is claimed


def test_normalize_bdf():
    assert normalize_bdf("00000000:00:06.0") == "0000:00:06.0"
    assert normalize_bdf("00:06.0") == "0000:00:06.0"
    assert normalize_bdf("0000:4F:00.0") == "0000:4f:00.0"


class _Exploding(ChipDriver):
    vendor = "exploding"
    display_name = "Exploding"
    backend = "boom"
    pci_vendor_ids = ("8086",)
    accelerator_classes = ("0600",)  # claims the host bridge

    def driver_state(self, host):
        raise RuntimeError("driver_state blew up")


class _FailingTool(ChipDriver):
    vendor = "failing"
    display_name = "Failing"
    backend = "fail"
    pci_vendor_ids = ("1af4",)
    accelerator_classes = ("0100", "0200", "0000", "0780", "0880")

    def enrich(self, host, accs, *, usage, steps):
        raise ProbeFailure("vendor tool said no")


class _Hanging(ChipDriver):
    vendor = "hanging"
    display_name = "Hanging"
    backend = "hang"
    pci_vendor_ids = ("10de",)
    accelerator_classes = ("0302",)
    tool_timeout_s = 0.2

    def enrich(self, host, accs, *, usage, steps):
        time.sleep(5)  # on purpose: a vendor library call that never returns in time
        return accs


def test_one_vendor_failing_never_hides_another():
    inv = detect(SnapshotHost(H200), drivers=[_Exploding(), _FailingTool(), NvidiaDriver()])
    nvidia = [a for a in inv.accelerators if a.vendor == "nvidia"]
    assert len(nvidia) == 1 and nvidia[0].uuid.startswith("GPU-bd03a26d")
    probes = {p.driver: p for p in inv.probes}
    assert probes["exploding"].result == "partial" and "blew up" in probes["exploding"].error
    assert probes["failing"].result == "partial" and probes["failing"].error == "vendor tool said no"
    assert probes["nvidia"].result == "ok" and probes["nvidia"].error is None
    assert {w.split(":")[0] for w in inv.warnings} == {"exploding probe", "failing probe"}


def test_a_hanging_driver_is_cut_off_at_its_deadline(monkeypatch):
    monkeypatch.setenv("APPLIANCE_TOOL_TIMEOUT_S", "0.2")
    start = time.monotonic()
    inv = detect(SnapshotHost(H200), drivers=[_Hanging(), NvidiaDriver()])
    assert time.monotonic() - start < 4
    hanging = [a for a in inv.accelerators if a.vendor == "hanging"]
    assert [a.pci_bdf for a in hanging] == ["0000:00:06.0"]  # its PCI devices are still reported
    probe = next(p for p in inv.probes if p.driver == "hanging")
    assert probe.result == "partial" and "did not finish" in probe.error
    assert any(a.vendor == "nvidia" for a in inv.accelerators)


def test_snapshot_host_replays_exact_argv_only():
    host = SnapshotHost(H200)
    assert host.run(["nvidia-smi", "-L"]).stdout.startswith("GPU 0: NVIDIA H200")
    assert host.run(["nvidia-smi", "-L", "-x"]).not_found
    assert host.has_tool("nvidia-smi") and not host.has_tool("npu-smi")
    assert host.readlink("/sys/bus/pci/devices/0000:00:06.0/driver").endswith("drivers/nvidia")
    assert [d.driver for d in scan_pci(host) if d.bdf == "0000:00:06.0"] == ["nvidia"]


def test_live_host_root_override(monkeypatch, tmp_path):
    monkeypatch.setenv("APPLIANCE_HOST_ROOT", str(H200 / "root"))
    host = LiveHost()
    assert not host.native and host.live
    assert host.read_value("/sys/module/nvidia/version") == "580.159.04"
    monkeypatch.delenv("APPLIANCE_HOST_ROOT")
    assert LiveHost().native


def test_parse_cpu_list():
    assert parse_cpu_list("0-15") == 16
    assert parse_cpu_list("0-15,32-47") == 32
    assert parse_cpu_list("0,2,4") == 3
    assert parse_cpu_list("x") is None


def test_uname_and_df_parsing_from_a_snapshot(tmp_path):
    import json
    import shutil

    snap = tmp_path / "snap"
    shutil.copytree(H200, snap, symlinks=True)  # keep the sysfs `driver` symlinks as they are
    for p in [snap, *snap.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (snap / "root/proc/mounts").write_text(
        "/dev/nvme0n1p2 / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n"
        "/dev/nvme1n1 /data\\040models xfs rw 0 0\n/dev/nvme0n1p2 /var/lib/docker ext4 rw 0 0\n"
        "overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n")
    df = ("Filesystem     1024-blocks      Used Available Capacity Mounted on\n"
          "/dev/nvme0n1p2   1921724676 123456789 1700000000       7% /\n"
          "/dev/nvme1n1     7812500000         0 7812500000       0% /data models\n")
    (snap / "tool-output/df.txt").write_text(df)
    index = json.loads((snap / "tool-output/index.json").read_text())
    index["commands"].append({"argv": ["df", "-P", "-k", "/", "/data models"], "file": "df.txt", "exit_code": 0})
    (snap / "tool-output/index.json").write_text(json.dumps(index))
    host = SnapshotHost(snap)
    assert mounted_disks(host) == [("/dev/nvme0n1p2", "/", "ext4"), ("/dev/nvme1n1", "/data models", "xfs")]
    node = node_facts(host, usage=True)
    assert [(d.mountpoint, d.total_mib, d.free_mib) for d in node.disks] == [
        ("/", 1921724676 // 1024, 1700000000 // 1024), ("/data models", 7812500000 // 1024, 7812500000 // 1024)]
    assert [d.free_mib for d in node_facts(host, usage=False).disks] == [None, None]  # free space is usage
    assert node.arch == "x86_64" and node.hostname == "vm"
    assert _DF_LINE.match("/dev/sda1 100 1 99 1% /")


def test_cpu_only_node_has_no_accelerators_and_full_node_facts():
    snap = NODES / "cpu-only"
    inv = detect(snapshot=snap)
    assert inv.accelerators == []
    n = inv.node
    assert n.hostname and n.os and n.kernel and n.cpu_model and n.cpu_count and n.memory_mib
    assert n.container_engine.present
