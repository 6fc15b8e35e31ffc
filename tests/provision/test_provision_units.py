"""Fast checks of the pieces around the playbooks: registry/roles consistency, version order,
package choice, the daemon.json merge, report rendering. No Ansible run here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import yaml
from provsupport import write


def _module(name: str):
    from appliance.paths import playbooks_dir

    spec = importlib.util.spec_from_file_location(name, playbooks_dir() / "library" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_chip_driver_has_a_role_wired_into_site_yml():
    from appliance.paths import playbooks_dir
    from chip_drivers import DRIVERS

    site = yaml.safe_load((playbooks_dir() / "site.yml").read_text())
    entries = {r["role"]: r for r in site[0]["roles"]}
    assert list(entries)[0] == "appliance" and list(entries)[-2:] == ["docker", "agent"]
    for cls in DRIVERS:
        role = cls.provision_role
        assert role, cls.vendor
        assert (playbooks_dir() / "roles" / role / "tasks" / "main.yml").is_file(), role
        assert entries[role]["when"] == f"'{role}' in appliance_chips_effective"
        assert role in entries[role]["tags"] and "chips" in entries[role]["tags"]
    for role in entries:
        assert (playbooks_dir() / "roles" / role / "tasks" / "main.yml").is_file(), role


def test_required_components_declared_for_every_chip_role():
    from appliance.paths import playbooks_dir
    from chip_drivers import DRIVERS

    for cls in DRIVERS:
        defaults = yaml.safe_load((playbooks_dir() / "roles" / cls.provision_role / "defaults/main.yml").read_text())
        comps = defaults[f"{cls.provision_role}_components"]
        names = [c["name"] for c in comps]
        assert "driver" in names and all(isinstance(c["required"], bool) for c in comps), cls.vendor
        driver = next(c for c in comps if c["name"] == "driver")
        # the driver's loaded version is read where the chip driver's kernel modules expose it
        paths = {s.get("path") for s in driver["sources"]}
        assert paths & ({f"/sys/module/{m}/version" for m in cls.kernel_modules} |
                        {"/usr/local/Ascend/driver/version.info"}), cls.vendor


@pytest.mark.parametrize("a,b", [
    ("24.1.rc3", "24.1.0"), ("8.0.RC3", "8.0.0"), ("8.0.0", "8.1.RC1"), ("550.54.14", "580.95.05"),
    ("12.8", "12.10"), ("1.15.1-62f612b", "1.21.0"), ("5.0.21.21", "5.0.21.26"), ("7.0.0", "7.0.0.1"),
])
def test_module_version_order_matches_the_catalog(a, b):
    from appliance.catalog.versions import compare

    mod = _module("appliance_component_version")
    assert compare(a, b) == mod.compare(a, b) == -1
    assert mod.compare(b, a) == 1 and mod.compare(a, a) == 0
    assert mod.in_range(b, a, None) and not mod.in_range(a, b, None) and mod.in_range(a, None, b)


def test_package_choice_newest_admitted_version(tmp_path):
    from appliance.provision.compat import Requirement, choose_package, components_extravars

    write(tmp_path, "nvidia/driver/470.57.02/NVIDIA-Linux-x86_64-470.57.02.run", "x")
    write(tmp_path, "nvidia/driver/580.95.05/NVIDIA-Linux-x86_64-580.95.05.run", "x")
    write(tmp_path, "nvidia/driver/575.57.08/NVIDIA-Linux-x86_64-575.57.08.run", "x")
    write(tmp_path, "nvidia/driver/600.1/README.txt", "not a package")
    req = Requirement("driver", min_version="550")
    pick = choose_package(tmp_path, "nvidia", "driver", req)
    assert pick.version == "580.95.05" and [p.name for p in pick.files] == ["NVIDIA-Linux-x86_64-580.95.05.run"]
    capped = choose_package(tmp_path, "nvidia", "driver", Requirement("driver", "550", "579"))
    assert capped.version == "575.57.08"
    none = choose_package(tmp_path, "nvidia", "driver", Requirement("driver", min_version="900"))
    assert none.version is None and "470.57.02" in none.problem and ">= 900" in none.problem
    missing = choose_package(tmp_path, "ascend", "driver", None)
    assert missing.problem.endswith("ascend/driver does not exist")
    assert "--packages" in choose_package(None, "nvidia", "driver", req).problem

    extra = components_extravars(tmp_path, ["nvidia", "ascend"])
    drv = extra["nvidia"]["driver"]
    assert drv["package_version"] == "580.95.05" and drv["min_version"] and drv["source"].startswith("catalog")
    assert extra["nvidia"]["container-toolkit"]["min_version"] == "1.14.0"
    assert extra["nvidia"]["container-toolkit"]["package_files"] == []
    assert extra["ascend"]["driver"]["range"].startswith(">= ")


def test_json_merge_keeps_foreign_keys_recursively():
    mod = _module("appliance_json_merge")
    admin = {"runtimes": {"custom": {"path": "x"}}, "log-opts": {"compress": "true", "max-size": "1g"}, "debug": True}
    ours = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}, "log-opts": {"max-size": "100m"}}
    merged = mod.merge(admin, ours)
    assert merged == {"runtimes": {"custom": {"path": "x"}, "nvidia": {"path": "nvidia-container-runtime"}},
                      "log-opts": {"compress": "true", "max-size": "100m"}, "debug": True}
    assert admin["log-opts"]["max-size"] == "1g"      # input untouched
    assert mod.merge(merged, ours) == merged           # idempotent


def test_failure_report_names_host_task_message_and_artifacts():
    from appliance.errors import ProvisionError
    from appliance.provision.models import ProvisionReport, TaskResult

    fail = TaskResult(host="node-b", task="nvidia | driver: x", status="failed", message="boom")
    report = ProvisionReport(run_id="r1", status="failed", rc=2, inventory="inv",
                             artifacts_dir="/data/ansible/r1/artifacts/run", tasks=[fail], failures=[fail])
    block = report.failure_block()
    assert "host:    node-b" in block and "task:    nvidia | driver: x" in block and "message: boom" in block
    assert "/data/ansible/r1/artifacts/run" in block
    with pytest.raises(ProvisionError) as err:
        report.raise_for_failure()
    assert err.value.exit_code == 1 and err.value.where == "provision: host node-b"
    assert "/data/ansible/r1/artifacts/run" in err.value.fix


def test_event_diffs_and_messages():
    from appliance.provision.runner import _message, _unified

    diff = _unified({"before": "a\n", "after": "b\n", "before_header": "/etc/x", "after_header": "/etc/x"})
    assert "-a" in diff and "+b" in diff and "/etc/x" in diff
    assert _unified({"before": {"state": "absent"}, "after": {"state": "directory"}}).count("state") == 2
    assert _unified({"before": "same", "after": "same"}) is None
    assert _message({"msg": "One or more items failed",
                     "results": [{"failed": False}, {"failed": True, "msg": "item 2"}]}) == "item 2"
    assert _message({"msg": "non-zero return code", "stderr": "dpkg: error"}) == "non-zero return code: dpkg: error"


def test_provision_and_preflight_help_do_not_import_ansible_runner():
    code = ("import sys\nfrom appliance.cli import main\n"
            "for cmd in ('provision', 'preflight'):\n"
            "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
            "print('HEAVY', [m for m in ('ansible_runner', 'ansible') if m in sys.modules])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "--check" in res.stdout and "--images-mib" in res.stdout
    assert "HEAVY []" in res.stdout


def test_every_playbook_file_ships_in_the_wheel():
    """pyproject's data-files globs (not recursive) must cover every file under playbooks/."""
    import glob

    from provsupport import REPO

    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # Python 3.10: no tomllib; pytest depends on tomli there (same API)
        import tomli as tomllib

    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {f for target, patterns in data_files.items() if target.startswith("share/appliance/playbooks")
               for pattern in patterns for f in glob.glob(str(REPO / pattern))}
    files = {str(p) for p in (REPO / "playbooks").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files and files <= shipped, sorted(files - shipped)


def test_an_ansible_runner_failure_is_a_typed_error_naming_the_run(tmp_path, monkeypatch):
    """ansible-runner raising (no ansible-playbook, a broken private data dir) is a ProvisionError
    with the run's artifacts, never a raw exception (before, it escaped untyped)."""
    import ansible_runner
    import ansible_runner.exceptions

    from appliance.errors import ProvisionError
    from appliance.provision.runner import run_playbook

    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))

    def boom(**kw):
        raise ansible_runner.exceptions.AnsibleRunnerException("the command was not found or was not executable")

    monkeypatch.setattr(ansible_runner, "run", boom)
    inv = tmp_path / "inv.yml"
    inv.write_text("all: {hosts: {localhost: {ansible_connection: local}}}\n")
    with pytest.raises(ProvisionError) as err:
        run_playbook(inventory_file=inv, extravars={})
    assert "ansible-runner could not run the playbook" in err.value.one_line()
    assert "artifacts:" in err.value.one_line()
