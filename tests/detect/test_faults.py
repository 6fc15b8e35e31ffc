"""Faults, for real: fake vendor tools on PATH (hang / non-zero / garbage) against a fake root,
and --snapshot on missing or malformed directories."""

from __future__ import annotations

import json
import time

import pytest
from detect_support import H200, add_pci_device, copy_snapshot, fake_tool, path_with, run_cli


@pytest.fixture
def fake_node(tmp_path):
    """The h200 root plus an Ascend 910B NPU (another vendor, whose tool is not installed)."""
    snap = copy_snapshot(H200, tmp_path / "node")
    add_pci_device(snap / "root", "0000:81:00.0", "19e5", "d802", "120000", numa=1)
    return snap / "root"


def _run(root, bin_dir, timeout_s="1"):
    env = {"PATH": path_with(bin_dir), "APPLIANCE_HOST_ROOT": str(root), "APPLIANCE_TOOL_TIMEOUT_S": timeout_s}
    start = time.monotonic()
    res = run_cli("detect", "--json", env=env)
    return res, time.monotonic() - start


def _check_still_reported(res):
    assert res.returncode == 0, res.stderr
    inv = json.loads(res.stdout)
    by_vendor = {a["vendor"]: a for a in inv["accelerators"]}
    gpu = by_vendor["nvidia"]
    assert gpu["model"] == "NVIDIA H200" and gpu["pci_bdf"] == "0000:00:06.0"
    assert gpu["driver_version"] == "580.159.04"  # layer b survives a failing layer c
    assert gpu["memory_mib"] == 143771
    assert by_vendor["ascend"]["pci_bdf"] == "0000:81:00.0"  # another vendor is untouched
    probe = next(p for p in inv["probes"] if p["driver"] == "nvidia")
    assert probe["result"] == "partial"
    assert probe["error"]
    assert set(probe) >= {"driver", "steps", "result", "error", "seconds"}
    assert any(line.startswith("warning: nvidia probe:") for line in res.stderr.splitlines())
    return probe


def test_tool_that_hangs_is_killed_at_its_timeout(fake_node, tmp_path):
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "nvidia-smi", "sleep 60")
    res, seconds = _run(fake_node, bin_dir, timeout_s="1")
    probe = _check_still_reported(res)
    assert "timed out" in probe["error"] and "killed" in probe["error"]
    assert seconds < 30  # 1 s tool timeout, not the 60 s sleep


def test_tool_that_exits_non_zero(fake_node, tmp_path):
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "nvidia-smi",
              'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver." ; exit 9')
    res, _ = _run(fake_node, bin_dir)
    probe = _check_still_reported(res)
    assert "exited 9" in probe["error"] and "couldn't communicate" in probe["error"]


def test_tool_that_prints_garbage(fake_node, tmp_path):
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "nvidia-smi", 'echo "Segmentation fault <<garbage"')
    res, _ = _run(fake_node, bin_dir)
    probe = _check_still_reported(res)
    assert "not nvidia-smi XML" in probe["error"]


def test_tool_that_prints_real_xml_enriches(fake_node, tmp_path):
    bin_dir = tmp_path / "bin"
    xml = H200 / "tool-output" / "nvidia-smi-q.xml"
    fake_tool(bin_dir, "nvidia-smi", f'[ "$1 $2" = "-q -x" ] && exec cat "{xml}"; exit 3')
    res, _ = _run(fake_node, bin_dir)
    assert res.returncode == 0
    inv = json.loads(res.stdout)
    gpu = next(a for a in inv["accelerators"] if a["vendor"] == "nvidia")
    assert gpu["runtime"]["source"] == "nvidia-smi -q -x" and gpu["health"] == "ok"
    assert not any(w.startswith("nvidia") for w in inv["warnings"])


def _one_line_exit_2(res, *needles):
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr and "fix:" in lines[0]
    for needle in needles:
        assert needle in lines[0]
    assert res.stdout == ""


def test_snapshot_missing(tmp_path):
    _one_line_exit_2(run_cli("detect", "--snapshot", str(tmp_path / "nope")), "does not exist")


def test_snapshot_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_exit_2(run_cli("detect", "--snapshot", str(f)), "not a directory")


def test_snapshot_without_root(h200_copy):
    import shutil

    shutil.rmtree(h200_copy / "root")
    _one_line_exit_2(run_cli("detect", "--snapshot", str(h200_copy)), "root/")


def test_snapshot_without_index(h200_copy):
    (h200_copy / "tool-output/index.json").unlink()
    _one_line_exit_2(run_cli("detect", "--snapshot", str(h200_copy)), "index.json is missing")


@pytest.mark.parametrize("content,needle", [
    ("{not json", "malformed index"),
    ("[]", "'commands' list"),
    ('{"format": "appliance-node-snapshot/9", "commands": []}', "unsupported snapshot format"),
    ('{"format": "appliance-node-snapshot/1", "commands": [{"argv": "nvidia-smi", "file": "x"}]}', "commands[0]"),
    ('{"format": "appliance-node-snapshot/1", "commands": [{"argv": ["lscpu"], "file": "nope.txt"}]}', "missing"),
    ('{"format": "appliance-node-snapshot/1", "commands": [{"argv": ["lscpu"], "file": "../../etc/passwd"}]}',
     "outside tool-output"),
    ('{"format": "appliance-node-snapshot/1", "commands": [{"argv": ["lscpu"], "file": "lscpu.txt", '
     '"exit_code": "zero"}]}', "exit_code"),
])
def test_snapshot_malformed_index(h200_copy, content, needle):
    (h200_copy / "tool-output/index.json").write_text(content)
    _one_line_exit_2(run_cli("detect", "--snapshot", str(h200_copy)), needle, "index.json")
