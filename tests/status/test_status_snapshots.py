"""`appliance status` without a stack: accelerators from node snapshots, problems, JSON schema.

Hardware is faked only through node snapshots (three vendors and more); the state is a real
SQLite file in the per-test APPLIANCE_DATA_DIR. No stack is installed, so status must say
how to install one, exit 2 and never touch Docker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from tests.support import H200

REPO = Path(__file__).resolve().parents[2]
NODES = REPO / "tests" / "fixtures" / "nodes"

# snapshot -> (vendor, count, a model name fragment, a driver, a runtime) as the snapshot's tools say
VENDORS = {
    H200: ("nvidia", 1, "NVIDIA H200", "580.159.04", "CUDA 13.0"),
    NODES / "ascend-910b-8npu": ("ascend", 8, "Ascend 910B3", "25.5.1", "CANN 8.5.0"),
    NODES / "cambricon-mlu370-8": ("cambricon", 8, "MLU370-X8", "5.10.13", "Neuware 3.7.2"),
    NODES / "amd-mi300x-8gpu-epyc": ("amd", 8, "AMD Instinct MI300X", "6.10.5", "ROCm 7.0.2"),
}


def status_cli(*args: str):
    return CliRunner().invoke(cli, ["status", *args], catch_exceptions=False)


@pytest.mark.parametrize("snapshot", list(VENDORS), ids=lambda p: p.name)
def test_accelerators_render_per_vendor(snapshot: Path):
    vendor, count, model, driver, runtime = VENDORS[snapshot]
    res = status_cli("--snapshot", str(snapshot))
    assert res.exit_code == 2, res.output  # nothing installed: cannot say the box is healthy
    out = res.output
    rows = [line for line in out.splitlines() if f"{vendor}:" in line]
    assert len(rows) == count, out
    for i in range(count):
        assert any(f"{vendor}:{i} " in r for r in rows), (i, out)
    assert all(model in r and driver in r and runtime in r for r in rows), out
    assert "NOT INSTALLED" in out and "appliance init --demo --yes" in out


@pytest.mark.parametrize("snapshot", list(VENDORS), ids=lambda p: p.name)
def test_accelerators_json_match_detect(snapshot: Path):
    from appliance.inventory.detect import detect

    res = status_cli("--snapshot", str(snapshot), "--json")
    assert res.exit_code == 2
    report = json.loads(res.output)
    inv = detect(snapshot=snapshot, usage=True)
    assert len(report["accelerators"]) == len(inv.accelerators) == VENDORS[snapshot][1]
    for got, acc in zip(report["accelerators"], inv.accelerators):
        assert (got["vendor"], got["index"], got["model"]) == (acc.vendor, acc.index, acc.model)
        assert got["memory_total_mib"] == acc.memory_mib
        assert got["driver_version"] == acc.driver_version and got["health"] == acc.health
        assert got["memory_used_mib"] == acc.usage.memory_used_mib
        assert got["temperature_c"] == acc.usage.temperature_c
        assert got["power_w"] == acc.usage.power_w
        assert got["utilization_pct"] == acc.usage.utilization_pct
    assert report["node"]["hostname"] == inv.node.hostname
    assert report["node"]["source"].startswith("snapshot:")
    assert report["collect"]["docker_api_calls"] == 0


def test_h200_usage_values_shown():
    out = status_cli("--snapshot", str(H200)).output
    row = next(line for line in out.splitlines() if "nvidia:0" in line)
    # memory used/total in GiB, temperature, power/limit from the snapshot's nvidia-smi -q -x
    assert "0.0/140.4" in row and "37°C" in row and "80W/700W" in row and "0%" in row, row


def test_not_installed_json_schema_and_no_state_file(tmp_path, monkeypatch):
    data = tmp_path / "fresh"
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(data))
    res = status_cli("--json")
    assert res.exit_code == 2
    r = json.loads(res.output)
    assert r["format"] == "appliance-status/1"
    assert (r["status"], r["healthy"], r["exit_code"]) == ("not_installed", False, 2)
    for key in ("release", "node", "accelerators", "services", "models", "problems", "last_upgrade", "endpoints",
                "summary", "appliance_version", "checked_at", "instance", "collect"):
        assert key in r
    assert r["release"] is None and r["services"] == [] and r["endpoints"] == {"gateway": None, "apps": {}}
    assert r["node"]["docker"]["reachable"] is None  # not asked: nothing installed
    p = r["problems"][0]
    assert p["code"] == "not_installed" and "appliance init" in p["fix"]
    assert not data.exists(), "status must not create the state before anything is installed"


def test_not_installed_human_view_says_how_to_init(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "fresh"))
    res = status_cli()
    assert res.exit_code == 2
    assert "appliance init --demo --yes" in res.output.splitlines()[-1]


def test_nodriver_snapshot_reports_driver_missing_with_fix():
    r = json.loads(status_cli("--snapshot", str(NODES / "nvidia-nodriver-2gpu"), "--json").output)
    probs = [p for p in r["problems"] if p["code"] == "driver_missing"]
    assert len(probs) == 1 and probs[0]["subject"] == "accelerators nvidia:0,1"
    assert probs[0]["severity"] == "warning"  # no service is planned on them (nothing installed)
    assert "appliance provision" in probs[0]["fix"]


def test_old_driver_and_runtime_are_a_mismatch(tmp_path):
    """A copy of the Ascend snapshot with a driver and CANN older than the catalog's minimums."""
    snap = tmp_path / "ascend-old"
    shutil.copytree(NODES / "ascend-910b-8npu", snap, symlinks=True)
    info = snap / "root/usr/local/Ascend/driver/version.info"
    info.write_text(info.read_text().replace("Version=25.5.1", "Version=23.0.3")
                    .replace("package_version=25.5.1", "package_version=23.0.3"))
    toolkit = snap / "root/usr/local/Ascend/ascend-toolkit/latest/aarch64-linux/ascend_toolkit_install.info"
    toolkit.write_text(toolkit.read_text().replace("8.5.0", "7.0.0"))
    r = json.loads(status_cli("--snapshot", str(snap), "--json").output)
    assert r["accelerators"][0]["driver_version"] == "23.0.3"
    mismatch = [p for p in r["problems"] if p["code"] == "driver_runtime_mismatch"]
    messages = " | ".join(p["message"] for p in mismatch)
    assert "23.0.3 is older than the 24.1.rc3" in messages, messages
    assert "CANN 7.0.0 is outside the supported range" in messages, messages
    assert all(p["subject"] == "accelerators ascend:0,1,2,3,4,5,6,7" for p in mismatch)
    # the untouched snapshot has none
    clean = json.loads(status_cli("--snapshot", str(NODES / "ascend-910b-8npu"), "--json").output)
    assert not [p for p in clean["problems"] if p["code"] == "driver_runtime_mismatch"]


