"""Faults of the Ascend / AMD / Hygon / Gaudi / Kunlunxin tools, and capture -> replay.

A vendor listing that prints garbage, exits non-zero or times out must leave that vendor's
probe in error with its PCI devices still reported, every other vendor untouched, and
``appliance detect`` exiting 0 with a warning. One tool really hangs (a fake executable on
PATH against a live host rooted at a snapshot) and must be killed at its timeout.
"""

from __future__ import annotations

import json
import shlex

import pytest
from detect_support import fake_tool, path_with
from v1support import (
    NODES,
    VENDOR_SNAPSHOTS,
    accs_of,
    copy_snapshot,
    probe_of,
    run_cli,
    sample,
    set_tool_output,
)

from appliance.inventory.detect import detect
from appliance.inventory.hostview import LiveHost

GARBAGE = "Segmentation fault (core dumped)\n\x01\x02 ###\n"
TABLE_MODEL = {"ascend-910b-8npu": "Ascend 910B", "ascend-310p-2npu": "Ascend 310P (Atlas 300I Pro)",
               "amd-mi300x-8gpu-epyc": "AMD Instinct MI300X", "hygon-k100ai-8dcu": "Hygon K100_AI",
               "gaudi2-8hpu": "Intel Gaudi2 (HL-225)", "kunlunxin-p800-8xpu": "Kunlunxin P800"}
COUNT = {"ascend-910b-8npu": 8, "ascend-310p-2npu": 2, "amd-mi300x-8gpu-epyc": 8, "hygon-k100ai-8dcu": 8,
         "gaudi2-8hpu": 8, "kunlunxin-p800-8xpu": 8}
