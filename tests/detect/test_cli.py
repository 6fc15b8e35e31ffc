"""The detect CLI: JSON fields, the table for people, and a fast start (no heavy imports)."""

from __future__ import annotations

import subprocess
import sys

from detect_support import H200, REPO, detect_json, run_cli

NODE_FIELDS = {"hostname", "os", "kernel", "cpu_model", "cpu_count", "memory_mib", "disks", "container_engine"}
ACC_FIELDS = {"vendor", "model", "index", "pci_bdf", "pci_id", "memory_mib", "driver_version", "runtime",
              "compute_capability", "uuid", "numa_node", "health"}


def test_json_has_the_documented_fields():
    inv = detect_json("--snapshot", str(H200))
    assert NODE_FIELDS <= set(inv["node"])
    assert ACC_FIELDS <= set(inv["accelerators"][0])
    assert {"driver", "steps", "result", "error", "seconds"} <= set(inv["probes"][0])
    assert inv["format"] == "appliance-inventory/1"


def test_json_output_is_deterministic_apart_from_timings():
    from detect_support import strip_timings

    assert strip_timings(detect_json("--snapshot", str(H200))) == strip_timings(detect_json("--snapshot", str(H200)))


def test_table_for_people():
    res = run_cli("detect", "--snapshot", str(H200))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for header in ("vendor", "index", "model", "memory", "driver", "runtime", "health", "hints"):
        assert header in out
    for value in ("NVIDIA H200", "580.159.04", "cuda 13.0", "0000:00:06.0", "GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01",
                  "Ubuntu 24.04.3 LTS", "16×"):
        assert value in out
    assert "37°C" in out  # usage shown by default
    assert "37°C" not in run_cli("detect", "--snapshot", str(H200), "--no-usage").stdout


def test_live_detect_on_this_machine():
    inv = detect_json()
    assert inv["source"] == "live"
    assert inv["node"]["cpu_count"] and inv["node"]["memory_mib"]
    assert len(inv["probes"]) == 10


def test_detect_never_imports_docker_ansible_or_pynvml_on_a_node_without_gpus():
    code = ("import sys\nfrom appliance.cli import main\n"
            "try:\n    main(['detect', '--json'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('docker', 'ansible_runner', 'ansible', 'pynvml', 'rich') if m in sys.modules]\n"
            "print('HEAVY', bad, file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert "HEAVY []" in res.stderr, res.stderr


def test_hidden_root_option_is_not_in_help():
    res = run_cli("detect", "--help")
    assert res.returncode == 0 and "--snapshot" in res.stdout and "--root" not in res.stdout