def test_license_expiring_is_a_warning(tmp_path):
    from appliance.licensing import core, keys

    pair = keys.generate_keypair(tmp_path / "vendor")
    keys.trust_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(pair["public_key"], keys.trust_dir() / "vendor.pub")
    soon = (datetime.now(timezone.utc) + timedelta(days=10, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lic = core.issue(pair["private_key"], ["pro-chat"], soon, "ACME")
    path = tmp_path / "lic.json"
    path.write_text(lic.model_dump_json())
    core.install(path)
    r = json.loads(status_cli("--snapshot", str(H200), "--json").output)
    p = next(p for p in r["problems"] if p["code"] == "license_expiring")
    assert p["severity"] == "warning" and "expires in 10 day(s)" in p["message"]
    assert "appliance license install" in p["fix"]


def test_bad_snapshot_is_one_line_exit_2(tmp_path):
    empty = tmp_path / "not-a-snapshot"
    empty.mkdir()
    res = subprocess.run([sys.executable, "-m", "appliance", "status", "--snapshot", str(empty)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")


def test_watch_json_prints_one_document_per_refresh(tmp_path):
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(tmp_path / "fresh")}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "status", "--watch", "0.5", "--json",
                             "--snapshot", str(H200)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    lines = []
    deadline = time.monotonic() + 60
    while len(lines) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=30)
    assert len(lines) >= 2
    docs = [json.loads(line) for line in lines]
    assert all(d["status"] == "not_installed" and d["accelerators"][0]["model"] == "NVIDIA H200" for d in docs)
    assert docs[0]["checked_at"] <= docs[1]["checked_at"]
    assert rc == 2  # the last report's exit code