FAULTS = {
    "garbage": dict(text=GARBAGE, exit_code=0, timed_out=False, words="not recognised"),
    "nonzero": dict(text="dcmi module initialize failed. ret is -8005\n", exit_code=255, timed_out=False,
                    words="exited 255"),
    "timeout": dict(text=None, exit_code=None, timed_out=True, words="timed out"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("name", sorted(VENDOR_SNAPSHOTS))
def test_listing_fault_keeps_pci_devices(name, fault, tmp_path):
    vendor, argv = VENDOR_SNAPSHOTS[name]
    f = FAULTS[fault]
    snap = copy_snapshot(name, tmp_path / name)
    set_tool_output(snap, argv, f["text"], exit_code=f["exit_code"], timed_out=f["timed_out"])
    inv = detect(snapshot=snap, usage=True)
    accs = accs_of(inv, vendor)
    assert len(accs) == COUNT[name]
    assert all(a.model == TABLE_MODEL[name] and a.sources["model"] == "product-table" for a in accs)
    assert all(a.driver_version for a in accs), "layer b still gives the driver version"
    assert all(a.usage is None for a in accs), "no half-applied enrichment"
    probe = probe_of(inv, vendor)
    assert probe.result == "partial"
    assert f["words"] in probe.error and " ".join(argv) in probe.error
    assert any(w.startswith(f"{vendor} probe:") for w in inv.warnings)


def test_fault_in_one_vendor_hides_no_other(tmp_path):
    snap = copy_snapshot("mixed-nvidia-ascend", tmp_path / "m")
    set_tool_output(snap, ["npu-smi", "info"], GARBAGE)
    inv = detect(snapshot=snap)
    (gpu,) = accs_of(inv, "nvidia")
    assert (gpu.model, gpu.driver_version, gpu.memory_mib) == ("NVIDIA H200", "580.159.04", 143771)
    npus = accs_of(inv, "ascend")
    assert [a.pci_bdf for a in npus] == ["0000:82:00.0", "0000:89:00.0"]
    assert probe_of(inv, "nvidia").result == "ok" and probe_of(inv, "ascend").result == "partial"


def test_secondary_listing_failure_is_partial_not_fatal(tmp_path):
    """`npu-smi info -m` failing loses only logic/physical ids from it; the main listing holds."""
    snap = copy_snapshot("ascend-910b-8npu", tmp_path / "a")
    set_tool_output(snap, ["npu-smi", "info", "-m"], GARBAGE)
    inv = detect(snapshot=snap)
    assert {a.model for a in inv.accelerators} == {"Ascend 910B3"}
    assert {a.memory_mib for a in inv.accelerators} == {65536}
    probe = probe_of(inv, "ascend")
    assert probe.result == "partial" and "npu-smi info -m" in probe.error


def test_kunlunxin_intel_xpu_smi_is_skipped(tmp_path):
    snap = copy_snapshot("kunlunxin-p800-8xpu", tmp_path / "k")
    intel = ("Intel(R) XPU System Management Interface -- v1.0\n"
             "Usage: xpu-smi [Options]\n  xpu-smi -v\n  xpu-smi -h\n  xpu-smi discovery\n")
    set_tool_output(snap, ["xpu-smi"], intel)
    inv = detect(snapshot=snap)
    assert len(inv.accelerators) == 8 and all(a.sources["model"] == "product-table" for a in inv.accelerators)
    probe = probe_of(inv, "kunlunxin")
    assert probe.result == "ok"
    assert any(s.result == "skipped" and "Intel" in s.detail for s in probe.steps)


def test_npu_smi_missing_a_card(tmp_path):
    """A card the driver does not list (dead NPU) stays reported, with a warning hint."""
    snap = copy_snapshot("ascend-310p-2npu", tmp_path / "p")
    text = sample("npu-smi_info_310P3_2card.txt").splitlines()
    set_tool_output(snap, ["npu-smi", "info"], "\n".join(text[:7]) + "\n")
    inv = detect(snapshot=snap)
    good, dead = inv.accelerators
    assert (good.pci_bdf, good.health, good.model) == ("0000:82:00.0", "ok", "Ascend 310P3")
    assert (dead.pci_bdf, dead.health, dead.index) == ("0000:89:00.0", "warning", 1)
    assert any("npu-smi info does not list 0000:89:00.0" in h for h in dead.hints)


def test_cli_exit_0_with_warning_on_tool_failure(tmp_path):
    snap = copy_snapshot("gaudi2-8hpu", tmp_path / "g")
    set_tool_output(snap, ["hl-smi"], "hl-smi: error while loading shared libraries\n", exit_code=127)
    res = run_cli("detect", "--snapshot", str(snap), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert len(data["accelerators"]) == 8
    assert "warning: gaudi probe" in res.stderr and "exited 127" in res.stderr


def _fake_tools(bin_dir, snap_dir, tool: str) -> None:
    """An executable ``tool`` that replays the snapshot's recorded outputs for each argv."""
    index = json.loads((snap_dir / "tool-output" / "index.json").read_text())
    cases = []
    for c in index["commands"]:
        if c["argv"][0] != tool:
            continue
        args = " ".join(c["argv"][1:])
        out = snap_dir / "tool-output" / c["file"]
        cases.append(f"  {shlex.quote(args)}) cat {shlex.quote(str(out))}; exit {c['exit_code']};;")
    script = "#!/bin/sh\ncase \"$*\" in\n" + "\n".join(cases) + "\n  *) echo unknown >&2; exit 2;;\nesac\n"
    (bin_dir / tool).write_text(script)
    (bin_dir / tool).chmod(0o755)


def test_hanging_npu_smi_is_killed_and_npus_still_reported(tmp_path):
    snap = copy_snapshot("ascend-910b-8npu", tmp_path / "a")
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "npu-smi", "sleep 30")
    env = {"APPLIANCE_HOST_ROOT": str(snap / "root"), "APPLIANCE_TOOL_TIMEOUT_S": "1", "PATH": path_with(bin_dir)}
    res = run_cli("detect", "--json", "--no-usage", env=env)
    assert res.returncode == 0, res.stderr
    inv = json.loads(res.stdout)
    npus = [a for a in inv["accelerators"] if a["vendor"] == "ascend"]
    assert len(npus) == 8 and {a["model"] for a in npus} == {"Ascend 910B"}
    assert {a["driver_version"] for a in npus} == {"25.5.1"}
    probe = next(p for p in inv["probes"] if p["driver"] == "ascend")
    assert probe["result"] == "partial" and "timed out" in probe["error"]
    assert probe["seconds"] < 20
    assert "warning: ascend probe" in res.stderr


@pytest.mark.parametrize("name, tools", [
    ("ascend-910b-8npu", ["npu-smi"]), ("amd-mi300x-8gpu-epyc", ["amd-smi", "rocm-smi"]),
    ("hygon-k100ai-8dcu", ["hy-smi", "rocm-smi"]), ("gaudi2-8hpu", ["hl-smi"]),
    ("kunlunxin-p800-8xpu", ["xpu-smi"]),
])
def test_capture_then_replay_equals_live(name, tools, tmp_path, monkeypatch):
    """A live host at the snapshot's root with the vendor tools on PATH, captured by
    `appliance snapshot`'s capture(), replays to the same accelerators as the live run."""
    from appliance.inventory.snapshot import capture

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        _fake_tools(bin_dir, NODES / name, tool)
    monkeypatch.setenv("PATH", path_with(bin_dir))
    root = NODES / name / "root"
    live = detect(LiveHost(root), usage=False)
    capture(tmp_path / "captured", root=root)
    replay = detect(snapshot=tmp_path / "captured", usage=False)
    assert len(live.accelerators) == COUNT[name]
    assert all(a.sources["model"] != "product-table" or name.startswith(("amd", "hygon", "gaudi"))
               for a in live.accelerators)
    assert [a.model_dump() for a in replay.accelerators] == [a.model_dump() for a in live.accelerators]
