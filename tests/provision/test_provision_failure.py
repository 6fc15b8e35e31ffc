"""A failing task: one clear block (host, task, message), non-zero exit, artifacts kept; then fixed.

The node is the real H200 snapshot with its driver made too old (470) for the catalog's
matrix, and the offline package directory is empty: the driver must be installed and there
is nothing to install. After the packages are put in place, the same run completes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from provsupport import copy_snapshot_root, data_dir_env, run_cli, write

pytestmark = [pytest.mark.ansible, pytest.mark.slow]

OLD_DRIVER = "470.57.02"
NEW_DRIVER = "580.95.05"
TOOLKIT = "1.17.8"


@pytest.fixture(scope="module")
def failed_then_fixed(tmp_path_factory):
    from appliance.inventory.detect import detect
    from appliance.inventory.hostview import LiveHost
    from appliance.provision.site import provision

    base = tmp_path_factory.mktemp("prov-fail")
    root = copy_snapshot_root("h200-1gpu", base / "root")
    write(root, "/sys/module/nvidia/version", OLD_DRIVER + "\n")
    proc = root / "proc/driver/nvidia/version"
    proc.write_text(proc.read_text().replace("580.159.04", OLD_DRIVER))
    packages = base / "packages"
    packages.mkdir()
    with data_dir_env(base / "data"):
        failed = run_cli("provision", "--root", str(root), "--packages", str(packages))
        # the fix: the driver and toolkit the matrix wants, in the documented layout
        write(packages, f"nvidia/driver/{NEW_DRIVER}/NVIDIA-Linux-x86_64-{NEW_DRIVER}.run", "#!/bin/sh\nexit 0\n")
        write(packages, f"nvidia/container-toolkit/{TOOLKIT}/nvidia-container-toolkit_{TOOLKIT}-1_amd64.deb", "deb")
        write(packages, f"nvidia/container-toolkit/{TOOLKIT}/nvidia-container-toolkit-base_{TOOLKIT}-1_amd64.deb",
              "deb")
        fixed = provision(inventory=detect(LiveHost(root), usage=False), root=root, packages_dir=packages)
    return {"root": root, "failed": failed, "fixed": fixed, "data": base / "data"}


def test_the_fixture_really_needs_a_new_driver():
    from appliance.provision.compat import requirements

    driver = requirements("nvidia")["driver"]
    assert not driver.admits(OLD_DRIVER) and driver.admits(NEW_DRIVER)


def test_failure_is_one_clear_block_and_nonzero_exit(failed_then_fixed):
    res = failed_then_fixed["failed"]
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: provision: host localhost: task 'Packages | A matching package is in "
                          "the package directory | nvidia driver' failed: nvidia driver is at 470.57.02")
    assert "Traceback" not in res.stderr
    block = res.stdout
    assert "provisioning failed" in block
    assert re.search(r"host:\s+localhost", block)
    assert re.search(r"task:\s+Packages \| A matching package is in the package directory \| nvidia driver",
                     block)
    assert "message: nvidia driver is at 470.57.02" in " ".join(block.split())
    assert "nvidia/driver" in block                      # says where the package must go


def test_failed_run_keeps_its_artifacts(failed_then_fixed):
    res = failed_then_fixed["failed"]
    m = re.search(r"artifacts: (\S+)", res.stdout)
    assert m, res.stdout
    artifacts = Path(m.group(1))
    assert artifacts.is_dir() and str(artifacts).startswith(str(failed_then_fixed["data"]))
    assert "nvidia driver is at 470.57.02" in (artifacts / "stdout").read_text()
    saved = json.loads((artifacts.parent.parent / "report.json").read_text())
    assert saved["status"] == "failed"
    assert saved["failures"][0]["host"] == "localhost"
    # the run stopped at the failure: later roles never ran for this host
    assert not [t for t in saved["tasks"] if t["role"] in ("docker", "agent")]


def test_rerun_after_fix_completes(failed_then_fixed):
    fixed = failed_then_fixed["fixed"]
    root: Path = failed_then_fixed["root"]
    assert fixed.status == "successful", fixed.failure_block()
    by_task = {t.task: t.status for t in fixed.tasks}
    assert by_task["Packages | Copy the packages to the host | nvidia driver"] == "changed"
    assert by_task["Packages | Run the .run installers | nvidia driver"] == "skipped"  # manage_system: false
    marker = json.loads((root / "var/lib/appliance/provision/packages/nvidia-driver.json").read_text())
    assert marker == {"component": "driver", "executed": False, "files": [f"NVIDIA-Linux-x86_64-{NEW_DRIVER}.run"],
                      "vendor": "nvidia", "version": NEW_DRIVER}
    cache = root / f"var/cache/appliance/packages/nvidia/container-toolkit/{TOOLKIT}"
    assert sorted(p.name for p in cache.iterdir()) == [
        f"nvidia-container-toolkit-base_{TOOLKIT}-1_amd64.deb", f"nvidia-container-toolkit_{TOOLKIT}-1_amd64.deb"]
    daemon = json.loads((root / "etc/docker/daemon.json").read_text())
    assert daemon["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "args": []}
    assert (root / "etc/cdi").is_dir()
