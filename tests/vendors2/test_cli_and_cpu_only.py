"""`appliance detect --json` on the vendor snapshots and the CPU-only node, through the real CLI.

Also a vendor tool that really hangs: a live host pointed at a snapshot's root, with a fake
``cnmon`` on PATH that sleeps, is killed at its (capped) timeout and the MLUs are still listed.
"""

from __future__ import annotations

import json

import pytest
from detect_support import fake_tool, path_with
from v2support import NODES, VENDOR_SNAPSHOTS, copy_snapshot, run_cli, set_tool_output

from appliance.inventory.detect import detect
from appliance.inventory.hostview import SnapshotHost
from appliance.inventory.pci import scan_pci
from chip_drivers import all_drivers

CLI_EXPECTED = {
    # name: (count, model, memory_mib, pci_bdf of the first, driver_version, runtime)
    "cambricon-mlu370-8": (8, "MLU370-X8", 23374, "0000:39:00.0", "5.10.13", {"name": "neuware", "version": "3.7.2"}),
    "metax-c500-2": (2, "MetaX C500", 65536, "0000:0e:00.0", "3.0.11", {"name": "maca", "version": "3.1.0.14"}),
    "mthreads-s80-1": (1, "MTT S80", 16384, "0000:04:00.0", "2.7.0", {"name": "musa", "version": "3.1.0"}),
    "iluvatar-bi-v150-2": (2, "Iluvatar BI-V150", 32768, "0000:10:00.0", "4.3.8",
                           {"name": "corex", "version": "4.3.8"}),
}


@pytest.mark.parametrize("name", sorted(CLI_EXPECTED))
def test_cli_json(name):
    count, model, memory, first_bdf, driver, runtime = CLI_EXPECTED[name]
    res = run_cli("detect", "--snapshot", str(NODES / name), "--json")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    inv = json.loads(res.stdout)
    accs = inv["accelerators"]
    assert len(accs) == count
    assert {a["vendor"] for a in accs} == {VENDOR_SNAPSHOTS[name][0]}
    assert accs[0]["pci_bdf"] == first_bdf
    for a in accs:
        assert a["model"] == model
        assert a["memory_mib"] == memory
        assert a["driver_version"] == driver
        assert {k: a["runtime"][k] for k in ("name", "version")} == runtime
        assert a["pci_id"] and a["numa_node"] is not None and a["health"] == "ok"


@pytest.mark.parametrize("name", sorted(CLI_EXPECTED))
def test_cli_garbage_tool_exits_0_with_warning(name, tmp_path):
    snap = copy_snapshot(name, tmp_path / name)
    set_tool_output(snap, VENDOR_SNAPSHOTS[name][1], "garbage garbage\n")
    res = run_cli("detect", "--snapshot", str(snap), "--json", "--no-usage")
    assert res.returncode == 0, res.stderr
    assert "warning:" in res.stderr and VENDOR_SNAPSHOTS[name][0] in res.stderr
    inv = json.loads(res.stdout)
    assert len(inv["accelerators"]) == CLI_EXPECTED[name][0]


def test_cpu_only_node_facts_and_zero_accelerators():
    inv = detect(snapshot=NODES / "cpu-only")
    assert inv.accelerators == []
    n = inv.node
    assert n.hostname == "cpu-node-01"
    assert n.os == "Ubuntu 22.04.5 LTS" and n.os_id == "ubuntu" and n.os_version_id == "22.04"
    assert n.kernel == "5.15.0-125-generic"
    assert n.arch == "x86_64"
    assert n.cpu_model == "Intel(R) Xeon(R) Silver 4214R CPU @ 2.40GHz"
    assert n.cpu_vendor == "GenuineIntel"
    assert n.cpu_count == 24
    assert n.memory_mib == 196735592 // 1024
    assert {"avx2", "avx512f", "avx512_vnni"} <= set(n.cpu_flags) and "amx_bf16" not in n.cpu_flags
    assert n.container_engine.present and n.container_engine.version == "27.3.1"
    assert inv.warnings == []
    assert all(p.result == "none" and p.error is None for p in inv.probes)
    assert inv.backends() == []


def test_cpu_only_no_driver_claims_any_function():
    """The ASPEED BMC VGA, NICs, NVMe and chipset are never an accelerator, for any vendor."""
    host = SnapshotHost(NODES / "cpu-only")
    pci = scan_pci(host)
    assert any(d.pci_id == "1a03:2000" and d.class_prefix == "0300" for d in pci)
    for driver in all_drivers():
        assert [d.bdf for d in pci if driver.claims(d)] == [], driver.vendor
        state = driver.driver_state(host)
        # /dev/dri/card0 (the BMC) and drm/ttm modules are not a GPU driver
        assert not state.driver_loaded, driver.vendor


def test_cpu_only_cli():
    res = run_cli("detect", "--snapshot", str(NODES / "cpu-only"), "--json")
    assert res.returncode == 0, res.stderr
    inv = json.loads(res.stdout)
    assert inv["accelerators"] == []
    assert inv["node"]["cpu_count"] == 24 and inv["node"]["memory_mib"] == 192124
    human = run_cli("detect", "--snapshot", str(NODES / "cpu-only"))
    assert human.returncode == 0 and "cpu-node-01" in human.stdout


def test_hanging_cnmon_is_killed_and_mlus_still_reported(tmp_path):
    snap = copy_snapshot("cambricon-mlu370-8", tmp_path / "c")
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "cnmon", "sleep 30")
    env = {"APPLIANCE_HOST_ROOT": str(snap / "root"), "APPLIANCE_TOOL_TIMEOUT_S": "1", "PATH": path_with(bin_dir)}
    res = run_cli("detect", "--json", "--no-usage", env=env)
    assert res.returncode == 0, res.stderr
    inv = json.loads(res.stdout)
    cam = [a for a in inv["accelerators"] if a["vendor"] == "cambricon"]
    assert len(cam) == 8 and all(a["model"] == "MLU370" and a["memory_mib"] == 24576 for a in cam)
    probe = next(p for p in inv["probes"] if p["driver"] == "cambricon")
    assert probe["result"] == "partial" and "timed out" in probe["error"]
    assert "warning: cambricon probe" in res.stderr


@pytest.mark.parametrize("name", sorted(CLI_EXPECTED))
def test_capture_then_replay_equals_live(name, tmp_path, monkeypatch):
    """A live host at the snapshot's root with the vendor tool on PATH, captured with
    `appliance snapshot`'s capture(), replays to the same accelerators as the live run."""
    from appliance.inventory.hostview import LiveHost
    from appliance.inventory.snapshot import capture

    tool = VENDOR_SNAPSHOTS[name][1][0]
    index = json.loads((NODES / name / "tool-output/index.json").read_text())
    listing = NODES / name / "tool-output" / next(c["file"] for c in index["commands"] if c["argv"] == [tool])
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, tool, f"cat '{listing}'")
    monkeypatch.setenv("PATH", path_with(bin_dir))
    root = NODES / name / "root"
    live = detect(LiveHost(root), usage=False)
    capture(tmp_path / "captured", root=root)
    replay = detect(snapshot=tmp_path / "captured", usage=False)
    assert len(live.accelerators) == CLI_EXPECTED[name][0]
    assert all(a.sources["model"] == tool for a in live.accelerators)
    assert [a.model_dump() for a in replay.accelerators] == [a.model_dump() for a in live.accelerators]
