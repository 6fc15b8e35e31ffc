"""``appliance snapshot``: capture this machine (and a fake NVIDIA root), replay, compare with live."""

from __future__ import annotations

import json

from detect_support import H200, copy_snapshot, detect_json, fake_tool, path_with, run_cli, strip_timings

from appliance.inventory.hostview import SNAPSHOT_FORMAT


def test_round_trip_on_this_machine(tmp_path):
    snap = tmp_path / "snap"
    res = run_cli("snapshot", str(snap))
    assert res.returncode == 0, res.stderr
    assert "snapshot written to" in res.stdout
    index = json.loads((snap / "tool-output/index.json").read_text())
    assert index["format"] == SNAPSHOT_FORMAT
    argvs = [e["argv"] for e in index["commands"]]
    assert ["uname", "-a"] in argvs and ["lscpu"] in argvs
    for entry in index["commands"]:
        assert set(entry) >= {"argv", "file", "exit_code"}
        assert (snap / "tool-output" / entry["file"]).is_file()
    assert (snap / "root/proc/meminfo").is_file() and (snap / "root/etc/os-release").is_file()
    assert (snap / "root/sys/bus/pci/devices").is_dir()

    replay = detect_json("--snapshot", str(snap), "--no-usage")
    live = detect_json("--no-usage")
    assert replay["source"].startswith("snapshot:") and live["source"] == "live"
    assert strip_timings(replay) == strip_timings(live)
    node = live["node"]
    assert node["hostname"] and node["os"] and node["kernel"] and node["cpu_model"]
    assert node["cpu_count"] and node["memory_mib"] and node["disks"]
    assert all(d["free_mib"] is None for d in node["disks"])  # free space is usage


def test_round_trip_of_an_nvidia_root_with_a_fake_nvidia_smi(tmp_path):
    """Capture through the NVIDIA path (files under /proc, nvidia-smi -q -x), replay, compare."""
    root = copy_snapshot(H200, tmp_path / "h200") / "root"
    bin_dir = tmp_path / "bin"
    xml = H200 / "tool-output" / "nvidia-smi-q.xml"
    fake_tool(bin_dir, "nvidia-smi", f'[ "$1 $2" = "-q -x" ] && exec cat "{xml}"; [ "$1" = "-L" ] && '
                                     f'exec cat "{H200}/tool-output/nvidia-smi-L.txt"; exit 3')
    env = {"PATH": path_with(bin_dir), "APPLIANCE_HOST_ROOT": str(root)}
    snap = tmp_path / "snap"
    res = run_cli("snapshot", str(snap), "--json", env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["accelerators"] == 1 and summary["format"] == SNAPSHOT_FORMAT
    index = json.loads((snap / "tool-output/index.json").read_text())
    assert ["nvidia-smi", "-q", "-x"] in [e["argv"] for e in index["commands"]]
    assert ["nvidia-smi", "-L"] in [e["argv"] for e in index["commands"]]  # the driver's snapshot_commands
    assert (snap / "root/proc/driver/nvidia/gpus/0000:00:06.0/information").is_file()
    assert (snap / "root/sys/bus/pci/devices/0000:00:06.0/driver").read_text().endswith("drivers/nvidia")
    assert (snap / "root/dev/nvidia0").is_file()  # device nodes become empty files

    live = detect_json("--no-usage", env=env)
    replay = detect_json("--snapshot", str(snap), "--no-usage")
    assert strip_timings(replay) == strip_timings(live)
    gpu = replay["accelerators"][0]
    assert gpu["model"] == "NVIDIA H200" and gpu["runtime"]["version"] == "13.0"
    # with usage, the replay shows what the capture saw
    assert detect_json("--snapshot", str(snap))["accelerators"][0]["usage"]["temperature_c"] == 37.0


def test_refuses_a_non_empty_directory(tmp_path):
    target = tmp_path / "full"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    res = run_cli("snapshot", str(target))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "not empty" in res.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]  # nothing written


def test_writes_into_an_empty_directory_and_leaves_no_partial(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    res = run_cli("snapshot", str(target))
    assert res.returncode == 0, res.stderr
    assert (target / "tool-output/index.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_missing_parent_is_exit_2(tmp_path):
    res = run_cli("snapshot", str(tmp_path / "no" / "such" / "dir"))
    assert res.returncode == 2 and "parent directory does not exist" in res.stderr
